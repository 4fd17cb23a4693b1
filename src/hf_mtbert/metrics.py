"""Per-task metrics, computed offline with scikit-learn and scipy (the Hub's `evaluate` metrics do not load here).

Classification: accuracy and macro-F1, plus F1/precision/recall of class 1 for binary tasks.
Regression: Pearson and Spearman correlation. The CS224N overall score combines SST accuracy, Quora accuracy and
STS Pearson r as (acc_sst + acc_quora + (r + 1) / 2) / 3.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support


def _array(values, name: str) -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().cpu()
    out = np.asarray(values, dtype=np.float64)
    if out.size == 0:
        raise ValueError(f"{name} is empty; metrics need at least one example")
    return out


def _check_lengths(predictions: np.ndarray, labels: np.ndarray) -> None:
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions for {len(labels)} labels; give one prediction per label")


def classification_metrics(predictions, labels, num_labels: int | None = None) -> dict[str, float]:
    """Accuracy and macro-F1 of class ids; binary tasks also get F1/precision/recall of class 1."""
    preds = _array(predictions, "predictions").astype(np.int64)
    gold = _array(labels, "labels").astype(np.int64)
    _check_lengths(preds, gold)
    classes = list(range(num_labels)) if num_labels else None
    out = {
        "accuracy": float(accuracy_score(gold, preds)),
        "macro_f1": float(f1_score(gold, preds, labels=classes, average="macro", zero_division=0)),
    }
    if num_labels == 2:
        p, r, f, _ = precision_recall_fscore_support(gold, preds, labels=[1], average=None, zero_division=0)
        out.update(f1=float(f[0]), precision=float(p[0]), recall=float(r[0]))
    return out


def regression_metrics(predictions, labels) -> dict[str, float]:
    """Pearson and Spearman correlation; nan (with a warning) when either side is constant."""
    preds, gold = _array(predictions, "predictions").reshape(-1), _array(labels, "labels").reshape(-1)
    _check_lengths(preds, gold)
    for name, values in (("predictions", preds), ("labels", gold)):
        if np.isnan(values).any():
            raise ValueError(f"regression {name} contain NaN at rows {np.flatnonzero(np.isnan(values))[:5].tolist()}")
    constant = [name for name, v in (("predictions", preds), ("labels", gold)) if np.ptp(v) == 0]
    if constant or len(preds) < 2:
        warnings.warn(f"correlation is undefined: {' and '.join(constant) or 'fewer than two rows'} "
                      f"{'are' if constant else ''} constant; Pearson and Spearman are reported as nan", stacklevel=2)
        return {"pearson": float("nan"), "spearman": float("nan")}
    return {"pearson": float(stats.pearsonr(preds, gold)[0]), "spearman": float(stats.spearmanr(preds, gold)[0])}


def task_metrics(kind: str, logits, labels, num_labels: int | None = None) -> dict[str, float]:
    """Metrics of one task from the model's logits: (N, C) class scores or (N,)/(N, 1) regression scores."""
    values = _array(logits, "logits")
    if kind == "classification":
        if values.ndim != 2:
            raise ValueError(f"classification logits must be (N, C), got shape {values.shape}")
        return classification_metrics(values.argmax(axis=-1), labels, num_labels or values.shape[-1])
    if kind == "regression":
        return regression_metrics(values.reshape(len(values), -1)[:, 0], labels)
    raise ValueError(f"unknown task kind {kind!r}; use 'classification' or 'regression'")


def cs224n_overall(sst_accuracy: float, quora_accuracy: float, sts_pearson: float) -> float:
    """The CS224N multi-task project's overall score: (acc_sst + acc_quora + (r_sts + 1) / 2) / 3."""
    return (sst_accuracy + quora_accuracy + (sts_pearson + 1) / 2) / 3


def multitask_metrics(per_task: dict[str, dict[str, float]]) -> dict[str, float]:
    """`{task}_{metric}` for every task, `mean_primary` (accuracy or Pearson per task, averaged) and, with the
    CS224N tasks sst, quora and sts, `overall`."""
    out = {f"{task}_{name}": value for task, metrics in per_task.items() for name, value in metrics.items()}
    primary = [m["accuracy"] if "accuracy" in m else m["pearson"] for m in per_task.values()]
    if primary:
        out["mean_primary"] = float(np.mean(primary))
    if {"sst", "quora", "sts"} <= set(per_task):
        out["overall"] = cs224n_overall(per_task["sst"]["accuracy"], per_task["quora"]["accuracy"],
                                        per_task["sts"]["pearson"])
    return out
