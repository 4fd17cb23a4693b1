"""Ensembles of multi-task checkpoints: average their logits, choosing per task which checkpoints take part.

Per task, the members are picked greedily on the dev set, starting from the best single checkpoint and adding, one
at a time, the checkpoint whose addition raises the task's headline metric (accuracy, or Pearson r) the most, until
no addition helps. The dev numbers of such an ensemble are therefore optimistic: they were used to choose it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .metrics import _primary, multitask_metrics, task_metrics


def average(logits: Sequence[np.ndarray]) -> np.ndarray:
    """The mean of several checkpoints' logits (or regression scores) for the same rows."""
    shapes = {np.shape(x) for x in logits}
    if not logits or len(shapes) != 1:
        raise ValueError(f"average needs one or more logit arrays of one shape, got shapes {sorted(shapes)}")
    return np.mean(np.stack([np.asarray(x, dtype=np.float64) for x in logits]), axis=0)


def greedy_members(candidates: Sequence[np.ndarray], labels: np.ndarray, kind: str,
                   num_labels: int | None = None) -> tuple[list[int], dict[str, float]]:
    """Indices of the checkpoints to average for one task, chosen greedily on (dev) `labels`, and their metrics."""
    if not candidates:
        raise ValueError("greedy_members needs at least one checkpoint's logits")

    def score(members: list[int]) -> tuple[float, dict[str, float]]:
        metrics = task_metrics(kind, average([candidates[i] for i in members]), labels, num_labels)
        return _primary("task", metrics), metrics

    chosen, (best, best_metrics) = [], (-np.inf, {})
    while True:
        trials = [(score(chosen + [i]), i) for i in range(len(candidates)) if i not in chosen]
        if not trials:
            break
        (value, metrics), i = max(trials, key=lambda t: t[0][0])
        if value <= best:
            break
        chosen, best, best_metrics = chosen + [i], value, metrics
    return sorted(chosen), best_metrics


def ensemble(per_checkpoint: Sequence[Mapping[str, np.ndarray]], labels: Mapping[str, np.ndarray],
             specs: Mapping[str, object]) -> dict:
    """Per task: the greedy members, their metrics, and each checkpoint's own metrics; plus the combined scores
    (`overall` for the CS224N tasks) of the chosen ensembles."""
    tasks = list(labels)
    result: dict = {"tasks": {}}
    chosen_metrics = {}
    for task in tasks:
        spec = specs[task]
        candidates = [logits[task] for logits in per_checkpoint]
        members, metrics = greedy_members(candidates, labels[task], spec.kind, spec.num_labels)
        result["tasks"][task] = {
            "members": members,
            "metrics": metrics,
            "single": [task_metrics(spec.kind, c, labels[task], spec.num_labels) for c in candidates],
        }
        chosen_metrics[task] = metrics
    result["combined"] = multitask_metrics(chosen_metrics)
    return result


__all__ = ["average", "ensemble", "greedy_members"]
