"""Evaluation time of the Hugging Face `Trainer` demo with and without `AttentionRolloutTrainerCallback`.

The example's model, validation scenes and evaluation settings (``configs/hf_trainer_demo.yaml``, run by
``examples/hf_trainer_demo.py``) are evaluated by three `Trainer`s that share the model: without the
callback, with it (every method of the config, reporting to TensorBoard as the example does, deletion and
insertion AUCs on) and with the AUCs off (``faithfulness_steps=0``). Each round advances every Trainer's
``state.global_step`` (a logged evaluation per step, as in training) and times one ``trainer.evaluate()``
of each, the order reversed every other round; the ratio is the median over rounds of the per-round ratio
``time with / time without``. The first evaluation of each arm (the callback chooses its samples there) is
a warm-up, timed apart.

    python benchmarks/bench_trainer_callback.py            # 256 validation scenes, 5 rounds
    python benchmarks/bench_trainer_callback.py --quick    # 16 scenes, 1 round, < 1 min
"""

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from typing import Dict, List, Optional

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP waits make a shared machine unusable

import torch
from _report import emit
from transformers import Trainer, TrainingArguments

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "examples")]  # this checkout's package and the example
from hf_trainer_demo import DEFAULT_CONFIG, SceneDicts, build_model, load_config, scenes

from lightning_rollout import AttentionRolloutTrainerCallback

ARMS = ("without", "with", "with_no_auc")


def trainers(config: Dict, folder: str, num_val: int) -> Dict[str, Trainer]:
    """The three arms' Trainers over one model and the example's first `num_val` validation scenes."""
    model = build_model(config)
    config["data"]["num_val"] = num_val
    val = SceneDicts(scenes(config, "val"))
    training = dict(config["training"], report_to="tensorboard", disable_tqdm=True)
    made = {}
    for arm in ARMS:
        callbacks = []
        if arm != "without":
            auc = {} if arm == "with" else {"faithfulness_steps": 0}
            callbacks = [AttentionRolloutTrainerCallback(**config["callback"], **auc)]
        args = TrainingArguments(**dict(training, output_dir=os.path.join(folder, arm)))
        made[arm] = Trainer(model=model, args=args, eval_dataset=val, callbacks=callbacks)
    return made


def evaluate(trainer: Trainer, step: int) -> float:
    trainer.state.global_step = step
    start = time.perf_counter()
    trainer.evaluate()
    return time.perf_counter() - start


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--num-val", type=int, default=256, help="validation scenes per evaluation")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="16 scenes, 1 round")
    parser.add_argument("--out", help="also write the Markdown report here")
    options = parser.parse_args(argv)
    if options.quick:
        options.num_val, options.rounds = 16, 1
    config = load_config(options.config, [])
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as folder:
        os.environ["TENSORBOARD_LOGGING_DIR"] = os.path.join(folder, "runs")  # evaluate() alone: not ./runs
        arms = trainers(config, folder, options.num_val)
        first = {arm: evaluate(trainer, 1) for arm, trainer in arms.items()}
        times: Dict[str, List[float]] = {arm: [] for arm in ARMS}
        for round_ in range(options.rounds):
            order = ARMS if round_ % 2 == 0 else ARMS[::-1]
            for arm in order:
                times[arm].append(evaluate(arms[arm], 2 + round_))
            print(f"round {round_ + 1}: " + ", ".join(f"{a} {times[a][-1]:.2f} s" for a in ARMS), file=sys.stderr)
    ratios = {arm: statistics.median(w / wo for w, wo in zip(times[arm], times["without"])) for arm in ARMS[1:]}
    methods = ", ".join(config["callback"]["methods"])
    lines = [
        f"# `AttentionRolloutTrainerCallback` overhead on `trainer.evaluate()` ({options.num_val} validation scenes)",
        "",
        *(
            ["**`--quick`: a smoke run of the code path on tiny inputs; its numbers mean nothing.**", ""]
            if options.quick
            else []
        ),
        f"Model and data: `{os.path.relpath(options.config, ROOT)}` (random init); methods {methods}, "
        f"{config['callback']['num_samples']} samples; TensorBoard; {options.rounds} rounds, median of per-round "
        "ratios.",
        "",
        "| arm | median evaluation (s) | ratio to without |",
        "|---|---|---|",
        f"| without the callback | {statistics.median(times['without']):.2f} | 1.00× |",
        f"| with (AUCs on) | {statistics.median(times['with']):.2f} | {ratios['with']:.2f}× |",
        f"| with (`faithfulness_steps=0`) | {statistics.median(times['with_no_auc']):.2f} | "
        f"{ratios['with_no_auc']:.2f}× |",
        "",
        "First evaluation (warm-up; the callback chooses its samples and tries one): "
        + ", ".join(f"{arm} {seconds:.2f} s" for arm, seconds in first.items())
        + ".",
        "",
        f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads.",
    ]
    emit(lines, options.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
