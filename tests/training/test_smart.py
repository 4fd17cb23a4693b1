"""SMART: divergences, the ε-ball, the ascent step, the Bregman teacher, and SMART inside MultiTaskTrainer."""

import json
import logging

import pytest
import torch
import torch.nn.functional as F
from _helpers import random_batch
from _trainers import StopAt, args, three_tasks, trainer, weights

from hf_mtbert import MultiTaskBertModel
from hf_mtbert.training.samplers import SAMPLERS
from hf_mtbert.training.smart import (
    BregmanTeacher,
    EmbeddingTap,
    SmartRegularizer,
    divergence,
    normalize_direction,
    project,
    symmetric_kl,
)
from hf_mtbert.training.trainer import STATE_FILE, TEACHER_FILE


def test_symmetric_kl_matches_both_kl_directions():
    p, q = torch.randn(6, 5), torch.randn(6, 5)
    by_hand = (F.kl_div(F.log_softmax(q, -1), F.softmax(p, -1), reduction="batchmean")
               + F.kl_div(F.log_softmax(p, -1), F.softmax(q, -1), reduction="batchmean"))
    torch.testing.assert_close(symmetric_kl(p, q), by_hand)
    torch.testing.assert_close(symmetric_kl(p, q), symmetric_kl(q, p))
    assert symmetric_kl(p.bfloat16(), q.bfloat16()).dtype == torch.float32


@pytest.mark.parametrize("kind", ["classification", "regression"])
def test_divergence_is_zero_for_identical_outputs(kind):
    a = torch.randn(4, 3 if kind == "classification" else 1)
    assert divergence(kind, a, a.clone()) == 0
    assert divergence(kind, a, a + torch.randn_like(a)) > 0


def test_divergence_rejects_unknown_kind():
    with pytest.raises(ValueError, match="contrastive"):
        divergence("contrastive", torch.zeros(2, 2), torch.zeros(2, 2))


@pytest.mark.parametrize("norm", ["inf", "l2"])
def test_projection_keeps_each_token_inside_the_ball(norm):
    delta = torch.randn(3, 7, 16)
    eps = 0.05
    projected = project(delta, eps, norm)
    size = projected.abs().amax(-1) if norm == "inf" else projected.norm(dim=-1)
    assert bool((size <= eps * (1 + 1e-6)).all())
    small = delta * 1e-4  # already inside: unchanged
    torch.testing.assert_close(project(small, eps, norm), small)


def test_direction_has_unit_norm_per_token_and_zero_for_zero_gradient():
    grad = torch.randn(2, 5, 8) * 1e-9  # tiny gradients still give unit steps
    grad[0, 0] = 0
    inf = normalize_direction(grad, "inf")
    torch.testing.assert_close(inf.abs().amax(-1)[1], torch.ones(5))
    torch.testing.assert_close(normalize_direction(grad, "l2").norm(dim=-1)[1], torch.ones(5))
    assert bool((inf[0, 0] == 0).all())


def _smart_setup(tiny_config, task="sst", **kwargs):
    torch.manual_seed(0)
    model = MultiTaskBertModel(tiny_config).eval()  # no dropout: every pass sees the same network
    ids, mask = random_batch(batch=4, length=9, vocab=tiny_config.vocab_size)
    smart = SmartRegularizer({task: 1.0}, **kwargs)
    return model, {"input_ids": ids, "attention_mask": mask}, smart


def _regularize(model, inputs, smart, task="sst"):
    with EmbeddingTap(model.bert.embeddings) as tap:
        clean = model(task=task, **inputs).logits
        value = smart(lambda: model(task=task, **inputs).logits, tap, model.config.get_task(task).kind, clean)
    return value, tap


@pytest.mark.parametrize("norm", ["inf", "l2"])
def test_final_perturbation_stays_in_the_ball(tiny_config, norm):
    eps = 1e-3
    model, inputs, smart = _smart_setup(tiny_config, epsilon=eps, noise_std=1e-2, step_size=0.1, steps=3, norm=norm)
    _, tap = _regularize(model, inputs, smart)
    delta = (tap.replacement - tap.recorded).detach()
    size = delta.abs().amax(-1) if norm == "inf" else delta.norm(dim=-1)
    assert bool((size <= eps + 1e-6).all())  # up to rounding in (E + δ) - E
    assert float(size.max()) > 0.5 * eps  # the ascent moved it out to the boundary


