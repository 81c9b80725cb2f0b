"""Sharded models (FSDP2 ``fully_shard`` and FSDP1, 2 CPU processes over gloo): every rank joins the side pass."""

import os
import signal
import subprocess
import sys

import lightning.pytorch as pl
import pytest
import torch
from lightning_helpers import make_module_class, read_events

from lightning_rollout import explain
from lightning_rollout.core.distributed import is_sharded

METHODS = ["rollout", "grad_rollout", "chefer", "gradcam"]
VIT_OPTIONS = dict(drop_rate=0.3, attn_drop_rate=0.3)  # as in sharded_run.py
Module = make_module_class(pl.LightningModule)


def _run_script(out_dir, timeout=240):
    """Runs tests/sharded_run.py in its own process group, killed as a whole on timeout (no hang)."""
    script = os.path.join(os.path.dirname(__file__), "sharded_run.py")
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    process = subprocess.Popen(
        [sys.executable, script, str(out_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"the sharded run hung for {timeout} s:\n{output[-3000:]}")
    assert process.returncode == 0, output[-3000:]


@pytest.fixture(scope="module")
def sharded_results(tmp_path_factory):
    """One 2-process run of tests/sharded_run.py for both shardings (a launch costs seconds)."""
    out_dir = tmp_path_factory.mktemp("sharded")
    _run_script(out_dir)
    return out_dir


@pytest.mark.parametrize("sharding", ["fully_shard", "fsdp1"])
def test_sharded_run_maps_equal_unsharded_model_and_weights_unchanged(sharded_results, sharding):
    result = torch.load(sharded_results / f"{sharding}.pt", weights_only=False)
    for key, value in result["without"].items():
        assert torch.equal(value, result["observed"][key]), f"the callback changed {key}"

    images, labels = result["batch"]["images"], result["batch"]["labels"]
    assert images.shape[0] == 4
    pl.seed_everything(7)
    initial = Module(**VIT_OPTIONS)
    trained = Module(**VIT_OPTIONS)
    trained.load_state_dict(result["observed"])
    assert not is_sharded(trained)
    for method in METHODS:
        history = result["history"][method]
        # 32 training samples over 2 ranks, batch 8: 2 steps per epoch
        assert [label for label, *_ in history] == ["init", "e0 s2", "e1 s4"]
        for (_, maps, _), model in ((history[0], initial), (history[-1], trained)):
            expected = explain(model, images, method, target=labels)
            torch.testing.assert_close(maps, expected, rtol=1e-5, atol=1e-5)

    events = read_events(str(sharded_results / sharding / "version_1"))
    assert [e.step for e in events.Images("attention/chefer/samples")] == [0, 2, 4]
    files = [f for f in os.listdir(sharded_results / sharding / "version_1") if f.startswith("events.out")]
    assert len(files) == 1, "only rank 0 writes"


def test_is_sharded_on_plain_and_ddp_style_models(vit):
    assert not is_sharded(vit)
    vit.patch_embed.proj.weight.ds_id = 0  # how DeepSpeed ZeRO-3 marks its partitioned parameters
    assert is_sharded(vit)


def test_sharded_side_pass_without_a_process_group_raises_instead_of_hanging():
    from lightning_rollout.core.distributed import broadcast_from_rank_zero

    assert not torch.distributed.is_initialized()
    with pytest.raises(RuntimeError, match="no torch.distributed process group is initialised"):
        broadcast_from_rank_zero("batch")
