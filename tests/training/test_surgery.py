"""Gradient surgery: PCGrad / CAGrad / GradVac weights on the Gram matrix, the per-task buffers, and the trainer."""

import json
import math

import numpy as np
import pytest
import torch
from _helpers import random_batch
from _trainers import StopAt, args, trainer, weights

from hf_mtbert import MultiTaskBertModel
from hf_mtbert.training.surgery import GradientSurgery, cagrad_weights, gradvac_weights, pcgrad_weights
from hf_mtbert.training.trainer import STATE_FILE


def naive_pcgrad(grads, orders):
    """PCGrad written directly on the gradient vectors, for comparison."""
    out = torch.zeros_like(grads[0])
    for i, g in enumerate(grads):
        g = g.clone()
        for j in orders[i]:
            dot = g @ grads[j]
            if dot < 0:
                g = g - dot / (grads[j] @ grads[j]) * grads[j]
        out += g
    return out


def combine(weights, grads):
    return weights.to(grads.dtype) @ grads


def test_pcgrad_on_a_conflicting_pair_by_hand():
    g = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
    w = pcgrad_weights(g @ g.T, [[1], [0]])
    # g1' = g1 - (-1/2) g2 = (0.5, 0.5); g2' = g2 - (-1/1) g1 = (0, 1); sum = (0.5, 1.5)
    torch.testing.assert_close(combine(w, g), torch.tensor([0.5, 1.5], dtype=torch.float64))
    g1_projected = g[0] + 0.5 * g[1]
    assert float(g1_projected @ g[1]) == pytest.approx(0.0)


def test_pcgrad_leaves_agreeing_gradients_alone():
    g = torch.tensor([[1.0, 0.2, 0.0], [0.5, 1.0, 0.1], [0.3, 0.0, 2.0]], dtype=torch.float64)
    torch.testing.assert_close(pcgrad_weights(g @ g.T, [[1, 2], [0, 2], [0, 1]]), torch.ones(3, dtype=torch.float64))


