import math

import numpy as np
import pytest
import torch

from hf_mtbert.metrics import (
    classification_metrics,
    cs224n_overall,
    multitask_metrics,
    regression_metrics,
    task_metrics,
)


# --- classification --------------------------------------------------------------------------------------------
def test_binary_metrics_by_hand():
    gold = [1, 1, 1, 0, 0, 0, 1]
    pred = [1, 1, 0, 1, 0, 0, 0]
    m = classification_metrics(pred, gold, num_labels=2)
    # class 1: TP=2, FP=1, FN=2; class 0: TP=2, FP=2, FN=1
    assert m["accuracy"] == pytest.approx(4 / 7)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 4)
    assert m["f1"] == pytest.approx(2 * (2 / 3) * (1 / 2) / (2 / 3 + 1 / 2))  # 4/7
    # class 0: P = 2/4, R = 2/3 -> F1 = 4/7 as well
    assert m["macro_f1"] == pytest.approx((4 / 7 + 4 / 7) / 2)


def test_binary_class_never_predicted_scores_zero():
    m = classification_metrics([0, 0, 0], [1, 0, 1], num_labels=2)
    # no positive predictions: precision 0/0 -> 0 (zero_division), recall 0/2 = 0, F1 0
    assert (m["precision"], m["recall"], m["f1"]) == (0.0, 0.0, 0.0)
    assert m["accuracy"] == pytest.approx(1 / 3)
    # class 0: P = 1/3, R = 1/1 -> F1 = 2 * (1/3) / (4/3) = 0.5; class 1: 0
    assert m["macro_f1"] == pytest.approx(0.25)


def test_macro_f1_averages_over_num_labels_classes():
    gold = [0, 0, 1, 2]
    pred = [0, 1, 1, 1]
    # F1: class 0 = P 1, R 1/2 -> 2/3; class 1 = P 1/3, R 1 -> 1/2; class 2 (never predicted) = 0
    assert classification_metrics(pred, gold)["macro_f1"] == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    # class 3 is never seen nor predicted but still counts as a 0 in the average
    m = classification_metrics(pred, gold, num_labels=4)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 / 2 + 0 + 0) / 4)
    assert m["accuracy"] == pytest.approx(2 / 4)
    assert "precision" not in m and "f1" not in m  # only binary tasks get the positive-class scores


# --- regression ------------------------------------------------------------------------------------------------
def test_correlations_by_hand():
    linear = regression_metrics([1, 2, 3, 4], [3, 5, 7, 9])  # y = 2x + 1
    assert linear["pearson"] == pytest.approx(1.0) and linear["spearman"] == pytest.approx(1.0)
    # reversed ranks, not linear: Spearman is exactly -1, Pearson is not
    reversed_ = regression_metrics([1, 2, 3], [9, 4, 1])
    assert reversed_["spearman"] == pytest.approx(-1.0)
    assert reversed_["pearson"] > -1.0 + 1e-3

    x, y = np.array([1.0, 2.0, 4.0, 3.0]), np.array([1.0, 3.0, 2.0, 5.0])
    dx, dy = x - x.mean(), y - y.mean()
    r = (dx * dy).sum() / math.sqrt((dx**2).sum() * (dy**2).sum())
    # dx = -1.5, -0.5, 1.5, 0.5; dy = -1.75, 0.25, -0.75, 2.25 -> sum dx*dy = 2.5, sum dx^2 = 5, sum dy^2 = 8.75
    assert r == pytest.approx(2.5 / math.sqrt(5 * 8.75))
    m = regression_metrics(x, y)
    assert m["pearson"] == pytest.approx(r)
    # ranks: x -> 1,2,4,3; y -> 1,3,2,4; sum d^2 = 0+1+4+1 = 6; rho = 1 - 6*6/(4*(16-1)) = 0.4
    assert m["spearman"] == pytest.approx(0.4)


@pytest.mark.parametrize("preds, labels, which", [
    ([2.0, 2.0, 2.0], [1.0, 2.0, 3.0], "predictions"),
    ([1.0, 2.0, 3.0], [4.0, 4.0, 4.0], "labels"),
])
def test_constant_side_gives_nan_and_one_warning(preds, labels, which):
    with pytest.warns(UserWarning, match=f"{which} are constant") as record:
        m = regression_metrics(preds, labels)
    assert len(record) == 1  # ours only: scipy's ConstantInputWarning is not raised on top
    assert math.isnan(m["pearson"]) and math.isnan(m["spearman"])