def test_ascent_increases_the_divergence(tiny_config):
    fixed_noise = lambda e: torch.full_like(e, 1e-3)  # noqa: E731
    kwargs = dict(epsilon=0.05, noise_std=1e-3, noise_fn=fixed_noise)
    model, inputs, no_step = _smart_setup(tiny_config, step_size=0.0, **kwargs)
    at_noise, _ = _regularize(model, inputs, no_step)
    _, _, ascent = _smart_setup(tiny_config, step_size=0.05, **kwargs)
    after_ascent, _ = _regularize(model, inputs, ascent)
    assert float(after_ascent.detach()) > 10 * float(at_noise.detach()) > 0


def test_regulariser_trains_the_embedding_layer_and_is_zero_without_perturbation(tiny_config):
    model, inputs, smart = _smart_setup(tiny_config, task="sts", epsilon=0.01, noise_std=0.01, step_size=0.01)
    ids_b, mask_b = random_batch(batch=4, length=7, vocab=tiny_config.vocab_size, seed=1)
    inputs = {**inputs, "input_ids_b": ids_b, "attention_mask_b": mask_b}
    value, _ = _regularize(model, inputs, smart, task="sts")
    value.backward()
    assert float(value.detach()) > 0
    assert model.bert.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    model.zero_grad()
    _, _, none = _smart_setup(tiny_config, task="sts", epsilon=0.0, noise_std=0.0, step_size=0.0)
    assert float(_regularize(model, inputs, none, task="sts")[0]) == 0.0


def test_bf16_autocast_gives_a_finite_fp32_regulariser(tiny_config):
    model, inputs, smart = _smart_setup(tiny_config, epsilon=0.05, noise_std=0.01, step_size=0.05)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value, _ = _regularize(model, inputs, smart)
    assert value.dtype == torch.float32 and bool(torch.isfinite(value)) and float(value) > 0


def test_smart_rejects_bad_settings():
    with pytest.raises(ValueError, match="steps=0"):
        SmartRegularizer({}, steps=0)
    with pytest.raises(ValueError, match="norm='l1'"):
        SmartRegularizer({}, norm="l1")
    with pytest.raises(ValueError, match="weights must be >= 0"):
        SmartRegularizer({"sst": -1.0})


def test_bregman_teacher_is_an_exponential_moving_average(tiny_config):
    torch.manual_seed(0)
    model = MultiTaskBertModel(tiny_config)
    teacher = BregmanTeacher(model, momentum=0.9, early_momentum=0.5, early_fraction=0.1)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    teacher.update(model, step=0, max_steps=100)  # early: β = 0.5
    name = "bert.pooler.dense.weight"
    torch.testing.assert_close(teacher.state_dict()[name], 0.5 * before[name] + 0.5 * model.state_dict()[name])
    mid = teacher.state_dict()[name].clone()
    teacher.update(model, step=50, max_steps=100)  # later: β = 0.9
    torch.testing.assert_close(teacher.state_dict()[name], 0.9 * mid + 0.1 * model.state_dict()[name])
    assert not teacher.model.training and not any(p.requires_grad for p in teacher.model.parameters())


# --- inside MultiTaskTrainer -------------------------------------------------------------------------------------
def test_zero_lambda_is_exactly_the_plain_run(tmp_path, tiny_config, tokenizer):
    config = three_tasks(tiny_config)  # dropout on: the runs must also draw the same random numbers
    runs = []  # built and trained one after the other: dropout draws from the global generator, seeded in trainer()
    for folder, extra in (("a", {}), ("b", dict(smart=True, smart_weights="sst=0,quora=0,sts=0"))):
        run = trainer(tmp_path / folder, config, tokenizer, max_steps=4, **extra)
        run.train()
        runs.append(run)
    plain, zero = runs
    a, b = weights(plain.model), weights(zero.model)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_smart_adds_the_weighted_regulariser_and_logs_it(tmp_path, config, tokenizer):
    t = trainer(tmp_path, config, tokenizer, smart=True, smart_weights="sst=5", smart_epsilon=0.05,
                smart_noise_std=0.01, smart_step_size=0.05)
    model = t.model.train()
    batch = t.data_collator([{**row, "task": "sst"} for row in t.train_dataset.tasks["sst"].select(range(4))])
    total = t.compute_loss(model, batch)
    features = {k: v for k, v in batch.items() if k != "task"}
    plain = model(task="sst", **features).loss
    logged = t._log_sums
    adversarial = logged["smart_sst"][0]
    assert float(adversarial) > 0
    torch.testing.assert_close(total, plain + 5 * adversarial)


