"""MultiTaskTrainer on a tiny random config: training, per-task evaluation, exact resume, GA, weighting, errors."""

import json

import pytest
import torch
from _synthetic import task_datasets
from _trainers import SIZES, StopAt, args, three_tasks, trainer, weights

from hf_mtbert.training.trainer import STATE_FILE


def test_trains_and_logs_per_task_losses(tmp_path, config, tokenizer):
    t = trainer(tmp_path, config, tokenizer, max_steps=40, logging_steps=10)
    t.train()
    logs = [log for log in t.state.log_history if "loss" in log]
    assert logs[-1]["loss"] < logs[0]["loss"]
    assert all(f"loss_{task}" in logs[-1] for task in SIZES)


def test_evaluate_reports_task_metrics_and_overall(tmp_path, config, tokenizer):
    evals = task_datasets(config, {"sst": 20, "quora": 20, "sts": 20}, seed=100)
    t = trainer(tmp_path, config, tokenizer, eval_data=evals)
    metrics = t.evaluate()
    for key in ("eval_sst_accuracy", "eval_sst_macro_f1", "eval_quora_f1", "eval_quora_precision",
                "eval_sts_pearson", "eval_sts_spearman", "eval_sst_loss", "eval_overall"):
        assert key in metrics, key
    expected = (metrics["eval_sst_accuracy"] + metrics["eval_quora_accuracy"] + (metrics["eval_sts_pearson"] + 1) / 2)
    assert metrics["eval_overall"] == pytest.approx(expected / 3)
    # the metrics come from the model's own predictions: recompute SST accuracy by hand
    model = t.model.eval()
    batch = t.data_collator([{**row, "task": "sst"} for row in evals["sst"]])
    batch.pop("task")
    with torch.no_grad():
        preds = model(task="sst", **batch).logits.argmax(-1)
    assert metrics["eval_sst_accuracy"] == pytest.approx((preds == batch["labels"]).float().mean().item())


@pytest.mark.parametrize("strategy", ["sqrt", "concurrent"])
def test_resume_mid_epoch_is_bit_identical(tmp_path, tiny_config, tokenizer, strategy):
    """Stop at step 6 of 12 (mid-epoch, dropout on), resume from the checkpoint: the same final weights."""
    config = three_tasks(tiny_config)
    common = dict(sampling_strategy=strategy, task_weighting="loss_magnitude", max_steps=12, save_strategy="steps",
                  save_steps=6)
    full = trainer(tmp_path / "full", config, tokenizer, **common)
    assert full.get_train_dataloader().batch_sampler.steps_per_epoch > 6  # the stop is mid-epoch
    full.train()

    stopped = trainer(tmp_path / "run", config, tokenizer, **common)
    stopped.add_callback(StopAt(6))
    stopped.train()
    checkpoint = tmp_path / "run" / "checkpoint-6"
    state = json.loads((checkpoint / STATE_FILE).read_text())
    assert state["sampler"]["strategy"] == strategy and state["loss_magnitude"]["magnitude"]["sst"] is not None

    resumed = trainer(tmp_path / "run", config, tokenizer, **common)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    a, b = weights(full.model), weights(resumed.model)
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    assert resumed.magnitudes.magnitude == full.magnitudes.magnitude


def test_resume_refuses_changed_data(tmp_path, config, tokenizer):
    common = dict(max_steps=4, save_strategy="steps", save_steps=2)
    first = trainer(tmp_path, config, tokenizer, **common)
    first.add_callback(StopAt(2))
    first.train()
    changed = trainer(tmp_path, config, tokenizer, data=task_datasets(config, {**SIZES, "sts": 41}), **common)
    with pytest.raises(ValueError, match="task sampler changed"):
        changed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))


def test_gradient_accumulation_equals_double_batch(tmp_path, config, tokenizer):
    common = dict(max_steps=3, learning_rate=1e-2, optim="sgd", lr_scheduler_type="constant")
    big = trainer(tmp_path / "a", config, tokenizer, per_device_train_batch_size=8, **common)
    acc = trainer(tmp_path / "b", config, tokenizer, per_device_train_batch_size=4, gradient_accumulation_steps=2,
                  **common)
    start = weights(big.model)
    big.train()
    acc.train()
    a, b = weights(big.model), weights(acc.model)
    assert any(not torch.equal(a[k], start[k]) for k in a)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5)


def test_uncertainty_weights_learn(tmp_path, config, tokenizer):
    t = trainer(tmp_path, config, tokenizer, task_weighting="uncertainty", max_steps=10, learning_rate=5e-2)
    t.train()
    assert t.uncertainty.log_vars.abs().sum() > 0
    assert any("log_var_sst" in log for log in t.state.log_history)


