"""Batch tokenized rows of one or several tasks, padding each batch (and each side of a pair) to its longest row."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerBase

INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")
INPUT_KEYS_B = tuple(f"{k}_b" for k in INPUT_KEYS)
INPUT_KEYS_C = tuple(f"{k}_c" for k in INPUT_KEYS)
_DROPPED_KEYS = ("task", "length", "id")


@dataclass
class MultiTaskCollator:
    """Collate rows from `tokenize_dataset`, each with a `"task"` key, into model batches.

    One task in the features: `{"task": name, "input_ids": (B, L), "attention_mask", "token_type_ids",
    ["input_ids_b", ... (B, L_b) for bi-encoded pairs], ["labels": (B,)]}`, ready for `model(**batch)`.
    Several tasks: `{"task_batches": {name: <that dict without "task">, ...}}` in order of first appearance,
    for steps that train several tasks at once. Labels are long for class ids and float32 for scores.

    `mlm_probability` names the MLM tasks: their rows are masked BERT's way by `DataCollatorForLanguageModeling`
    (that share of tokens chosen; of those 80% become [MASK], 10% a random token, 10% stay) and get (B, L) labels,
    -100 where nothing was chosen. Masks come from torch's global RNG, which checkpoints save and resume restores.
    """

    tokenizer: PreTrainedTokenizerBase
    pad_to_multiple_of: int | None = None
    mlm_probability: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        if self.mlm_probability and self.tokenizer.mask_token is None:
            raise ValueError(f"MLM tasks {sorted(self.mlm_probability)} need a tokenizer with a mask token")
        self._maskers = {
            task: DataCollatorForLanguageModeling(self.tokenizer, mlm_probability=p,
                                                  pad_to_multiple_of=self.pad_to_multiple_of)
            for task, p in self.mlm_probability.items()
        }

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        if not features:
            raise ValueError("MultiTaskCollator got no features; a batch needs at least one row")
        groups: dict[str, list[dict[str, Any]]] = {}
        for row, feature in enumerate(features):
            task = feature.get("task")
            if not isinstance(task, str):
                raise ValueError(
                    f"feature {row} has task={task!r}; every row needs a 'task' name, e.g. row['task'] = 'sst'"
                )
            groups.setdefault(task, []).append(feature)
        batches = {task: self._collate(task, rows) for task, rows in groups.items()}
        if len(batches) == 1:
            ((task, batch),) = batches.items()
            return {"task": task, **batch}
        return {"task_batches": batches}

    def _collate(self, task: str, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        keys = set(rows[0])
        for row in rows[1:]:
            if set(row) != keys:
                raise ValueError(
                    f"task '{task}': rows have different keys ({sorted(keys)} vs {sorted(row)}); "
                    "batch rows from one tokenize_dataset output"
                )
        unknown = sorted(keys - set(INPUT_KEYS) - set(INPUT_KEYS_B) - set(INPUT_KEYS_C) - {"labels", "label"}
                         - set(_DROPPED_KEYS))
        if unknown or "input_ids" not in keys:
            raise ValueError(
                f"task '{task}': the collator takes tokenized rows (see tokenize_dataset) plus 'task'; got keys "
                f"{sorted(keys)}, unexpected {unknown}"
            )
        if task in self._maskers:
            if "input_ids_b" in keys:
                raise ValueError(f"task '{task}' is an MLM task; its rows must hold one text, not a pair")
            masked = self._maskers[task]([{k: row[k] for k in INPUT_KEYS if k in row} for row in rows])
            return {k: v.long() for k, v in masked.items()}  # input_ids (masked), attention_mask, ..., labels
        batch = self._pad(rows, INPUT_KEYS, suffix="")
        if "input_ids_b" in keys:  # sentence b of a bi-encoded pair, padded to its own longest
            batch.update(self._pad(rows, INPUT_KEYS_B, suffix="_b"))
        if "input_ids_c" in keys:  # the hard negative of a contrastive triplet
            batch.update(self._pad(rows, INPUT_KEYS_C, suffix="_c"))
        label_key = "labels" if "labels" in keys else "label" if "label" in keys else None
        if label_key is not None:
            values = [row[label_key] for row in rows]
            labels = torch.as_tensor([v.item() if hasattr(v, "item") else v for v in values])
            batch["labels"] = labels.float() if labels.is_floating_point() else labels.long()  # (B,)
        return batch

    def _pad(self, rows: list[dict[str, Any]], keys: tuple[str, ...], suffix: str) -> dict[str, torch.Tensor]:
        side = [{k[: len(k) - len(suffix)]: row[k] for k in keys if k in row} for row in rows]
        padded = self.tokenizer.pad(
            side, padding=True, pad_to_multiple_of=self.pad_to_multiple_of, return_tensors="pt"
        )  # each (B, L)
        return {f"{k}{suffix}": v.long() for k, v in padded.items()}


__all__ = ["MultiTaskCollator"]
