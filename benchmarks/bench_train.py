"""Training throughput: MultiTaskTrainer on one task against transformers.Trainer + BertForSequenceClassification.

Same MiniLM weights, same SST training rows, same batch size, same optimizer (AdamW, fused where torch has it),
same process. Rows:
  - transformers: `Trainer` fine-tuning `BertForSequenceClassification` (sdpa), dynamic padding;
  - ours, identical settings: `MultiTaskTrainer` with only the SST task, every setting as above;
  - ours, recommended: word embeddings frozen, length bucketing (and bf16 only where the CPU has it natively);
  - transformers with the same two tricks (group_by_length, frozen embeddings), to show what is ours and what is
    the tricks.
Throughput is examples/s over the steps after `--warmup` steps; the runs alternate and the best of `--rounds`
counts (noise on a shared machine only ever adds time).

    HF_MTBERT_DATA_DIR=../shared/data/cs224n python benchmarks/bench_train.py [--steps 55 --rounds 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from transformers import (
    AutoTokenizer,
    BertForSequenceClassification,
    DataCollatorWithPadding,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from transformers.utils import logging

from hf_mtbert import MultiTaskBertConfig, MultiTaskBertModel
from hf_mtbert.checkpoint import resolve_model_path
from hf_mtbert.data import load_cs224n, tokenize_dataset
from hf_mtbert.hardware import cpu_info
from hf_mtbert.training import MultiTaskTrainer, MultiTaskTrainingArguments

logging.set_verbosity_error()


class StepClock(TrainerCallback):
    """Times the optimizer steps after the first `warmup` ones."""

    def __init__(self, warmup: int):
        self.warmup, self.start, self.end = warmup, None, None

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.warmup:
            self.start = time.perf_counter()
        self.end = time.perf_counter()


def common_args(out: str, steps: int, batch: int, **extra) -> dict:
    return dict(output_dir=out, max_steps=steps, per_device_train_batch_size=batch, learning_rate=5e-5,
                report_to=[], save_strategy="no", logging_strategy="no", use_cpu=True, seed=0, disable_tqdm=True,
                dataloader_num_workers=0, **extra)


def run_transformers(path, tokenizer, data, steps, batch, warmup, tricks: bool) -> float:
    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(path, num_labels=5, attn_implementation="sdpa")
    extra = {}
    if tricks:
        model.get_input_embeddings().weight.requires_grad_(False)
        extra["train_sampling_strategy"] = "group_by_length"
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(**common_args(out, steps, batch, **extra), bf16=cpu_info().native_bf16 and tricks)
        trainer = Trainer(model=model, args=args, train_dataset=data.remove_columns(["length"]),
                          data_collator=DataCollatorWithPadding(tokenizer))
        clock = StepClock(warmup)
        trainer.add_callback(clock)
        trainer.train()
    return (steps - warmup) * batch / (clock.end - clock.start)


def run_ours(path, tokenizer, data, steps, batch, warmup, recommended: bool) -> float:
    torch.manual_seed(0)
    config = MultiTaskBertConfig.from_pretrained(path, tasks=[{"name": "sst", "num_labels": 5}])
    model = MultiTaskBertModel.from_pretrained(path, config=config)
    extra = dict(sampling_strategy="sequential", bf16="auto" if recommended else "false")
    if recommended:
        extra.update(word_embeddings="freeze", length_bucketing=True)
    with tempfile.TemporaryDirectory() as out:
        args = MultiTaskTrainingArguments(**common_args(out, steps, batch, **extra))
        trainer = MultiTaskTrainer(model=model, args=args, train_dataset={"sst": data}, processing_class=tokenizer)
        clock = StepClock(warmup)
        trainer.add_callback(clock)
        trainer.train()
    return (steps - warmup) * batch / (clock.end - clock.start)


def optimizer_step_seconds(path, freeze_embeddings: bool, repeats: int = 10) -> float:
    """Best time of one AdamW step over MiniLM's trainable parameters (gradients filled with noise)."""
    model = MultiTaskBertModel.from_pretrained(path)
    if freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p)
    optimizer = torch.optim.AdamW(params, lr=1e-5, fused=True)
    optimizer.step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--data-dir", default=None, help="CS224N data folder (default: $HF_MTBERT_DATA_DIR)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=55,
                        help="optimizer steps per run, warm-up included. The default times 50: one mega-batch of "
                             "both samplers' length bucketing, so transformers' longest-first order and our "
                             "shuffled one average over the same spread of lengths")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    path = resolve_model_path(args.model)
    info = cpu_info()
    print(f"CPU: {info.describe()}")
    print(f"torch {torch.__version__}, model {path}, task SST-5, B={args.batch}, {args.steps} steps "
          f"({args.warmup} warm-up), best of {args.rounds}")
    if not info.native_bf16:
        print("bf16: off in every row (this CPU would emulate it); the recommended rows use fp32 here")
    tokenizer = AutoTokenizer.from_pretrained(path)
    spec = MultiTaskBertConfig(tasks=[{"name": "sst", "num_labels": 5}]).get_task("sst")
    data = tokenize_dataset(load_cs224n("sst", "train", args.data_dir), tokenizer, spec)

    runs = {
        "transformers Trainer + BertForSequenceClassification": lambda: run_transformers(
            path, tokenizer, data, args.steps, args.batch, args.warmup, tricks=False),
        "ours, identical settings": lambda: run_ours(
            path, tokenizer, data, args.steps, args.batch, args.warmup, recommended=False),
        "ours, recommended settings": lambda: run_ours(
            path, tokenizer, data, args.steps, args.batch, args.warmup, recommended=True),
        "transformers + the same tricks (group_by_length, frozen embeddings)": lambda: run_transformers(
            path, tokenizer, data, args.steps, args.batch, args.warmup, tricks=True),
    }
    best = dict.fromkeys(runs, 0.0)
    for r in range(args.rounds):
        for name, fn in runs.items():
            best[name] = max(best[name], fn())
            print(f"  round {r + 1}: {name}: {best[name]:.1f} ex/s", flush=True)
    full, frozen = optimizer_step_seconds(path, False), optimizer_step_seconds(path, True)
    step = args.batch / best["ours, identical settings"]
    print(f"\nAdamW (fused) step over all parameters: {full * 1e3:.0f} ms ({full / step:.0%} of our identical-"
          f"settings training step); with the word embeddings frozen: {frozen * 1e3:.0f} ms")
    base = best["transformers Trainer + BertForSequenceClassification"]
    print()
    print("| run | examples/s | vs transformers Trainer |")
    print("|---|---|---|")
    for name, value in best.items():
        print(f"| {name} | {value:.1f} | {value / base:.2f}x |")


if __name__ == "__main__":
    main()