@pytest.mark.parametrize("seed", range(5))
def test_pcgrad_weights_match_the_vector_implementation(seed):
    g = torch.randn(3, 50, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    g[1] -= 1.5 * g[0]  # make sure some pairs conflict
    for orders in ([[1, 2], [0, 2], [0, 1]], [[2, 1], [2, 0], [1, 0]]):
        torch.testing.assert_close(combine(pcgrad_weights(g @ g.T, orders), g), naive_pcgrad(g, orders))


def test_pcgrad_order_matters_and_is_seeded_per_step():
    model = torch.nn.Linear(2, 2)
    surgery = GradientSurgery("pcgrad", model, ["a", "b", "c"], seed=3)
    assert surgery.orders(7) == surgery.orders(7)
    assert all(sorted(o) == [j for j in range(3) if j != i] for i, o in enumerate(surgery.orders(7)))
    assert len({str(surgery.orders(s)) for s in range(20)}) > 1  # the order changes between steps
    assert GradientSurgery("pcgrad", model, ["a", "b", "c"], seed=4).orders(7) != surgery.orders(7) or \
        GradientSurgery("pcgrad", model, ["a", "b", "c"], seed=4).orders(8) != surgery.orders(8)
    # three mutually conflicting tasks: the result depends on the order
    g = torch.tensor([[1.0, 0.0], [-0.8, 0.6], [-0.6, -0.8]], dtype=torch.float64)
    a = combine(pcgrad_weights(g @ g.T, [[1, 2], [0, 2], [0, 1]]), g)
    b = combine(pcgrad_weights(g @ g.T, [[2, 1], [2, 0], [1, 0]]), g)
    assert not torch.allclose(a, b)


def test_cagrad_with_zero_c_is_the_sum():
    g = torch.randn(3, 10, dtype=torch.float64)
    torch.testing.assert_close(cagrad_weights(g @ g.T, 0.0), torch.ones(3, dtype=torch.float64))


def test_cagrad_stays_in_the_ball_and_beats_random_directions():
    gen = torch.Generator().manual_seed(0)
    g = torch.randn(3, 20, generator=gen, dtype=torch.float64)
    g[2] = -0.9 * g[0] + 0.1 * g[2]  # a conflicting pair
    c, T = 0.5, 3
    d = combine(cagrad_weights(g @ g.T, c), g) * (1 + c**2) / T  # undo the scaling to the sum
    g0 = g.mean(0)
    assert float((d - g0).norm()) == pytest.approx(c * float(g0.norm()), rel=1e-4)
    worst = float((g @ d).min())
    # CAGrad maximises the worst task's improvement min_i g_i·d over the ball ‖d − g0‖ ≤ c‖g0‖
    for _ in range(200):
        u = torch.randn(20, generator=gen, dtype=torch.float64)
        candidate = g0 + c * float(g0.norm()) * u / u.norm()
        assert float((g @ candidate).min()) <= worst + 1e-6


def test_gradvac_with_zero_targets_is_pcgrad():
    g = torch.randn(3, 30, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    g[1] -= 2 * g[0]
    orders = [[1, 2], [0, 2], [0, 1]]
    w, _ = gradvac_weights(g @ g.T, orders, torch.zeros(3, 3), beta=0.01)
    torch.testing.assert_close(w, pcgrad_weights(g @ g.T, orders))


def test_gradvac_raises_the_cosine_to_its_target_and_updates_the_ema():
    g = torch.tensor([[1.0, 0.0], [0.6, 0.8]], dtype=torch.float64)  # unit vectors, cos = 0.6
    targets = torch.tensor([[0.0, 0.9], [0.9, 0.0]], dtype=torch.float64)
    w, new = gradvac_weights(g @ g.T, [[1], [0]], targets, beta=0.1)
    # each task adds a multiple a of the other's gradient so that their cosine becomes 0.9; by symmetry both
    # tasks add the same multiple, so d = (1 + a)(g1 + g2)
    a = float(w[0]) - 1.0
    assert a > 0 and float(w[1]) == pytest.approx(1.0 + a)
    g1_adjusted = g[0] + a * g[1]
    assert float(g1_adjusted @ g[1] / g1_adjusted.norm()) == pytest.approx(0.9)
    ema = 0.9 * 0.9 + 0.1 * 0.6  # (1 − β) φ̂ + β cos
    torch.testing.assert_close(new, torch.tensor([[0.0, ema], [ema, 0.0]], dtype=torch.float64))
    # a pair already above its target is left alone (and only its EMA moves)
    w, _ = gradvac_weights(g @ g.T, [[1], [0]], torch.full((2, 2), 0.5, dtype=torch.float64), beta=0.1)
    torch.testing.assert_close(w, torch.ones(2, dtype=torch.float64))


# --- the per-task buffers ----------------------------------------------------------------------------------------
def _task_losses(model, tiny_config):
    ids, mask = random_batch(batch=4, length=9, vocab=tiny_config.vocab_size)
    ids_b, mask_b = random_batch(batch=4, length=7, vocab=tiny_config.vocab_size, seed=1)
    return {
        "sst": lambda: model(task="sst", input_ids=ids, attention_mask=mask,
                             labels=torch.tensor([0, 1, 4, 2])).loss,
        "sts": lambda: model(task="sts", input_ids=ids, attention_mask=mask, input_ids_b=ids_b,
                             attention_mask_b=mask_b, labels=torch.tensor([0.5, 4.0, 2.0, 3.0])).loss,
    }


@pytest.mark.parametrize("method", ["pcgrad", "cagrad", "gradvac"])
def test_buffers_hold_each_tasks_gradient_and_heads_keep_their_own(tiny_config, method):
    torch.manual_seed(0)
    model = MultiTaskBertModel(tiny_config).eval()
    losses = _task_losses(model, tiny_config)
    reference = {}
    for task, loss in losses.items():  # plain autograd, one task at a time
        model.zero_grad()
        loss().backward()
        reference[task] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    tasks = list(losses)
    surgery = GradientSurgery(method, model, tasks, seed=0)
    for task, loss in losses.items():
        surgery.select(task)
        loss().backward()
    shared = [n for n, p in model.named_parameters() if p.requires_grad and not n.startswith("heads.")]
    for row, task in enumerate(tasks):
        for name, view in zip(shared, surgery._views[row], strict=True):
            torch.testing.assert_close(view, reference[task].get(name, torch.zeros_like(view)))
    w = surgery.apply(step=0)
    flat = {n: p for n, p in model.named_parameters()}
    for name in shared:
        expected = sum(w[i].float() * reference[t].get(name, torch.zeros_like(flat[name])) for i, t in enumerate(tasks))
        torch.testing.assert_close(flat[name].grad, expected, atol=1e-6, rtol=1e-5)
    for name, p in flat.items():
        if name.startswith("heads."):
            task = name.split(".")[1]
            if task in reference:
                torch.testing.assert_close(p.grad, reference[task][name])
            else:
                assert p.grad is None
    # a new step starts from zero buffers
    surgery.select("sst")
    assert float(surgery._buffer.abs().sum()) == 0.0


def test_parameters_no_task_used_get_no_gradient(tiny_config):
    """Like plain autograd, a shared parameter that no task's loss reached ends with `.grad = None`, so the
    optimizer skips it (weight decay included)."""
    torch.manual_seed(0)
    model = MultiTaskBertModel(tiny_config)
    loss = _task_losses(model, tiny_config)["sts"]  # mean pooling: the pooler takes no part
    loss().backward()
    untouched = {n for n, p in model.named_parameters() if p.grad is None and not n.startswith("heads.")}
    assert any(n.startswith("bert.pooler") for n in untouched)
    model.zero_grad(set_to_none=True)
    surgery = GradientSurgery("pcgrad", model, ["sts"], seed=0)
    with pytest.raises(RuntimeError, match="before any task's backward"):
        surgery.apply(0)
    surgery.select("sts")
    loss().backward()
    surgery.apply(0)
    assert {n for n, p in model.named_parameters() if p.grad is None and not n.startswith("heads.")} == untouched


def test_surgery_rejects_bad_settings():
    model = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="grad_surgery='mgda'"):
        GradientSurgery("mgda", model, ["a"])
    with pytest.raises(ValueError, match="cagrad_c must be >= 0"):
        GradientSurgery("cagrad", model, ["a"], cagrad_c=-1)
    mixed = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2).double())
    with pytest.raises(ValueError, match=r"one dtype, got \['torch.float32', 'torch.float64'\]"):
        GradientSurgery("pcgrad", mixed, ["a"])


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_buffers_follow_the_parameter_dtype(tiny_config, dtype):
    model = MultiTaskBertModel(tiny_config).to(dtype)
    surgery = GradientSurgery("pcgrad", model, ["sst", "sts"], seed=0)
    surgery.select("sst")
    assert surgery._buffer.dtype == dtype and surgery.buffer_bytes == 3 * surgery.numel * dtype.itemsize
    ids, mask = random_batch(3, 7)
    model(task="sst", input_ids=ids, attention_mask=mask, labels=torch.tensor([0, 1, 4])).loss.backward()
    surgery.select("sts")
    surgery.apply(0)
    grads = [p.grad for n, p in model.named_parameters() if n.startswith("bert.encoder") and p.grad is not None]
    assert grads and all(g.dtype == dtype for g in grads) and any(bool(g.abs().sum() > 0) for g in grads)


