"""Cost of gradient surgery and SMART per training step, against the plain concurrent step, in one process.

Every row trains the three CS224N tasks from the MiniLM weights with `concurrent` sampling (one batch of B rows per
task per optimizer step, the same batches in every row: the sampler is seeded), AdamW, fp32 unless --bf16, and the
same trainer. Rows:
  - plain: the summed loss of the three task batches, one backward;
  - pcgrad / cagrad / gradvac: a backward per task into per-task buffers, the surgery, the combined update;
  - smart: SMART with K=1 ascent step on every task (λ=1), plain combination.
Time per optimizer step is measured over the steps after `--warmup`; runs alternate and the best of `--rounds`
counts. It also prints the surgery's share of the step (the Gram matrix, the weights and the combination, timed
alone on MiniLM-sized buffers) and the per-task buffer memory for MiniLM and bert-base.

    HF_MTBERT_DATA_DIR=../shared/data/cs224n python benchmarks/bench_mtl.py [--steps 12 --rounds 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers.utils import logging

sys.path.insert(0, str(Path(__file__).parent))
from bench_train import StepClock  # noqa: E402

from hf_mtbert import MultiTaskBertConfig, MultiTaskBertModel  # noqa: E402
from hf_mtbert.hardware import cpu_info  # noqa: E402
from hf_mtbert.training import MultiTaskTrainer, MultiTaskTrainingArguments  # noqa: E402
from hf_mtbert.training.run import ModelDataArguments, load_model, load_split  # noqa: E402
from hf_mtbert.training.surgery import GradientSurgery  # noqa: E402

logging.set_verbosity_error()

ROWS = {
    "plain (summed loss)": {},
    "pcgrad": {"grad_surgery": "pcgrad"},
    "cagrad": {"grad_surgery": "cagrad"},
    "gradvac": {"grad_surgery": "gradvac"},
    "smart K=1": {"smart": True},
}


def seconds_per_step(data_args, data, options, steps, warmup, batch, bf16, recommended) -> float:
    torch.manual_seed(0)
    model, tokenizer = load_model(data_args)
    with tempfile.TemporaryDirectory() as out:
        args = MultiTaskTrainingArguments(
            output_dir=out, max_steps=steps, per_device_train_batch_size=batch, learning_rate=2e-5,
            report_to=[], save_strategy="no", logging_strategy="no", use_cpu=True, seed=0, disable_tqdm=True,
            sampling_strategy="concurrent", bf16=bf16, **options,
            **({"word_embeddings": "freeze", "length_bucketing": True} if recommended else {}))
        trainer = MultiTaskTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer)
        clock = StepClock(warmup)
        trainer.add_callback(clock)
        trainer.train()
    return (clock.end - clock.start) / (steps - warmup)


def shared_parameters(config: MultiTaskBertConfig, freeze_word_embeddings: bool) -> int:
    with torch.device("meta"):
        model = MultiTaskBertModel(config)
    return sum(p.numel() for n, p in model.named_parameters()
               if not n.startswith("heads.") and not (freeze_word_embeddings and "word_embeddings" in n))


def surgery_seconds(model: MultiTaskBertModel, tasks: list[str], method: str, repeats: int = 5) -> float:
    """Best time of GradientSurgery.apply on filled buffers (the part of a step that plain training does not do)."""
    surgery = GradientSurgery(method, model, tasks, seed=0)
    times = []
    for step in range(repeats + 1):
        for task in tasks:
            surgery.select(task)
            for p in surgery.shared:
                p.grad.normal_()
                surgery._used.add(id(p))
        start = time.perf_counter()
        surgery.apply(step)
        if step:
            times.append(time.perf_counter() - start)
    surgery.remove_hooks()
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--data-dir", default=None, help="CS224N data folder (default: $HF_MTBERT_DATA_DIR)")
    parser.add_argument("--batch", type=int, default=32, help="rows per task batch")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--bf16", default="false", choices=["false", "true", "auto"])
    parser.add_argument("--recommended", action="store_true",
                        help="every row with frozen word embeddings and length bucketing (the training defaults of "
                             "scripts/compare_techniques.py)")
    args = parser.parse_args()

    data_args = ModelDataArguments(model_name_or_path=args.model, data_dir=args.data_dir, tasks="sst,quora,sts",
                                   max_train_samples=args.batch * args.steps * 2)
    model, tokenizer = load_model(data_args)
    data = load_split(data_args, model.config, tokenizer, "train")
    print(f"CPU: {cpu_info().describe()}")
    print(f"torch {torch.__version__}, {args.model}, tasks sst+quora+sts concurrent, B={args.batch} per task, "
          f"{args.steps} steps ({args.warmup} warm-up), best of {args.rounds}, bf16={args.bf16}"
          f"{', word embeddings frozen + length bucketing' if args.recommended else ''}")

    best = dict.fromkeys(ROWS, float("inf"))
    for r in range(args.rounds):
        for name, options in ROWS.items():
            value = seconds_per_step(data_args, data, options, args.steps, args.warmup, args.batch, args.bf16,
                                     args.recommended)
            best[name] = min(best[name], value)
            print(f"  round {r + 1}: {name}: {value * 1e3:.0f} ms/step", flush=True)

    base = best["plain (summed loss)"]
    print("\n| step | ms / optimizer step | vs plain | target |")
    print("|---|---|---|---|")
    targets = {"pcgrad": "≤ 1.10x", "smart K=1": "≤ 1.8x"}
    for name, value in best.items():
        print(f"| {name} | {value * 1e3:.0f} | {value / base:.2f}x | {targets.get(name, '')} |")

    tasks = model.config.task_names
    print("\nsurgery alone (GradientSurgery.apply: Gram matrix, weights, combination) on MiniLM's shared parameters:")
    for method in ("pcgrad", "cagrad", "gradvac"):
        t = surgery_seconds(model, tasks, method)
        print(f"  {method}: {t * 1e3:.1f} ms ({t / base:.1%} of the plain step)")

    print("\nper-task gradient buffers, fp32, (tasks + 1) x shared parameters, 3 tasks:")
    for label, config in (("MiniLM-L6", model.config), ("bert-base", MultiTaskBertConfig())):
        for frozen in (False, True):
            n = shared_parameters(config, frozen)
            print(f"  {label}{' (word embeddings frozen)' if frozen else ''}: {n / 1e6:.1f}M shared parameters, "
                  f"{(len(tasks) + 1) * n * 4 / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
