"""Contrastive and MLM tasks inside MultiTaskTrainer, mixed with the other tasks through the samplers."""

import csv
import math

import pytest
import torch
from _helpers import with_overrides
from _synthetic import task_datasets
from _trainers import trainer, weights

from hf_mtbert.data import MultiTaskCollator, load_task_data, tokenize_dataset

SIMCSE = {"name": "simcse", "kind": "contrastive", "pooling": "mean"}
NLI = {"name": "nli", "kind": "contrastive", "input": "pair", "pooling": "mean"}
SUPCON = {"name": "supcon", "kind": "contrastive", "objective": "label", "pooling": "mean"}
MLM = {"name": "mlm", "kind": "mlm"}
SST = {"name": "sst", "num_labels": 5}


def _config(config, *tasks, **overrides):
    return with_overrides(config, tasks=list(tasks), **overrides)


def _fixed_batch_loss(model, collator, dataset, task, seed=0):
    """The training-mode loss of the first 16 rows, with the dropout masks fixed by the seed."""
    batch = collator([{**dataset[i], "task": task} for i in range(16)])
    batch.pop("task")
    model.train()
    torch.manual_seed(seed)
    with torch.no_grad():
        return float(model(task=task, **batch).loss)


@pytest.mark.parametrize("spec", [SIMCSE, NLI, SUPCON], ids=["unsupervised", "supervised", "label"])
def test_a_few_steps_reduce_the_contrastive_loss(tmp_path, config, tokenizer, spec):
    cfg = _config(config, spec, SST, hidden_dropout_prob=0.1)
    data = task_datasets(cfg, {spec["name"]: 64, "sst": 32})
    t = trainer(tmp_path, cfg, tokenizer, data=data, max_steps=30, learning_rate=3e-3,
                sampling_strategy="proportional", lr_scheduler_type="constant")
    before = _fixed_batch_loss(t.model, t.data_collator, data[spec["name"]], spec["name"])
    t.train()
    after = _fixed_batch_loss(t.model, t.data_collator, data[spec["name"]], spec["name"])
    # SupCon cannot reach 0: each anchor spreads its probability over ~10 positives here (floor about log 10)
    assert after < (0.9 if spec is SUPCON else 0.8) * before, (before, after)
    logged = [log[f"loss_{spec['name']}"] for log in t.state.log_history if f"loss_{spec['name']}" in log]
    assert logged and all(math.isfinite(v) for v in logged)


def test_mlm_task_trains_with_masked_batches_and_reports_perplexity(tmp_path, config, tokenizer):
    cfg = _config(config, MLM, SST, vocab_size=tokenizer.vocab_size)  # the collator's random tokens span its vocab
    data = task_datasets(cfg, {"mlm": 48, "sst": 32})
    t = trainer(tmp_path, cfg, tokenizer, data=data, eval_data=task_datasets(cfg, {"mlm": 16, "sst": 16}, seed=5),
                max_steps=6, sampling_strategy="round_robin", learning_rate=1e-3)
    batch = t.data_collator([{**data["mlm"][i], "task": "mlm"} for i in range(8)])
    assert batch["labels"].shape == batch["input_ids"].shape and bool((batch["labels"] != -100).any())
    before = weights(t.model)
    t.train()
    after = weights(t.model)
    assert not torch.equal(before["cls.predictions.transform.dense.weight"],
                           after["cls.predictions.transform.dense.weight"])
    metrics = t.evaluate()
    assert metrics["eval_mlm_perplexity"] == pytest.approx(math.exp(metrics["eval_mlm_loss"]))
    assert "eval_sst_accuracy" in metrics and "eval_mlm_accuracy" not in metrics


def test_contrastive_eval_loss_without_labels(tmp_path, config, tokenizer):
    cfg = _config(config, SIMCSE, SST)
    t = trainer(tmp_path, cfg, tokenizer, data=task_datasets(cfg, {"simcse": 16, "sst": 16}),
                eval_data=task_datasets(cfg, {"simcse": 16, "sst": 16}, seed=3), max_steps=1)
    metrics = t.evaluate()
    assert math.isfinite(metrics["eval_simcse_loss"]) and metrics["eval_simcse_loss"] > 0