def test_smart_gradient_accumulation_equals_double_batch(tmp_path, config, tokenizer):
    """With a deterministic per-token initial perturbation, GA=2 gives the same weights as one double batch."""
    common = dict(max_steps=3, learning_rate=1e-2, optim="sgd", lr_scheduler_type="constant", smart=True,
                  smart_epsilon=0.05, smart_step_size=0.05, sampling_strategy="concurrent")
    runs = []
    for batch, accumulation in ((8, 1), (4, 2)):
        t = trainer(tmp_path / str(batch), config, tokenizer, per_device_train_batch_size=batch,
                    gradient_accumulation_steps=accumulation, **common)
        t.smart.noise_fn = lambda e: 0.01 * torch.sin(1000 * e)
        t.train()
        runs.append(weights(t.model))
    for k in runs[0]:
        torch.testing.assert_close(runs[0][k], runs[1][k], atol=1e-6, rtol=1e-5)


def test_bregman_resume_is_bit_identical(tmp_path, tiny_config, tokenizer):
    """SMART + Bregman teacher with dropout on: stop at step 6, resume, same weights as the uninterrupted run."""
    config = three_tasks(tiny_config)
    common = dict(max_steps=12, save_strategy="steps", save_steps=6, smart=True, smart_bregman_weight=1.0,
                  smart_epsilon=0.01, smart_step_size=0.01)
    full = trainer(tmp_path / "full", config, tokenizer, **common)
    full.train()
    assert any("bregman_sst" in log and "smart_quora" in log for log in full.state.log_history)

    stopped = trainer(tmp_path / "run", config, tokenizer, **common)
    stopped.add_callback(StopAt(6))
    stopped.train()
    checkpoint = tmp_path / "run" / "checkpoint-6"
    assert (checkpoint / TEACHER_FILE).is_file()
    assert json.loads((checkpoint / STATE_FILE).read_text())["surgery"] is None
    resumed = trainer(tmp_path / "run", config, tokenizer, **common)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    a, b = weights(full.model), weights(resumed.model)
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    ta, tb = full.bregman.state_dict(), resumed.bregman.state_dict()
    assert all(torch.equal(ta[k], tb[k]) for k in ta)


def test_small_epsilon_under_bf16_warns(tmp_path, config, tokenizer, caplog):
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_warning()
    hf_logging.enable_propagation()
    try:
        with caplog.at_level(logging.WARNING):
            trainer(tmp_path, config, tokenizer, smart=True, bf16="true")
    finally:
        hf_logging.disable_propagation()
        hf_logging.set_verbosity_error()
    assert "below bf16's resolution" in caplog.text


def test_smart_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="smart_norm='l1'"):
        args(tmp_path, smart_norm="l1")
    with pytest.raises(ValueError, match="smart_bregman_weight must be >= 0"):
        args(tmp_path, smart_bregman_weight=-1)
    with pytest.raises(ValueError, match=r"smart_weights names unknown tasks \['nli'\]"):
        args(tmp_path, smart_weights="nli=1").smart_weights_for(["sst"])


@pytest.mark.parametrize("strategy", sorted(SAMPLERS))
def test_smart_trains_with_every_sampling_strategy(tmp_path, config, tokenizer, strategy):
    t = trainer(tmp_path, config, tokenizer, max_steps=4, logging_steps=2, sampling_strategy=strategy, smart=True,
                smart_epsilon=0.01, smart_noise_std=0.01, smart_step_size=0.01, smart_bregman_weight=1.0)
    before = weights(t.model)
    t.train()
    logs = [log for log in t.state.log_history if "loss" in log]
    terms = [v for log in logs for k, v in log.items() if k.startswith(("smart_", "bregman_"))]
    assert terms and all(v >= 0 and v == v for v in terms)
    after = weights(t.model)
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_smart_trains_under_bf16_autocast(tmp_path, config, tokenizer):
    t = trainer(tmp_path, config, tokenizer, max_steps=2, logging_steps=1, bf16="true", smart=True,
                smart_epsilon=0.05, smart_noise_std=0.05, smart_step_size=0.05)
    t.train()
    logs = [log for log in t.state.log_history if "smart_sst" in log or "smart_quora" in log or "smart_sts" in log]
    values = [v for log in logs for k, v in log.items() if k.startswith("smart_")]
    assert values and all(v > 0 and v < float("inf") for v in values)
