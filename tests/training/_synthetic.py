"""Small tokenized task datasets for a tiny random config, with labels the model can learn from the tokens."""

from __future__ import annotations

import numpy as np
from datasets import Dataset


def _sequence(rng: np.random.Generator, vocab: int, first: int, max_len: int) -> list[int]:
    length = int(rng.integers(3, max_len))
    return [2, first] + rng.integers(5, vocab, size=length - 3).tolist() + [3]


def task_dataset(spec: dict, rows: int, seed: int, vocab: int = 99, max_len: int = 12) -> Dataset:
    """Rows whose label is decided by the first real token (classification) or its value (regression)."""
    rng = np.random.default_rng(seed)
    kind, pair = spec.get("kind", "classification"), spec.get("input") == "pair"
    bi = pair and spec.get("pair_encoding") == "bi"
    triplet = kind == "contrastive" and pair  # supervised contrastive: (anchor, positive, hard negative)
    labelled = kind in ("classification", "regression") or spec.get("objective") == "label"
    num_labels = spec.get("num_labels") or 3
    columns: dict[str, list] = {k: [] for k in ("input_ids", "attention_mask", "token_type_ids", "length")}
    if labelled:
        columns["labels"] = []
    if bi:
        columns.update({k: [] for k in ("input_ids_b", "attention_mask_b", "token_type_ids_b")})
    if triplet:
        columns.update({k: [] for k in ("input_ids_c", "attention_mask_c", "token_type_ids_c")})
    for _ in range(rows):
        first = int(rng.integers(5, vocab))
        label = round(5.0 * (first - 5) / (vocab - 5), 3) if kind == "regression" else first % num_labels
        a = _sequence(rng, vocab, first, max_len)
        types = [0] * len(a)
        if pair and not bi:
            b = _sequence(rng, vocab, int(rng.integers(5, vocab)), max_len)[1:]
            a, types = a + b, types + [1] * len(b)
        columns["input_ids"].append(a)
        columns["attention_mask"].append([1] * len(a))
        columns["token_type_ids"].append(types)
        if labelled:
            columns["labels"].append(label)
        length = len(a)
        sides = [("_b", first)] if bi else []
        if triplet:
            sides.append(("_c", int(rng.integers(5, vocab))))
        for suffix, side_first in sides:
            b = _sequence(rng, vocab, side_first, max_len)
            columns[f"input_ids{suffix}"].append(b)
            columns[f"attention_mask{suffix}"].append([1] * len(b))
            columns[f"token_type_ids{suffix}"].append([0] * len(b))
            length = max(length, len(b))
        columns["length"].append(length)
    return Dataset.from_dict(columns)


def task_datasets(config, sizes: dict[str, int], seed: int = 0) -> dict[str, Dataset]:
    return {t: task_dataset(config.get_task(t).to_dict(), n, seed + i) for i, (t, n) in enumerate(sizes.items())}