# --- inside MultiTaskTrainer -------------------------------------------------------------------------------------
def test_pcgrad_trains_and_logs_surgery_weights(tmp_path, config, tokenizer):
    t = trainer(tmp_path, config, tokenizer, sampling_strategy="concurrent", grad_surgery="pcgrad", max_steps=8)
    before = weights(t.model)
    t.train()
    logs = [log for log in t.state.log_history if "surgery_weight_sst" in log]
    assert logs and all(math.isfinite(log["loss"]) for log in logs)
    assert all(log[f"surgery_weight_{task}"] >= 1.0 for log in logs for task in ("sst", "quora", "sts"))
    after = weights(t.model)
    assert any(not torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("method", ["pcgrad", "cagrad", "gradvac"])
def test_gradient_accumulation_equals_double_batch(tmp_path, config, tokenizer, method):
    """In float64, so that summation-order noise (which CAGrad's solver amplifies in float32) stays far below what
    projecting per micro-batch instead of per optimizer step would change."""
    common = dict(dtype=torch.float64, max_steps=3, learning_rate=1e-2, optim="sgd", lr_scheduler_type="constant",
                  sampling_strategy="concurrent", grad_surgery=method, gradvac_beta=0.5)
    runs = []
    for batch, accumulation in ((8, 1), (4, 2)):
        t = trainer(tmp_path / str(batch), config, tokenizer, per_device_train_batch_size=batch,
                    gradient_accumulation_steps=accumulation, **common)
        t.train()
        runs.append(weights(t.model))
    for k in runs[0]:
        torch.testing.assert_close(runs[0][k], runs[1][k], atol=1e-8, rtol=1e-7)  # CAGrad: solver tolerance


def test_surgery_is_not_the_plain_sum(tmp_path, config, tokenizer):
    """Guards the tests above: with the same batches, PCGrad's update differs from the summed-loss update."""
    common = dict(max_steps=3, learning_rate=1e-2, optim="sgd", lr_scheduler_type="constant",
                  sampling_strategy="concurrent", logging_steps=1)
    plain = trainer(tmp_path / "a", config, tokenizer, **common)
    plain.train()
    pcgrad = trainer(tmp_path / "b", config, tokenizer, grad_surgery="pcgrad", **common)
    pcgrad.train()
    logged = [log for log in pcgrad.state.log_history if "surgery_weight_sst" in log]
    assert len(logged) == 3
    a, b = weights(plain.model), weights(pcgrad.model)
    if all(log[f"surgery_weight_{t}"] == 1.0 for log in logged for t in ("sst", "quora", "sts")):
        pytest.fail("no gradient conflict in the test run; pick a setting where PCGrad projects")
    assert any(not torch.allclose(a[k], b[k]) for k in a)


def test_surgery_with_unit_weights_equals_the_summed_loss(tmp_path, config, tokenizer):
    """CAGrad with c = 0 combines with weights exactly 1: the same update as the summed loss."""
    common = dict(max_steps=3, learning_rate=1e-2, optim="sgd", lr_scheduler_type="constant",
                  sampling_strategy="concurrent")
    plain = trainer(tmp_path / "a", config, tokenizer, **common)
    plain.train()
    cagrad = trainer(tmp_path / "b", config, tokenizer, grad_surgery="cagrad", cagrad_c=0.0, **common)
    cagrad.train()
    a, b = weights(plain.model), weights(cagrad.model)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5)


