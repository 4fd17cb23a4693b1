"""Train the three-task model with none / SMART / PCGrad / SMART + PCGrad at the same CPU budget and compare.

Every run starts from the same weights (MiniLM by default), samples the tasks concurrently (one batch of each task
per step, the batches identical across runs: the sampler is seeded) and uses the same optimizer settings. Only the
technique differs. "Same budget" means the same training time: a short calibration measures each technique's
seconds per step on this machine, and each run gets `budget / seconds_per_step` steps (so its learning-rate schedule
ends on time). A technique that costs more per step therefore takes fewer steps.

During training each run is evaluated on the first `--curve-rows` dev rows of every task a few times (the curves);
at the end on the full dev sets (the table). Writes, under --results:

    compare_techniques.json   every number, the per-run log history and the machine
    compare_techniques.md     the results table
    compare_techniques.png    dev SST accuracy, Quora accuracy and STS Pearson against training minutes

    HF_MTBERT_DATA_DIR=../shared/data/cs224n python scripts/compare_techniques.py --budget-minutes 9
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import TrainerCallback
from transformers.utils import logging

from hf_mtbert.configuration_mtbert import default_tasks
from hf_mtbert.hardware import cpu_info
from hf_mtbert.lora import add_lora
from hf_mtbert.training import MultiTaskTrainer, MultiTaskTrainingArguments
from hf_mtbert.training.run import ModelDataArguments, load_model, load_split

sys.path.insert(0, str(Path(__file__).parent))
from render_results import METRICS, write_group  # noqa: E402

logging.set_verbosity_error()

# Each technique is a set of training-argument overrides, plus two data keys: `train_tasks` (train on these tasks
# only; evaluate them only) and `task_specs` (replace CS224N tasks' heads, e.g. a bi-encoder for Quora).
TECHNIQUES = {
    "none": {},  # concurrent sampling (one batch of every task per step), equal weights, cross-encoded Quora
    "smart": {"smart": True},
    "pcgrad": {"grad_surgery": "pcgrad"},
    "cagrad": {"grad_surgery": "cagrad"},
    "gradvac": {"grad_surgery": "gradvac"},
    "smart+pcgrad": {"smart": True, "grad_surgery": "pcgrad"},
    # LoRA r=8 on query/value with the heads trained in full, at the learning rate LoRA usually needs
    "lora": {"lora": True, "learning_rate": 5e-4},
    # Task sampling regimes: one task's batch per optimizer step, chosen by the strategy ("none" is concurrent)
    "round_robin": {"sampling_strategy": "round_robin"},
    "proportional": {"sampling_strategy": "proportional"},
    "sqrt": {"sampling_strategy": "sqrt"},
    "annealed": {"sampling_strategy": "annealed"},
    "sequential": {"sampling_strategy": "sequential"},
    # Single-task baselines: the same budget spent on one task
    "sst_only": {"train_tasks": ["sst"]},
    "quora_only": {"train_tasks": ["quora"]},
    "sts_only": {"train_tasks": ["sts"]},
    # SST's head on the mean of the token states instead of BERT's pooler ([CLS]); MiniLM was trained mean-pooled
    "sst_only_mean": {"train_tasks": ["sst"], "task_specs": [{**default_tasks()[0], "pooling": "mean"}]},
    # Task loss weighting (concurrent sampling)
    "loss_magnitude": {"task_weighting": "loss_magnitude"},
    "uncertainty": {"task_weighting": "uncertainty"},
    # Pair encodings: the defaults are a cross-encoder for Quora and a cosine bi-encoder for STS; swap each
    "quora_bi": {"task_specs": [{"name": "quora", "kind": "classification", "input": "pair", "pair_encoding": "bi",
                                 "combine": "concat", "pooling": "mean",
                                 "id2label": {0: "not_duplicate", 1: "duplicate"}}]},
    "sts_cross": {"task_specs": [{"name": "sts", "kind": "regression", "input": "pair", "pair_encoding": "cross",
                                  "pooling": "cls", "label_range": [0.0, 5.0]}]},
}
DATA_KEYS = ("train_tasks", "task_specs")


def write_run(out_dir: Path, name: str, results: dict) -> None:
    """results/<folder>/<name>.json: one run with the settings of its comparison."""
    settings = {k: v for k, v in results.items() if k != "runs"}
    (out_dir / f"{name}.json").write_text(json.dumps({"name": name, **settings, **results["runs"][name]}, indent=1))


class TrainingClock(TrainerCallback):
    """Training seconds (evaluation time excluded) at each evaluation and per step; stops a run that overruns."""

    def __init__(self, limit_seconds: float | None = None, warmup_steps: int = 0):
        self.limit, self.warmup = limit_seconds, warmup_steps
        self.start = self.warm_start = None
        self.eval_seconds = 0.0
        self.points: list[dict] = []
        self.overran = False

    def training_seconds(self) -> float:
        return time.perf_counter() - self.start - self.eval_seconds

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.warmup:
            self.warm_start = self.training_seconds()
        if self.limit is not None and self.training_seconds() > self.limit:
            self.overran = control.should_training_stop = True

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        self.eval_seconds += metrics.get("eval_runtime", 0.0)
        self.points.append({"step": state.global_step, "minutes": self.training_seconds() / 60,
                            **{k: metrics[k] for k in METRICS.values() if k in metrics}})


def technique_data(args, options: dict, cache: dict) -> tuple:
    """(data_args, train, dev, curve) for a technique: its own heads (`task_specs`) and tasks (`train_tasks`)."""
    specs = options.get("task_specs")
    key = json.dumps(specs, sort_keys=True)
    if key not in cache:
        data_args = ModelDataArguments(model_name_or_path=args.model, data_dir=args.data_dir, tasks="sst,quora,sts",
                                       task_specs=json.dumps(specs) if specs else None,
                                       max_train_samples=args.max_train_samples,
                                       max_eval_samples=args.max_eval_samples)
        model, tokenizer = load_model(data_args)
        train = load_split(data_args, model.config, tokenizer, "train")
        dev = load_split(data_args, model.config, tokenizer, "dev")
        cache[key] = data_args, train, dev
    data_args, train, dev = cache[key]
    tasks = options.get("train_tasks") or list(train)
    train, dev = {t: train[t] for t in tasks}, {t: dev[t] for t in tasks}
    curve = {t: d.select(range(min(args.curve_rows, len(d)))) for t, d in dev.items()}
    return data_args, train, dev, curve


def make_trainer(data_args, train_data, eval_data, options, steps, args, out) -> MultiTaskTrainer:
    torch.manual_seed(args.seed)
    model, tokenizer = load_model(data_args)
    options = {k: v for k, v in options.items() if k not in DATA_KEYS}
    if options.pop("lora", False):
        model = add_lora(model)
    eval_steps = max(1, steps // args.curve_points)
    settings = dict(
        output_dir=out, max_steps=steps, per_device_train_batch_size=args.batch, per_device_eval_batch_size=128,
        learning_rate=args.learning_rate, warmup_steps=0.1, weight_decay=0.01, lr_scheduler_type="linear",
        sampling_strategy="concurrent", length_bucketing=True, word_embeddings="freeze", bf16=args.bf16,
        eval_strategy="steps" if eval_data is not None else "no", eval_steps=eval_steps, save_strategy="no",
        logging_steps=max(1, eval_steps // 2), report_to=[], use_cpu=True, seed=args.seed,
        disable_tqdm=not sys.stderr.isatty(), smart_weights=args.smart_weights)
    train_args = MultiTaskTrainingArguments(**{**settings, **options})
    return MultiTaskTrainer(model=model, args=train_args, train_dataset=train_data, eval_dataset=eval_data,
                            processing_class=tokenizer)


def calibrate(data_args, train_data, options, args) -> float:
    """Seconds per optimizer step of one technique, from a short run (the first steps not counted)."""
    with tempfile.TemporaryDirectory() as out:
        trainer = make_trainer(data_args, train_data, None, options, args.calibration_steps + 2, args, out)
        clock = TrainingClock(warmup_steps=2)
        trainer.add_callback(clock)
        trainer.train()
    return (clock.training_seconds() - clock.warm_start) / args.calibration_steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--data-dir", default=None, help="CS224N data folder (default: $HF_MTBERT_DATA_DIR)")
    parser.add_argument("--techniques", default=",".join(TECHNIQUES), help=f"from {list(TECHNIQUES)}")
    parser.add_argument("--budget-minutes", type=float, default=9.0, help="training time per technique")
    parser.add_argument("--batch", type=int, default=32, help="rows per task batch")
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--smart-weights", default="sst=5,quora=3,sts=3", help="SMART's λ per task")
    parser.add_argument("--bf16", default="false", choices=["false", "true", "auto"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--calibration-steps", type=int, default=12,
                        help="timed steps (after 2 warm-up steps) that set each technique's seconds per step")
    parser.add_argument("--curve-points", type=int, default=6, help="evaluations on the dev subsets per run")
    parser.add_argument("--curve-rows", type=int, default=400, help="dev rows per task for the curves")
    parser.add_argument("--max-train-samples", type=int, default=None, help="for a quick smoke run")
    parser.add_argument("--max-eval-samples", type=int, default=None, help="for a quick smoke run")
    parser.add_argument("--results", default="results", help="folder for the table, JSON and PNG")
    parser.add_argument("--resume", action="store_true",
                        help="keep the runs already in <results>/compare_techniques.json (same settings) and run "
                             "only the missing techniques")
    args = parser.parse_args()
    names = [t.strip() for t in args.techniques.split(",")]
    unknown = [t for t in names if t not in TECHNIQUES]
    if unknown:
        parser.error(f"unknown techniques {unknown}; choose from {list(TECHNIQUES)}")

    machine = cpu_info().describe()
    print(f"CPU: {machine}; torch {torch.__version__}; {args.budget_minutes:g} training minutes per technique")
    budget = args.budget_minutes * 60
    results = {"machine": machine, "torch": torch.__version__, "model": args.model, "budget_minutes":
               args.budget_minutes, "batch_per_task": args.batch, "learning_rate": args.learning_rate,
               "smart_weights": args.smart_weights, "bf16": args.bf16, "curve_rows": args.curve_rows,
               "calibration_steps": args.calibration_steps, "runs": {}}
    out_dir = Path(args.results)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = out_dir / "compare_techniques.json"
    if args.resume and summary.exists():
        previous = json.loads(summary.read_text())
        differ = {k: (previous.get(k), v) for k, v in results.items() if k not in ("runs", "machine", "torch")
                  and k in previous and previous[k] != v}  # a key older files lack is not compared
        if differ:
            parser.error(f"--resume: {summary} was made with other settings {differ} (old, new); use another "
                         "--results folder")
        if previous["machine"] != machine:
            print(f"note: the earlier runs ran on {previous['machine']}; each run records its own machine")
        results["runs"], results["machine"] = previous["runs"], previous["machine"]  # new runs record their own
        for run in results["runs"].values():
            run.setdefault("machine", previous["machine"])
        for name in results["runs"]:  # comparisons made before per-run files existed
            if not (out_dir / f"{name}.json").exists():
                write_run(out_dir, name, results)
        print(f"--resume: keeping {list(results['runs'])}")
    cache: dict = {}
    for name in names:
        if name in results["runs"]:
            continue
        options = TECHNIQUES[name]
        data_args, train_data, dev_data, curve_data = technique_data(args, options, cache)
        per_step = calibrate(data_args, train_data, options, args)
        steps = max(1, math.floor(budget / per_step))
        print(f"\n== {name}: {per_step:.2f} s/step -> {steps} steps", flush=True)
        with tempfile.TemporaryDirectory() as out:
            trainer = make_trainer(data_args, train_data, curve_data, options, steps, args, out)
            clock = TrainingClock(limit_seconds=1.15 * budget)
            trainer.add_callback(clock)
            trainer.train()
            train_minutes = clock.training_seconds() / 60
            dev = trainer.evaluate(eval_dataset=dev_data)
        run = {
            "options": options, "machine": machine, "seconds_per_step": per_step, "steps": trainer.state.global_step,
            "planned_steps": steps, "stopped_at_time_limit": clock.overran, "train_minutes": train_minutes,
            "dev": {k: v for k, v in dev.items() if k.startswith("eval_") and "runtime" not in k
                    and "per_second" not in k},
            "curve": clock.points[:-1],  # the last point is the full-dev evaluation
            "log_history": trainer.state.log_history,
        }
        results["runs"][name] = run
        print(json.dumps({k: round(v, 4) for k, v in run["dev"].items()}), flush=True)
        write_run(out_dir, name, results)  # one file per run, and the whole comparison so far
        summary.write_text(json.dumps(results, indent=1))

    print("\n" + write_group(results, out_dir))


if __name__ == "__main__":
    main()
