"""Tokenize inputs the way a task expects them and turn model outputs into readable predictions."""

from __future__ import annotations

from typing import Any

import torch

from .configuration_mtbert import TaskSpec


def tokenize_for_task(
    tokenizer, spec: TaskSpec, texts: list[str], texts_b: list[str] | None = None, max_length: int = 128
) -> dict[str, torch.Tensor]:
    """Model inputs for one task: one sequence, a `[CLS] a [SEP] b [SEP]` pair, or two sequences (`*_b`)."""
    kwargs = dict(padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    if spec.input == "single":
        if texts_b is not None:
            raise ValueError(f"task {spec.name!r} takes single sentences; got a second list of texts")
        return dict(tokenizer(texts, **kwargs))
    if texts_b is None or len(texts_b) != len(texts):
        raise ValueError(
            f"task {spec.name!r} takes sentence pairs; give texts_b with one entry per text "
            f"(got {len(texts)} texts and {None if texts_b is None else len(texts_b)} texts_b)"
        )
    if spec.pair_encoding == "cross":
        return dict(tokenizer(texts, texts_b, **kwargs))
    a, b = tokenizer(texts, **kwargs), tokenizer(texts_b, **kwargs)
    return {**a, **{f"{k}_b": v for k, v in b.items()}}


@torch.inference_mode()
def predict(
    model, tokenizer, task: str, texts: list[str], texts_b: list[str] | None = None, batch_size: int = 32
) -> list[dict[str, Any]]:
    """Predictions for `task`: `{"label", "score"}` (class probability) or `{"score"}` (regression)."""
    spec = model.config.get_task(task)
    model.eval()
    results: list[dict[str, Any]] = []
    for start in range(0, len(texts), batch_size):
        chunk_b = None if texts_b is None else texts_b[start : start + batch_size]
        inputs = tokenize_for_task(tokenizer, spec, texts[start : start + batch_size], chunk_b)
        logits = model(task=task, **{k: v.to(model.device) for k, v in inputs.items()}).logits
        if spec.kind == "classification":
            probs = logits.float().softmax(dim=-1)
            best = probs.argmax(dim=-1)
            results += [
                {"label": spec.id2label[int(i)], "score": float(p[i])} for i, p in zip(best, probs, strict=True)
            ]
        else:
            results += [{"score": float(s)} for s in logits.float().reshape(-1)]
    return results