def test_gradvac_resume_is_bit_identical(tmp_path, config, tokenizer):
    common = dict(max_steps=8, save_strategy="steps", save_steps=4, sampling_strategy="concurrent",
                  grad_surgery="gradvac", gradvac_beta=0.5)
    full = trainer(tmp_path / "full", config, tokenizer, **common)
    full.train()
    stopped = trainer(tmp_path / "run", config, tokenizer, **common)
    stopped.add_callback(StopAt(4))
    stopped.train()
    checkpoint = tmp_path / "run" / "checkpoint-4"
    state = json.loads((checkpoint / STATE_FILE).read_text())["surgery"]
    assert state["method"] == "gradvac" and np.abs(np.array(state["gradvac_targets"])).sum() > 0
    resumed = trainer(tmp_path / "run", config, tokenizer, **common)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    a, b = weights(full.model), weights(resumed.model)
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    torch.testing.assert_close(full.surgery.targets, resumed.surgery.targets, rtol=0, atol=0)


def test_surgery_needs_concurrent_sampling(tmp_path):
    with pytest.raises(ValueError, match="concurrent"):
        args(tmp_path, grad_surgery="pcgrad", sampling_strategy="sqrt")
    with pytest.raises(ValueError, match="grad_surgery='mgda'"):
        args(tmp_path, grad_surgery="mgda", sampling_strategy="concurrent")
