"""The Hugging Face `Trainer` callback: real `Trainer` runs of a tiny random-init `ViTForImageClassification`
(SDPA attention) and of a timm ViT wrapped for `Trainer`; TensorBoard, W&B (offline) and MLflow (SQLite)
read back with their own readers; 2 CPU processes under `torchrun` for data parallel and sharded models."""

import ast
import gc
import glob
import json
import os
import pathlib
import signal
import subprocess
import sys

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("accelerate", reason="transformers.Trainer needs accelerate (the test extras install it)")

from lightning_helpers import finished_wandb_records, read_events
from memory_watch import OutputWatch, live_tensor_bytes, tensors_in
from trainer_helpers import DictScenes, TimmForTrainer, make_trainer, png_steps, tiny_hf_vit
from transformers import TrainerCallback

from lightning_rollout import (
    AttentionRolloutTrainerCallback,
    callbacks,
    explain,
)
from lightning_rollout.callbacks import trainer as trainer_module

METHODS = ["rollout", "grad_rollout", "chefer", "gradcam"]
TESTS = pathlib.Path(__file__).parent


def _weights(model):
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def test_logs_pngs_and_scalars_with_report_to_none_and_says_where(tmp_path):
    callback = AttentionRolloutTrainerCallback(methods=METHODS, num_samples=4)
    trainer = make_trainer(tmp_path, [callback], eval_on_start=True)
    with pytest.warns(UserWarning, match=f"PNG files under {tmp_path}/attention/<method>/"):
        trainer.train()
    for method in METHODS:
        for picture in ("samples", "filmstrip"):
            assert png_steps(tmp_path / "attention" / method / picture) == [0, 2, 4]
    lines = [json.loads(line) for line in (tmp_path / "attention" / "scalars.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [0, 2, 4]
    for name in ("entropy", "energy", "pointing_game", "deletion_auc", "insertion_auc"):
        assert all(f"attention/chefer/{name}" in line for line in lines), name
    # the pass switched the SDPA model to eager attention and back; the last column is the trained model's maps
    model = trainer.model
    assert model.config._attn_implementation == "sdpa"
    batch = callback.fixed_batch
    assert len(batch) == 4 and sorted(set(batch.labels.tolist())) == [0, 1, 2]  # spread over the classes
    for method in METHODS:
        columns = callback.history.columns(method)
        assert [column.label for column in columns] == ["init", "e0.5 s2", "e1 s4"]
        expected = explain(model, batch.images, method, target=batch.labels)
        torch.testing.assert_close(columns[-1].maps, expected, rtol=1e-5, atol=1e-5)


def test_tensorboard_images_in_the_runs_own_folder_beside_its_scalars(tmp_path):
    callback = AttentionRolloutTrainerCallback(methods=["rollout", "gradcam"], num_samples=3)
    make_trainer(tmp_path, [callback], report_to="tensorboard", eval_on_start=True).train()
    (run_dir,) = glob.glob(str(tmp_path / "runs" / "*"))
    events = read_events(run_dir)
    tags = events.Tags()
    assert {"attention/rollout/samples", "attention/gradcam/filmstrip"} <= set(tags["images"])
    assert {"eval/loss", "attention/rollout/entropy", "attention/gradcam/energy"} <= set(tags["scalars"])
    assert [event.step for event in events.Images("attention/gradcam/samples")] == [0, 2, 4]
    assert [event.step for event in events.Scalars("attention/rollout/pointing_game")] == [0, 2, 4]


def test_wandb_offline_pictures_and_scalars_at_train_global_step(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    for name, value in dict(
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        WANDB_DIR=str(tmp_path),
        WANDB_CONFIG_DIR=str(tmp_path / "config"),
        WANDB_CACHE_DIR=str(tmp_path / "cache"),
    ).items():
        monkeypatch.setenv(name, value)
    wandb.teardown()  # a run of an earlier test leaves wandb's process-wide settings (its directory) behind

    callback = AttentionRolloutTrainerCallback(methods=["rollout"], num_samples=3)
    try:
        make_trainer(tmp_path, [callback], report_to="wandb", eval_on_start=True).train()
    finally:
        wandb.finish()
    (log,) = glob.glob(str(tmp_path / "wandb" / "offline-run-*" / "run-*.wandb"))
    rows = []
    for record in finished_wandb_records(log):
        if record.WhichOneof("record_type") == "history":
            row = {}
            for item in record.history.item:  # a picture comes as its fields under (key, field)
                key, *field = [item.key] if item.key else list(item.nested_key)
                value = json.loads(item.value_json)
                if field:
                    row.setdefault(key, {})[field[0]] = value
                else:
                    row[key] = value
            rows.append(row)
    steps = {
        key: [row["train/global_step"] for row in rows if key in row]
        for key in ("attention/rollout/samples", "attention/rollout/filmstrip", "attention/rollout/energy")
    }
    assert steps == {key: [0, 2, 4] for key in steps}
    picture = next(row["attention/rollout/samples"] for row in rows if "attention/rollout/samples" in row)
    assert picture["_type"] == "images/separated" and picture["format"] == "jpg" and picture["captions"]


def test_mlflow_pictures_and_metrics_in_the_active_run(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    client.create_experiment("hf", artifact_location=str(tmp_path / "artifacts"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "hf")
    # An earlier test's MLFlowLogger leaves its tracking URI set process-wide; the environment's must win.
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    callback = AttentionRolloutTrainerCallback(methods=["rollout"], num_samples=3, image_format="png")
    try:
        make_trainer(tmp_path, [callback], report_to="mlflow", eval_on_start=True).train()
    finally:
        mlflow.end_run()
        mlflow.set_tracking_uri(previous)
    (run,) = client.search_runs([client.get_experiment_by_name("hf").experiment_id])
    history = client.get_metric_history(run.info.run_id, "attention/rollout/energy")
    assert sorted(metric.step for metric in history) == [0, 2, 4]
    assert "eval_loss" in run.data.metrics  # the Trainer's own numbers, in the same run
    names = [artifact.path for artifact in client.list_artifacts(run.info.run_id, "images")]
    for step in (0, 2, 4):
        assert any(f"attention~rollout~filmstrip+step+{step}+" in name for name in names), (step, names)


def test_bit_identical_weights_with_and_without_the_callback(tmp_path):
    without = make_trainer(tmp_path / "without", [], eval_on_start=True)
    without.train()
    callback = AttentionRolloutTrainerCallback(methods=METHODS, num_samples=4, attention_heads=False)
    observed = make_trainer(tmp_path / "with", [callback], eval_on_start=True)
    observed.train()
    assert callback.history.columns("chefer")  # it did log
    expected = _weights(without.model)
    for key, value in _weights(observed.model).items():
        assert torch.equal(value, expected[key]), f"the callback changed {key}"


class _Probe(TrainerCallback):
    """Before the rollout callback: arms a watch on the model's outputs; after it: reads what outlived the pass."""

    def __init__(self, rollout):
        self.rollout, self.watch, self.alive, self.bytes = rollout, None, [], []

    def arm(self, model):
        self.watch = OutputWatch(model)

    def read(self):
        self.watch.stop()
        self.alive.append(self.watch.alive())
        kept = {tensor.untyped_storage().data_ptr() for tensor in tensors_in(self.rollout.maps.state_dict())}
        self.bytes.append(live_tensor_bytes(exclude=kept))


def test_many_evaluations_memory_flat_logs_and_state_bounded(tmp_path):
    rollout = AttentionRolloutTrainerCallback(methods=METHODS, num_samples=4, filmstrip_columns=3, faithfulness_steps=2)
    probe = _Probe(rollout)
    before = type("Before", (TrainerCallback,), {"on_evaluate": lambda s, *a, model, **k: probe.arm(model)})()
    after = type("After", (TrainerCallback,), {"on_evaluate": lambda s, *a, **k: probe.read()})()
    gc.collect()
    gc.freeze()
    try:
        trainer = make_trainer(
            tmp_path,
            [before, rollout, after],
            max_steps=12,
            eval_steps=1,
            save_strategy="steps",
            save_steps=4,
            logging_steps=4,
        )
        trainer.train()
    finally:
        gc.unfreeze()
    assert probe.alive == [0] * 12, f"module outputs of the pass alive after each evaluation: {probe.alive}"
    # (the Trainer's own tensors dip at its logging steps, every 4th; what the callback keeps is excluded)
    assert max(probe.bytes[6:]) <= max(probe.bytes[2:6]), f"live tensors grew over 12 evaluations: {probe.bytes}"
    labels = [c.label for c in rollout.history.columns("rollout")]
    assert len(labels) == 3 and labels[0] == "e0.25 s1" and labels[-1] == "e3 s12"  # thinned, first and last kept
    sizes = [os.path.getsize(tmp_path / f"checkpoint-{step}" / rollout.state_file) for step in (4, 8, 12)]
    assert sizes[1] == sizes[2], f"the saved state grows: {sizes}"
    for picture in ("samples", "filmstrip"):  # one picture per method and evaluation
        assert png_steps(tmp_path / "attention" / "grad_rollout" / picture) == list(range(1, 13))


def test_resume_from_checkpoint_restores_samples_and_filmstrip(tmp_path):
    options = dict(max_steps=6, save_strategy="steps", save_steps=2, eval_on_start=True)
    full = AttentionRolloutTrainerCallback(methods=["rollout", "chefer"], num_samples=4)
    make_trainer(tmp_path, [full], **options).train()

    resumed = AttentionRolloutTrainerCallback(methods=["rollout", "chefer"], num_samples=4)
    trainer = make_trainer(tmp_path, [resumed], **options)
    trainer.train(resume_from_checkpoint=str(tmp_path / "checkpoint-4"))
    assert torch.equal(resumed.fixed_batch.images, full.fixed_batch.images)
    assert torch.equal(resumed.fixed_batch.labels, full.fixed_batch.labels)
    batch = resumed.fixed_batch
    for method in ("rollout", "chefer"):
        ours, theirs = resumed.history.columns(method), full.history.columns(method)
        assert [c.label for c in ours] == [c.label for c in theirs] == ["init", "e0.5 s2", "e1 s4", "e1.5 s6"]
        for mine, expected in zip(ours[:3], theirs[:3]):  # the columns saved in checkpoint-4, as they were
            assert torch.equal(mine.maps, expected.maps)
        # (the Trainer's resumed training itself is not bit-identical to the uninterrupted one, callback or not)
        torch.testing.assert_close(ours[3].maps, explain(trainer.model, batch.images, method, target=batch.labels))
    assert resumed.evaluations == full.evaluations == 3

    # a checkpoint without the callback's file: said, and the samples are chosen anew
    os.remove(tmp_path / "checkpoint-4" / resumed.state_file)
    again = AttentionRolloutTrainerCallback(methods=["rollout", "chefer"], num_samples=4)
    with pytest.warns(UserWarning, match="training resumed at step 4 but .* does not exist"):
        make_trainer(tmp_path, [again], **options).train(resume_from_checkpoint=str(tmp_path / "checkpoint-4"))
    assert [c.label for c in again.history.columns("rollout")] == ["e1 s4", "e1.5 s6"]  # s4: eval_on_start


def test_a_failed_pass_mid_run_warns_and_training_goes_on(tmp_path, monkeypatch):
    from lightning_rollout.monitor import step

    calls, original = [], step.explain_samples

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the first logging step (the first call is the first-batch trial)
            raise RuntimeError("device lost")
        return original(*args, **kwargs)

    monkeypatch.setattr(step, "explain_samples", flaky)
    callback = AttentionRolloutTrainerCallback(methods=["grad_rollout"], num_samples=3)
    trainer = make_trainer(tmp_path, [callback])
    with pytest.warns(UserWarning, match="logging the maps at step 2 failed .*RuntimeError: device lost"):
        trainer.train()
    assert trainer.state.global_step == 4
    assert png_steps(tmp_path / "attention" / "grad_rollout" / "samples") == [4]


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(methods=["nope"]), ValueError, "nope"),
        (dict(num_samples=0), ValueError, "`num_samples` must be an int >= 1"),
        (dict(every_n_evaluations=0), ValueError, "`every_n_evaluations` must be an int >= 1"),
        (dict(discard_ratio=1.0), ValueError, "`discard_ratio`"),
        (dict(image_format="gif"), ValueError, "`image_format`"),
        (dict(bogus=1), TypeError, r"unknown argument\(s\) \['bogus'\]"),
        (dict(every_n=2), TypeError, "every_n_evaluations"),
    ],
)
def test_bad_arguments_fail_in_init(kwargs, error, match):
    with pytest.raises(error, match=match):
        AttentionRolloutTrainerCallback(**kwargs)


def test_a_model_that_does_not_fit_fails_before_the_first_step(tmp_path):
    callback = AttentionRolloutTrainerCallback(methods=["gradcam"], gradcam_layer="no_such_layer*")
    trainer = make_trainer(tmp_path, [callback])
    initial = _weights(trainer.model)
    with pytest.raises(ValueError, match="`gradcam_layer`='no_such_layer\\*' matches no module"):
        trainer.train()
    assert trainer.state.global_step == 0
    assert all(torch.equal(value, initial[key]) for key, value in _weights(trainer.model).items())


def test_batches_without_the_image_key_raise_at_step_0_and_warn_later(tmp_path):
    callback = AttentionRolloutTrainerCallback(image_key="images", num_samples=2)
    with pytest.raises(ValueError, match="found no image at `image_key`='images'"):
        make_trainer(tmp_path / "start", [callback], eval_on_start=True).train()
    callback = AttentionRolloutTrainerCallback(image_key="images", num_samples=2)
    trainer = make_trainer(tmp_path / "later", [callback])
    with pytest.warns(UserWarning, match="logs nothing in this run: found no image"):
        trainer.train()
    assert trainer.state.global_step == 4 and callback.fixed_batch is None


def test_keys_the_user_names_and_settings_read_back(tmp_path):
    callback = AttentionRolloutTrainerCallback(
        methods=["rollout"],
        image_key="image",
        label_key="target",
        num_samples=2,
        head_fusion="max",
        every_n_evaluations=2,
        class_names=["a", "b", "c"],
        sample_selection="first",
    )
    assert (callback.num_samples, callback.head_fusion, callback.every_n_evaluations) == (2, "max", 2)
    assert callback.settings.class_names == ("a", "b", "c")
    trainer = make_trainer(tmp_path, [callback], max_steps=8)
    # (the default collator renames a key "label" to "labels"; other names pass as they are)
    trainer.train_dataset = DictScenes(32, seed=1, image_key="image", label_key="target")
    trainer.eval_dataset = DictScenes(12, seed=2, image_key="image", label_key="target")
    trainer.model.forward = _renamed(trainer.model)
    trainer.train()
    assert [c.label for c in callback.history.columns("rollout")] == ["e1 s4", "e2 s8"]  # every 2nd evaluation
    assert torch.equal(callback.fixed_batch.images, DictScenes(12, seed=2).images[:2])


def _renamed(model):
    forward = model.forward

    def renamed(image=None, target=None, **kwargs):
        return forward(pixel_values=image, labels=target)

    return renamed


def test_timm_model_wrapped_for_trainer(tmp_path):
    callback = AttentionRolloutTrainerCallback(methods=METHODS, num_samples=3)
    trainer = make_trainer(tmp_path, [callback], model=TimmForTrainer())
    trainer.train()
    batch = callback.fixed_batch
    for method in METHODS:
        columns = callback.history.columns(method)
        assert [c.label for c in columns] == ["e0.5 s2", "e1 s4"]
        expected = explain(trainer.model.vit, batch.images, method, target=batch.labels)
        torch.testing.assert_close(columns[-1].maps, expected, rtol=1e-5, atol=1e-5)


def test_torch_compile(tmp_path):
    torch._dynamo.reset()
    callback = AttentionRolloutTrainerCallback(methods=["rollout", "grad_rollout"], num_samples=3)
    trainer = make_trainer(tmp_path, [callback], torch_compile=True, torch_compile_backend="eager")
    trainer.train()
    assert isinstance(trainer.model_wrapped, torch._dynamo.eval_frame.OptimizedModule)
    assert [c.label for c in callback.history.columns("grad_rollout")] == ["e0.5 s2", "e1 s4"]
    batch = callback.fixed_batch
    expected = explain(trainer.model, batch.images, "grad_rollout", target=batch.labels)
    torch.testing.assert_close(callback.history.columns("grad_rollout")[-1].maps, expected, rtol=1e-5, atol=1e-5)


def test_bf16_autocast(tmp_path):
    callback = AttentionRolloutTrainerCallback(methods=["rollout", "grad_rollout"], num_samples=3)
    make_trainer(tmp_path, [callback], bf16=True).train()
    maps = callback.history.columns("grad_rollout")[-1].maps
    assert maps.dtype == torch.float32 and torch.isfinite(maps).all() and maps.std() > 0


def test_two_processes_main_logs_alone_and_sharded_models_run_on_every_rank(tmp_path):
    """`torchrun` of tests/trainer_multiprocess_run.py (gloo), in its own process group, killed on a hang."""
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    command = [
        torchrun,
        "--standalone",
        "--nproc_per_node",
        "2",
        str(TESTS / "trainer_multiprocess_run.py"),
        str(tmp_path),
    ]
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
    )
    try:
        output, _ = process.communicate(timeout=280)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"the 2-process run hung:\n{output[-3000:]}")
    assert process.returncode == 0, output[-3000:]
    main, other = (torch.load(tmp_path / f"rank{rank}.pt", weights_only=False) for rank in (0, 1))

    ddp = main["ddp"]
    assert ddp["world_size"] == 2
    for key, value in ddp["without"].items():
        assert torch.equal(value, ddp["observed"][key]), f"the callback changed {key} under DDP"
    assert [label for label, *_ in ddp["history"]["chefer"]] == ["init", "e0.5 s2", "e1 s4"]
    assert other["ddp"]["batch"] is None and other["ddp"]["history"]["chefer"] == []  # rank 1 kept nothing
    (run_dir,) = glob.glob(str(tmp_path / "with" / "runs" / "*"))
    writers = {name.split(".")[-2] for name in os.listdir(run_dir)}  # the pid in each event file's name
    assert len(writers) == 1, "only the main process writes"
    assert [event.step for event in read_events(run_dir).Images("attention/gradcam/samples")] == [0, 2, 4]

    sharded = main["sharded"]
    assert sharded["is_sharded"] and sharded["same_batch"] and other["sharded"]["same_batch"]
    model = tiny_hf_vit()
    model.load_state_dict(sharded["weights"])
    images, labels = sharded["batch"]["images"], sharded["batch"]["labels"]
    for method in METHODS:
        ((label, maps, _),) = sharded["history"][method]
        assert label == "init"
        torch.testing.assert_close(maps, explain(model, images, method, target=labels), rtol=1e-5, atol=1e-5)


def test_only_the_trainer_module_imports_transformers_and_the_name_is_lazy():
    """At module level, only callbacks/trainer.py imports transformers, and no module imports it (the package
    names resolve it on first use)."""
    root = TESTS.parent / "lightning_rollout"
    importers, trainer_importers = [], []
    for path in root.rglob("*.py"):
        for node in ast.parse(path.read_text()).body:  # module level only: imports inside functions are lazy
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if any(name.split(".")[0] == "transformers" for name in names):
                importers.append(path.relative_to(root).as_posix())
            if "lightning_rollout.callbacks.trainer" in names:
                trainer_importers.append(path.relative_to(root).as_posix())
    assert importers == ["callbacks/trainer.py"] and trainer_importers == []
    assert callbacks.AttentionRolloutTrainerCallback is trainer_module.AttentionRolloutTrainerCallback
    assert trainer_module.AttentionRolloutTrainerCallback is AttentionRolloutTrainerCallback