def test_static_weights_scale_the_loss(tmp_path, config, tokenizer):
    t = trainer(tmp_path, config, tokenizer, task_weights="sst=0.5")
    model = t.model.train()
    batch = t.data_collator([{**row, "task": "sst"} for row in t.train_dataset.tasks["sst"].select(range(4))])
    torch.manual_seed(0)
    weighted = t.compute_loss(model, batch)
    torch.manual_seed(0)
    plain = model(**batch).loss
    torch.testing.assert_close(weighted, 0.5 * plain)


def test_frozen_word_embeddings_stay_put(tmp_path, config, tokenizer):
    t = trainer(tmp_path, config, tokenizer, word_embeddings="freeze", max_steps=3)
    before = t.model.get_input_embeddings().weight.detach().clone()
    t.train()
    assert torch.equal(before, t.model.get_input_embeddings().weight)


def test_bad_inputs(tmp_path, config, tokenizer):
    with pytest.raises(ValueError, match=r"tasks \['nli'\] that the model has no head for"):
        trainer(tmp_path, config, tokenizer, data={"nli": task_datasets(config, {"sst": 4})["sst"]})
    with pytest.raises(ValueError, match=r"\['sst'\] are empty"):
        trainer(tmp_path, config, tokenizer, data={"sst": task_datasets(config, {"sst": 4})["sst"].select([])})
    with pytest.raises(ValueError, match="sampling_strategy='random'"):
        args(tmp_path, sampling_strategy="random")
    with pytest.raises(ValueError, match=r"unknown tasks \['nli'\]"):
        trainer(tmp_path, config, tokenizer, task_batch_sizes="nli=4").train()
    with pytest.raises(ValueError, match="task=value"):
        args(tmp_path, task_weights="sst:1")
    with pytest.raises(ValueError, match="bf16='maybe'"):
        args(tmp_path, bf16="maybe")


def test_bf16_auto_follows_the_cpu(tmp_path):
    from hf_mtbert.hardware import cpu_info

    assert args(tmp_path, bf16="auto").bf16 is cpu_info().native_bf16
    assert args(tmp_path, bf16="false").bf16 is False


@pytest.mark.parametrize("bf16", ["true", "auto"])
def test_bf16_on_a_machine_without_accelerator_trains_on_the_cpu(tmp_path, monkeypatch, bf16):
    """transformers refuses bf16 without a GPU unless use_cpu is set; with no accelerator we set it for the user
    (else `bf16=auto` on an AMX or AVX512-BF16 CPU would stop every default run)."""
    from hf_mtbert.hardware import CpuInfo
    from hf_mtbert.training import MultiTaskTrainingArguments

    monkeypatch.setattr(torch.accelerator, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("hf_mtbert.training.arguments.cpu_info",
                        lambda: CpuInfo(model="test", capability="AVX512", amx=True, avx512_bf16=True, threads=2))
    a = MultiTaskTrainingArguments(output_dir=str(tmp_path), bf16=bf16, report_to=[])
    assert a.bf16 is True and a.use_cpu is True and a.device.type == "cpu"


def test_label_smoothing_argument_reaches_the_loss(tmp_path, config, tokenizer):
    """The heads read their own spec: patching only config.tasks (as before) left the loss unsmoothed."""
    from _helpers import random_batch

    t = trainer(tmp_path, config, tokenizer, label_smoothing=0.3)
    model = t.model.eval()
    ids, mask = random_batch(4, 6)
    labels = torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        logits = model(task="sst", input_ids=ids, attention_mask=mask).logits
        loss = model(task="sst", input_ids=ids, attention_mask=mask, labels=labels).loss
    expected = torch.nn.functional.cross_entropy(logits, labels, label_smoothing=0.3)
    torch.testing.assert_close(loss, expected)
    assert not torch.allclose(loss, torch.nn.functional.cross_entropy(logits, labels))
    assert model.config.get_task("sst").label_smoothing == 0.3


def test_max_train_minutes_stops_then_evaluates_and_saves(tmp_path, config, tokenizer):
    """A run past its time limit stops at the next step boundary, evaluates and saves a checkpoint there."""
    from hf_mtbert.training.trainer import TimeLimit

    evals = task_datasets(config, {"sst": 8, "quora": 8, "sts": 8}, seed=100)
    t = trainer(tmp_path, config, tokenizer, eval_data=evals, max_steps=40, max_train_minutes=1.0,
                eval_strategy="steps", eval_steps=1000, save_strategy="steps", save_steps=1000)
    limit, = [cb for cb in t.callback_handler.callbacks if isinstance(cb, TimeLimit)]
    ticks = iter(range(0, 10_000, 25))
    limit.clock = lambda: next(ticks)  # every reading of the clock: 25 s later
    t.train()
    # begin at 0 s; step n is checked at 25n s, so the limit of 60 s is passed at step 3
    assert t.state.global_step == 3
    assert [log["step"] for log in t.state.log_history if "eval_overall" in log] == [3]
    assert (tmp_path / "checkpoint-3" / "model.safetensors").exists()
    with pytest.raises(ValueError, match="max_train_minutes must be > 0"):
        args(tmp_path, max_train_minutes=0)