# --- task_metrics ----------------------------------------------------------------------------------------------
def test_classification_logits_are_argmaxed_torch_and_numpy():
    logits = [[0.1, 2.0], [3.0, 0.0], [0.0, 1.0], [5.0, -1.0]]  # argmax -> 1, 0, 1, 0
    gold = [1, 0, 0, 0]
    from_torch = task_metrics("classification", torch.tensor(logits, requires_grad=True), torch.tensor(gold))
    from_numpy = task_metrics("classification", np.array(logits, dtype=np.float32), np.array(gold))
    assert from_torch == from_numpy
    assert from_torch["accuracy"] == pytest.approx(3 / 4)
    assert from_torch["precision"] == pytest.approx(1 / 2)  # C = 2 -> binary scores, TP=1 FP=1
    three_way = task_metrics("classification", np.array([[0.0, 1.0, 9.0], [2.0, 1.0, 0.0]]), [2, 1])
    assert three_way["accuracy"] == pytest.approx(1 / 2) and "precision" not in three_way
    # num_labels=3 on 2-column logits widens macro-F1: class 0 F1 = 2/3, class 1 = 1, class 2 = 0
    wide = task_metrics("classification", np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), [0, 1, 1], num_labels=3)
    assert wide["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)


@pytest.mark.parametrize("to_input", [np.asarray, torch.tensor])
@pytest.mark.parametrize("shape", [(4,), (4, 1)])
def test_regression_scores_used_as_is(to_input, shape):
    scores = to_input(np.array([0.5, 1.5, 4.0, 3.0]).reshape(shape))
    m = task_metrics("regression", scores, to_input(np.array([1.0, 2.0, 5.0, 4.5])))
    assert m["spearman"] == pytest.approx(1.0)
    assert m["pearson"] == pytest.approx(regression_metrics([0.5, 1.5, 4.0, 3.0], [1.0, 2.0, 5.0, 4.5])["pearson"])
    assert m["pearson"] < 1.0  # monotone but not linear


# --- combined scores -------------------------------------------------------------------------------------------
def test_cs224n_overall():
    assert cs224n_overall(0.5, 0.8, 0.6) == pytest.approx((0.5 + 0.8 + 0.8) / 3)  # = 0.7
    assert cs224n_overall(1.0, 1.0, -1.0) == pytest.approx(2 / 3)


def test_multitask_metrics():
    per_task = {"sst": {"accuracy": 0.5, "macro_f1": 0.4}, "quora": {"accuracy": 0.8, "f1": 0.7},
                "sts": {"pearson": 0.6, "spearman": 0.9}}
    m = multitask_metrics(per_task)
    assert set(m) == {"sst_accuracy", "sst_macro_f1", "quora_accuracy", "quora_f1", "sts_pearson", "sts_spearman",
                      "mean_primary", "overall"}
    assert m["sst_macro_f1"] == 0.4 and m["sts_spearman"] == 0.9
    assert m["overall"] == pytest.approx(0.7)
    assert m["mean_primary"] == pytest.approx((0.5 + 0.8 + 0.6) / 3)  # Pearson, not Spearman, for sts
    two = multitask_metrics({"sst": {"accuracy": 0.5}, "sts": {"pearson": 0.2}})
    assert "overall" not in two and two["mean_primary"] == pytest.approx(0.35)
    assert multitask_metrics({}) == {}


# --- bad input -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("call, message", [
    (lambda: classification_metrics([0, 1, 1], [0, 1]), "3 predictions for 2 labels"),
    (lambda: regression_metrics([1.0, 2.0], [1.0, 2.0, 3.0]), "2 predictions for 3 labels"),
    (lambda: task_metrics("classification", np.zeros((3, 2)), [0, 1]), "3 predictions for 2 labels"),
    (lambda: regression_metrics([], []), "predictions is empty"),
    (lambda: task_metrics("regression", torch.zeros(0), []), "logits is empty"),
    (lambda: regression_metrics([1.0, float("nan"), 2.0], [1.0, 2.0, 3.0]), r"predictions contain NaN at rows \[1\]"),
    (lambda: task_metrics("regression", np.ones(2), [1.0, float("nan")]), r"labels contain NaN at rows \[1\]"),
    (lambda: task_metrics("ranking", np.zeros((2, 2)), [0, 1]), "task kind 'ranking' has no per-row metrics"),
    (lambda: task_metrics("classification", np.zeros(3), [0, 1, 1]), r"\(N, C\), got shape \(3,\)"),
    (lambda: task_metrics("regression", np.zeros((3, 2)), [0.0, 1.0, 2.0]), r"got shape \(3, 2\)"),
    (lambda: classification_metrics([0, 1], [0, 3], num_labels=2), r"in \[0, 2\), got 3"),
    (lambda: classification_metrics([0, 1], [0, 0.5]), "got 0.5"),
    (lambda: multitask_metrics({"sts": {"spearman": 0.3}}), "task 'sts' has neither"),
])
def test_bad_input_names_the_value(call, message):
    with pytest.raises(ValueError, match=message):
        call()
