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

SCORED_KINDS = ("classification", "regression")  # contrastive and MLM tasks report their loss only


def _array(values, name: str) -> np.ndarray:
    """`values` (numpy, torch or a list) as a float64 array; raises on empty input."""
    if hasattr(values, "detach"):
        values = values.detach().cpu()
    out = np.asarray(values, dtype=np.float64)
    if out.size == 0:
        raise ValueError(f"{name} is empty (shape {out.shape}); metrics need at least one example")
    return out


def _check_lengths(predictions: np.ndarray, labels: np.ndarray) -> None:
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions for {len(labels)} labels; give one prediction per label")


def _class_ids(values, name: str, num_labels: int | None) -> np.ndarray:
    """1-D int64 class ids; raises on non-integer ids or ids outside [0, num_labels)."""
    ids = _array(values, name).reshape(-1)
    bad = ids[(ids != np.round(ids)) | (ids < 0) | (ids >= (num_labels or np.inf))]
    if bad.size:
        allowed = f"[0, {num_labels})" if num_labels else "integers >= 0"
        raise ValueError(f"{name} must be class ids in {allowed}, got {bad[0]:g}; fix the data or num_labels")
    return ids.astype(np.int64)


def classification_metrics(predictions, labels, num_labels: int | None = None) -> dict[str, float]:
    """Accuracy and macro-F1 of class ids; binary tasks (num_labels == 2) also get F1/precision/recall of class 1.

    With `num_labels`, macro-F1 averages over every class in `range(num_labels)`, seen or not (an unseen or never
    predicted class scores 0).
    """
    preds, gold = _class_ids(predictions, "predictions", num_labels), _class_ids(labels, "labels", num_labels)
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
    """Pearson and Spearman correlation; nan for both (with one warning) when either side is constant."""
    preds, gold = _array(predictions, "predictions").reshape(-1), _array(labels, "labels").reshape(-1)
    _check_lengths(preds, gold)
    for name, values in (("predictions", preds), ("labels", gold)):
        if np.isnan(values).any():
            rows = np.flatnonzero(np.isnan(values))[:5].tolist()
            raise ValueError(f"regression {name} contain NaN at rows {rows}; drop or fill those rows first")
    constant = [name for name, values in (("predictions", preds), ("labels", gold)) if np.ptp(values) == 0]
    if constant:
        warnings.warn(f"correlation is undefined because the {' and the '.join(constant)} are constant "
                      f"(value {preds[0] if constant[0] == 'predictions' else gold[0]:g}); "
                      "pearson and spearman are reported as nan", UserWarning, stacklevel=2)
        return {"pearson": float("nan"), "spearman": float("nan")}
    with warnings.catch_warnings():  # constant input is handled above; scipy's own warning would be a duplicate
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        pearson, spearman = stats.pearsonr(preds, gold)[0], stats.spearmanr(preds, gold)[0]
    return {"pearson": float(pearson), "spearman": float(spearman)}


def task_metrics(kind: str, logits, labels, num_labels: int | None = None) -> dict[str, float]:
    """Metrics of one task from the model's logits: (N, C) class scores or (N,)/(N, 1) regression scores."""
    if kind not in SCORED_KINDS:
        raise ValueError(f"task kind {kind!r} has no per-row metrics; use one of {SCORED_KINDS} (contrastive and MLM "
                         "tasks report their loss, and embedding quality through hf_mtbert.embeddings)")
    values = _array(logits, "logits")
    if kind == "classification":
        if values.ndim != 2:
            raise ValueError(f"classification logits must be (N, C), got shape {values.shape}; pass the raw scores")
        return classification_metrics(values.argmax(axis=-1), labels, num_labels or values.shape[-1])  # (N,)
    if values.ndim not in (1, 2) or (values.ndim == 2 and values.shape[1] != 1):
        raise ValueError(f"regression logits must be (N,) or (N, 1), got shape {values.shape}")
    return regression_metrics(values.reshape(-1), labels)


def cs224n_overall(sst_accuracy: float, quora_accuracy: float, sts_pearson: float) -> float:
    """The CS224N multi-task project's overall score: (acc_sst + acc_quora + (r_sts + 1) / 2) / 3."""
    return (sst_accuracy + quora_accuracy + (sts_pearson + 1) / 2) / 3


def _primary(task: str, metrics: dict[str, float]) -> float:
    """A task's headline metric: accuracy for classification results, Pearson r for regression results."""
    for name in ("accuracy", "pearson"):
        if name in metrics:
            return metrics[name]
    raise ValueError(f"task {task!r} has neither 'accuracy' nor 'pearson' (got {sorted(metrics)}); "
                     "pass the output of classification_metrics or regression_metrics")


def multitask_metrics(per_task: dict[str, dict[str, float]]) -> dict[str, float]:
    """`{task}_{metric}` for every task, `mean_primary` (each task's accuracy or Pearson r, averaged) and, when the
    CS224N tasks sst, quora and sts are all present, `overall`. An empty `per_task` gives an empty dict."""
    out = {f"{task}_{name}": value for task, metrics in per_task.items() for name, value in metrics.items()}
    if per_task:
        out["mean_primary"] = float(np.mean([_primary(task, metrics) for task, metrics in per_task.items()]))
    if {"sst", "quora", "sts"} <= set(per_task):
        out["overall"] = cs224n_overall(per_task["sst"]["accuracy"], per_task["quora"]["accuracy"],
                                        per_task["sts"]["pearson"])
    return out