def test_smart_skips_contrastive_tasks_and_refuses_to_be_forced(tmp_path, config, tokenizer):
    cfg = _config(config, SIMCSE, SST)
    data = task_datasets(cfg, {"simcse": 32, "sst": 32})
    t = trainer(tmp_path, cfg, tokenizer, data=data, max_steps=4, logging_steps=2, smart=True,
                smart_epsilon=0.01, smart_noise_std=0.01, smart_step_size=0.01, smart_bregman_weight=1.0,
                sampling_strategy="round_robin")
    assert t.smart.weight("simcse") == 0.0 and t.smart.weight("sst") == 1.0
    t.train()
    keys = {k for log in t.state.log_history for k in log}
    assert {"smart_sst", "bregman_sst", "loss_simcse"} <= keys and not {"smart_simcse", "bregman_simcse"} & keys
    with pytest.raises(ValueError, match=r"gives SMART to tasks \['simcse'\]"):
        trainer(tmp_path, cfg, tokenizer, data=data, smart=True, smart_weights="simcse=1")


def test_gradient_surgery_treats_the_mlm_head_as_a_head(tmp_path, config, tokenizer):
    cfg = _config(config, MLM, SST, vocab_size=tokenizer.vocab_size)
    t = trainer(tmp_path, cfg, tokenizer, data=task_datasets(cfg, {"mlm": 32, "sst": 32}), max_steps=2,
                sampling_strategy="concurrent", grad_surgery="pcgrad")
    assert all(not any(p is q for q in t.surgery.shared) for p in t.model.cls.parameters())
    t.train()


def test_text_files_and_nli_triplets_load_and_batch(tmp_path, minilm_tokenizer):
    from hf_mtbert import MultiTaskBertConfig

    config = MultiTaskBertConfig(tasks=[SIMCSE, NLI])
    lines = tmp_path / "wiki.txt"
    lines.write_text("The first sentence.\n\nA second one here.\n   \nThird.\n", encoding="utf-8")
    text = load_task_data(lines, config.get_task("simcse"))
    assert text["sentence"] == ["The first sentence.", "A second one here.", "Third."]
    nli = tmp_path / "nli.csv"
    with nli.open("w", newline="", encoding="utf-8") as f:  # SimCSE's own column names
        csv.writer(f).writerows([["sent0", "sent1", "hard_neg"],
                                 ["A man plays a guitar.", "Someone makes music.", "Nobody is playing."],
                                 ["Two dogs run.", "Animals are moving.", "The dogs sleep."]])
    columns = {"sentence1": "sent0", "sentence2": "sent1", "hard_negative": "hard_neg"}
    triplets = load_task_data({"path": str(nli), "columns": columns}, config.get_task("nli"))
    assert triplets["hard_negative"] == ["Nobody is playing.", "The dogs sleep."]
    tokenized = tokenize_dataset(triplets, minilm_tokenizer, config.get_task("nli"))
    batch = MultiTaskCollator(minilm_tokenizer)([{**row, "task": "nli"} for row in tokenized])
    assert {"input_ids", "input_ids_b", "input_ids_c", "attention_mask_c"} <= set(batch)
    decoded = minilm_tokenizer.decode(batch["input_ids_c"][1], skip_special_tokens=True)
    assert decoded == "the dogs sleep."
    pairs = load_task_data({"path": str(nli), "columns": {"sentence1": "sent0", "sentence2": "sent1"}},
                           config.get_task("nli"))
    assert "hard_negative" not in pairs.column_names  # unmapped, the file's hard_neg column is not a hard negative
    with pytest.raises(ValueError, match="only supervised contrastive tasks use"):
        load_task_data({"path": str(nli), "columns": {"sentence": "sent0", "hard_negative": "hard_neg"}},
                       config.get_task("simcse"))
