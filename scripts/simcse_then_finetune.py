"""Unsupervised SimCSE on one-sentence-per-line text, then the three-task fine-tune, against the fine-tune alone at
the same CPU budget.

    run A: SimCSE for --simcse-minutes, then the three-task fine-tune for --finetune-minutes
    run B: the three-task fine-tune for --simcse-minutes + --finetune-minutes

Both fine-tunes use the settings of scripts/compare_techniques.py (concurrent sampling, B per task, frozen word
embeddings, length bucketing, linear decay) and get their steps from one calibration of seconds per step, so each
schedule ends on time. The SimCSE stage follows the paper's unsupervised recipe (two dropout views, in-batch
negatives, τ = 0.05, MLP projection while training, 32 tokens, B = 64) with mean pooling, which is how MiniLM was
trained. Alignment, uniformity and the cosine STS Spearman (hf_mtbert.embeddings, on the CS224N STS dev set) are
measured before SimCSE, after it, and after each fine-tune. Writes results/simcse_then_finetune.{json,md}.

    HF_MTBERT_DATA_DIR=../shared/data/cs224n python scripts/simcse_then_finetune.py \\
        --text ../shared/data/simcse/wiki1m_for_simcse-head11914.txt
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer
from transformers.utils import logging

sys.path.insert(0, str(Path(__file__).parent))
from compare_techniques import TrainingClock, calibrate, make_trainer  # noqa: E402

from hf_mtbert import MultiTaskBertConfig, MultiTaskBertModel  # noqa: E402
from hf_mtbert.checkpoint import resolve_model_path  # noqa: E402
from hf_mtbert.data import load_cs224n, load_task_data, tokenize_dataset  # noqa: E402
from hf_mtbert.embeddings import embedding_quality  # noqa: E402
from hf_mtbert.hardware import cpu_info  # noqa: E402
from hf_mtbert.training import MultiTaskTrainer, MultiTaskTrainingArguments  # noqa: E402
from hf_mtbert.training.run import ModelDataArguments, load_split  # noqa: E402

logging.set_verbosity_error()

SIMCSE_TASK = {"name": "simcse", "kind": "contrastive", "objective": "unsupervised", "pooling": "mean",
               "temperature": 0.05, "projection": "mlp"}
STAGE_FILE = "simcse_stage.json"  # what the SimCSE stage did, kept with its checkpoint for --reuse-simcse
DEV_KEYS = ("eval_sst_accuracy", "eval_quora_accuracy", "eval_sts_pearson", "eval_overall")


def quality(path: str, data_dir: str | None) -> dict:
    config = MultiTaskBertConfig.from_pretrained(path)
    model = MultiTaskBertModel.from_pretrained(path, config=config)
    tokenizer = AutoTokenizer.from_pretrained(path)
    dev = load_cs224n("sts", "dev", data_dir)
    return embedding_quality(model, tokenizer, dev["sentence1"], dev["sentence2"], dev["label"], pooling="mean")


def simcse_stage(args, out: Path) -> dict:
    base = resolve_model_path(args.model)
    config = MultiTaskBertConfig.from_pretrained(base, tasks=[SIMCSE_TASK])
    tokenizer = AutoTokenizer.from_pretrained(base)
    spec = config.get_task("simcse")
    data = {"simcse": tokenize_dataset(load_task_data(args.text, spec), tokenizer, spec, max_length=32)}

    def trainer(steps: int, folder: str) -> MultiTaskTrainer:
        torch.manual_seed(args.seed)
        model = MultiTaskBertModel.from_pretrained(base, config=config)
        train_args = MultiTaskTrainingArguments(
            output_dir=folder, max_steps=steps, per_device_train_batch_size=args.simcse_batch,
            learning_rate=args.simcse_learning_rate, lr_scheduler_type="linear", warmup_steps=0.0,
            sampling_strategy="round_robin", bf16=args.bf16, save_strategy="no", logging_steps=max(1, steps // 10),
            report_to=[], use_cpu=True, seed=args.seed, disable_tqdm=not sys.stderr.isatty())
        return MultiTaskTrainer(model=model, args=train_args, train_dataset=data, processing_class=tokenizer)

    with tempfile.TemporaryDirectory() as tmp:
        probe = trainer(args.calibration_steps + 2, tmp)
        clock = TrainingClock(warmup_steps=2)
        probe.add_callback(clock)
        probe.train()
    seconds_per_step = (clock.training_seconds() - clock.warm_start) / args.calibration_steps
    steps = max(1, int(args.simcse_minutes * 60 / seconds_per_step))
    run = trainer(steps, str(out))
    clock = TrainingClock(limit_seconds=args.simcse_minutes * 60 * 1.15)
    run.add_callback(clock)
    run.train()
    run.save_model(str(out))
    losses = [log["loss_simcse"] for log in run.state.log_history if "loss_simcse" in log]
    stats = {"steps": run.state.global_step, "planned_steps": steps, "seconds_per_step": seconds_per_step,
             "train_minutes": clock.training_seconds() / 60, "rows": len(data["simcse"]),
             "loss_first_log": losses[0] if losses else None, "loss_last_log": losses[-1] if losses else None}
    (out / STAGE_FILE).write_text(json.dumps(stats, indent=2))
    return stats


def finetune(args, start: str, minutes: float, seconds_per_step: float, out: str) -> dict:
    data_args = ModelDataArguments(model_name_or_path=start, tasks="sst,quora,sts", data_dir=args.data_dir,
                                   max_train_samples=args.max_train_samples, max_eval_samples=args.max_eval_samples)
    from hf_mtbert.training.run import load_model

    model, tokenizer = load_model(data_args)
    train_data = load_split(data_args, model.config, tokenizer, "train")
    dev_data = load_split(data_args, model.config, tokenizer, "dev")
    steps = max(1, int(minutes * 60 / seconds_per_step))
    trainer = make_trainer(data_args, train_data, None, {}, steps, args, out)
    clock = TrainingClock(limit_seconds=minutes * 60 * 1.15)
    trainer.add_callback(clock)
    trainer.train()
    train_minutes = clock.training_seconds() / 60
    dev = trainer.evaluate(dev_data)
    trainer.save_model(out)
    return {"start": start, "steps": trainer.state.global_step, "planned_steps": steps,
            "train_minutes": train_minutes, "dev": {k: dev[k] for k in DEV_KEYS if k in dev},
            "embeddings": quality(out, args.data_dir)}


def markdown(results: dict) -> str:
    lines = [f"Measured on {results['machine']}, torch {results['torch']}; {results['model']}.", "",
             "| run | SimCSE min (steps) | fine-tune min (steps) | SST acc | Quora acc | STS Pearson | overall |",
             "|---|---|---|---|---|---|---|"]
    for name, run in results["runs"].items():
        simcse = results["simcse"] if name.startswith("SimCSE") else None
        pre = f"{simcse['train_minutes']:.1f} ({simcse['steps']})" if simcse else "0"
        dev = run["dev"]
        lines.append(f"| {name} | {pre} | {run['train_minutes']:.1f} ({run['steps']}) | "
                     f"{dev['eval_sst_accuracy']:.3f} | {dev['eval_quora_accuracy']:.3f} | "
                     f"{dev['eval_sts_pearson']:.3f} | {dev.get('eval_overall', float('nan')):.3f} |")
    lines += ["", "| embeddings of | alignment ↓ | uniformity ↓ | cosine STS Spearman |", "|---|---|---|---|"]
    rows = [("the starting checkpoint", results["embeddings_before"]),
            ("after SimCSE", results["embeddings_after_simcse"])]
    rows += [(f"after the fine-tune ({name})", run["embeddings"]) for name, run in results["runs"].items()]
    for label, q in rows:
        lines.append(f"| {label} | {q['alignment']:.3f} | {q['uniformity']:.3f} | {q['sts_spearman_cosine']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--text", required=True, help="one sentence per line (SimCSE's Wikipedia sample)")
    parser.add_argument("--data-dir", default=None, help="CS224N data folder (default: $HF_MTBERT_DATA_DIR)")
    parser.add_argument("--simcse-minutes", type=float, default=3.0)
    parser.add_argument("--finetune-minutes", type=float, default=9.0)
    parser.add_argument("--simcse-batch", type=int, default=64)
    parser.add_argument("--simcse-learning-rate", type=float, default=3e-5)
    parser.add_argument("--batch", type=int, default=32, help="rows per task batch in the fine-tune")
    parser.add_argument("--learning-rate", type=float, default=1e-4, help="fine-tune learning rate")
    parser.add_argument("--calibration-steps", type=int, default=8)
    parser.add_argument("--bf16", default="false", choices=["false", "true", "auto"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-train-samples", type=int, default=None,
                        help="fine-tune rows per task (default: all; for a quick smoke run)")
    parser.add_argument("--max-eval-samples", type=int, default=None, help="dev rows per task (default: all)")
    parser.add_argument("--reuse-simcse", action="store_true",
                        help="keep a finished SimCSE stage in --output and run only the fine-tunes (for reruns)")
    parser.add_argument("--output", default="checkpoints/simcse-compare", help="where the checkpoints go")
    parser.add_argument("--results", default="results")
    args = parser.parse_args()
    args.curve_points, args.smart_weights = 1, None  # what make_trainer reads besides the above

    out = Path(args.output)
    started = time.time()
    results = {"machine": cpu_info().describe(), "torch": torch.__version__, "model": args.model,
               "settings": {k: v for k, v in vars(args).items() if k not in ("curve_points", "smart_weights")},
               "simcse_task": SIMCSE_TASK}
    results["embeddings_before"] = quality(resolve_model_path(args.model), args.data_dir)
    print("before:", results["embeddings_before"], flush=True)
    if args.reuse_simcse and (out / "simcse" / STAGE_FILE).is_file():
        results["simcse"] = json.loads((out / "simcse" / STAGE_FILE).read_text())
        print(f"reusing the SimCSE stage in {out / 'simcse'}", flush=True)
    else:
        results["simcse"] = simcse_stage(args, out / "simcse")
    results["embeddings_after_simcse"] = quality(str(out / "simcse"), args.data_dir)
    print("SimCSE:", results["simcse"], results["embeddings_after_simcse"], flush=True)

    data_args = ModelDataArguments(model_name_or_path=args.model, tasks="sst,quora,sts", data_dir=args.data_dir,
                                   max_train_samples=args.max_train_samples)
    from hf_mtbert.training.run import load_model

    model, tokenizer = load_model(data_args)
    seconds_per_step = calibrate(data_args, load_split(data_args, model.config, tokenizer, "train"), {}, args)
    results["finetune_seconds_per_step"] = seconds_per_step
    total = args.simcse_minutes + args.finetune_minutes
    results["runs"] = {
        "SimCSE, then fine-tune": finetune(args, str(out / "simcse"), args.finetune_minutes, seconds_per_step,
                                           str(out / "simcse-finetune")),
        "fine-tune alone": finetune(args, args.model, total, seconds_per_step, str(out / "finetune")),
    }
    results["wall_minutes"] = (time.time() - started) / 60
    folder = Path(args.results)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "simcse_then_finetune.json").write_text(json.dumps(results, indent=2))
    (folder / "simcse_then_finetune.md").write_text(markdown(results) + "\n")
    print(markdown(results))


if __name__ == "__main__":
    main()
