"""Takes docs/tensorboard.png: a real TensorBoard page on a log directory, rendered by headless Chromium.

    .venv/bin/pip install websocket-client        # only this script needs it
    apt-get install chromium                      # Debian's Chromium
    .venv/bin/python docs/screenshot.py logs/demo docs/tensorboard.png --filter grad_rollout

It starts TensorBoard on loopback, opens its Time Series page in Chromium through the DevTools protocol,
waits for the charts and image cards to load (Chromium's own ``--screenshot`` fires before TensorBoard's
image cards have fetched their pictures) and saves a PNG.
"""

import argparse
import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import websocket

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_json(url: str, seconds: float):
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                return json.load(reply)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def _capture(page_url: str, out: str, width: int, height: int, settle: float) -> None:
    port = _free_port()
    browser = subprocess.Popen(
        [
            "chromium",
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tempfile.mkdtemp()}",
            f"--window-size={width},{height}",
            f"--remote-debugging-port={port}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        targets = _wait_for_json(f"http://127.0.0.1:{port}/json", 30)
        page = next(target for target in targets if target["type"] == "page")
        # No Origin header: current Chromium refuses DevTools connections from an origin it was not told of.
        connection = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=60, suppress_origin=True)
        next_id = iter(range(1, 1_000_000))

        def call(method: str, **params):
            message_id = next(next_id)
            connection.send(json.dumps({"id": message_id, "method": method, "params": params}))
            while True:
                message = json.loads(connection.recv())
                if message.get("id") == message_id:
                    return message.get("result", {})

        call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        call("Page.navigate", url=page_url)
        time.sleep(settle)
        shot = call("Page.captureScreenshot", format="png")
        with open(out, "wb") as handle:
            handle.write(base64.b64decode(shot["data"]))
    finally:
        browser.terminate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log_dir")
    parser.add_argument("out", nargs="?", default=os.path.join("docs", "tensorboard.png"))
    parser.add_argument("--filter", default="grad_rollout", help="TensorBoard tag filter (regex)")
    parser.add_argument("--size", type=int, nargs=2, default=(1600, 1500), metavar=("WIDTH", "HEIGHT"))
    parser.add_argument("--settle", type=float, default=20.0, help="seconds to let the page load")
    args = parser.parse_args()
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tensorboard.main",
            "--logdir",
            args.log_dir,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--samples_per_plugin",
            "images=100",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_json(f"http://127.0.0.1:{port}/data/plugin/images/tags", 60)
        _capture(f"http://127.0.0.1:{port}/?tagFilter={args.filter}#timeseries", args.out, *args.size, args.settle)
    finally:
        server.terminate()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
