"""Every benchmark's ``--quick`` mode runs end to end, so a renamed function breaks the tests, not a user.

A quick run takes the same code path as the full benchmark on tiny models and inputs: it must exit 0 and
print its report (whose numbers mean nothing, so no number and no time is asserted here). Each script runs
as its own process, as a user runs it, from an empty working directory that must stay empty but for the
files asked for with ``--out`` and the like: a benchmark writes nothing where it is started.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
QUICK_NOTE = "its numbers mean nothing"

# script: (extra arguments, {name: path} of what they write, a line the report must print). The extra
# arguments switch on what a default full run leaves off but a user can ask for.
CASES = {
    "bench_baseline.py": ([], {}, "### baseline 'mean'"),
    "bench_callback.py": ([], {}, "| epoch time with callback (AUCs off) − without, / without (medians) |"),
    "bench_cli.py": ([], {}, "| `lightning-rollout explain --help` |"),
    "bench_compile.py": ([], {}, "**step time with / without the callback:"),
    "bench_engine.py": (["--diagnose"], {}, "| `rollout` (discard_ratio=0) time / fused forward |"),
    "bench_explain_many.py": ([], {}, "| explain_many, 4 methods / grad_rollout alone |"),
    "bench_families.py": ([], {}, "| torchvision `VisionTransformer` (`vit_b_16` shape) |"),
    "bench_legrad.py": ([], {}, "| `legrad (default: mean token, last two layers)` |"),
    "bench_saco.py": ([], {}, "| whole hook, defaults (AUCs + SaCo K=10) / SaCo off (AUCs on) |"),
    "bench_soak.py": (["--control", "--csv", "{csv}"], {"csv": "soak.csv"}, "Without the callback (control run)"),
    "demo_seeds.py": (["--ckpt-dir", "{ckpt}"], {"ckpt": "checkpoints"}, "| 0 |"),
    "bench_trainer_callback.py": ([], {}, "| without the callback |"),
    "bench_video.py": ([], {}, "# bench_video (quick)"),
    "video_demo.py": ([], {}, "| rollout |"),
}


def test_every_benchmark_has_a_quick_run():
    scripts = {path.name for path in BENCHMARKS.glob("*.py") if not path.name.startswith("_")}
    assert scripts == set(CASES), "add the new benchmark (or remove the old one) in CASES"


@pytest.mark.parametrize("script", sorted(CASES))
def test_quick_run(script, tmp_path):
    extra, outputs, expected = CASES[script]
    work = tmp_path / "cwd"
    work.mkdir()
    paths = {name: str(tmp_path / path) for name, path in outputs.items()}
    report = tmp_path / "report.md"
    command = [
        sys.executable,
        str(BENCHMARKS / script),
        "--quick",
        "--out",
        str(report),
        *(argument.format(**paths) for argument in extra),
    ]
    # This checkout's package first, whatever the environment has installed.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    try:
        result = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=280)
    except subprocess.TimeoutExpired as error:  # a hang guard (pytest's own timeout is 300 s), not a timing
        pytest.fail(f"{script} --quick did not finish:\n{(error.stderr or b'')[-4000:]!r}")
    assert result.returncode == 0, f"{script} --quick exited {result.returncode}:\n{result.stderr[-6000:]}"
    assert expected in result.stdout, result.stdout[-4000:]
    assert QUICK_NOTE in result.stdout
    assert report.read_text(encoding="utf-8").strip() in result.stdout
    assert list(work.iterdir()) == [], f"{script} wrote into its working directory"
    for path in paths.values():
        assert os.path.exists(path), f"{script} did not write {path}"
