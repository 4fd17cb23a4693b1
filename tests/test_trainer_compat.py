"""MultiTaskBertModel works with transformers.Trainer as it is."""

import torch
from _helpers import no_dropout, random_batch
from transformers import Trainer, TrainingArguments

from hf_mtbert import MultiTaskBertModel


def examples(n=8, seed=0):
    ids, mask = random_batch(batch=n, length=10, seed=seed)
    labels = torch.arange(n) % 5
    return [{"input_ids": ids[i], "attention_mask": mask[i], "labels": labels[i]} for i in range(n)]


def collate(features):
    batch = {k: torch.stack([f[k] for f in features]) for k in features[0]}
    return {"task": "sst", **batch}


def make_trainer(tmp_path, config, batch_size, accumulation, data, max_steps):
    torch.manual_seed(0)
    model = MultiTaskBertModel(config)
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=batch_size, gradient_accumulation_steps=accumulation,
        max_steps=max_steps, learning_rate=0.5, optim="sgd", lr_scheduler_type="constant", report_to=[],
        save_strategy="no", logging_steps=1, use_cpu=True, seed=0, dataloader_drop_last=True,
    )
    return Trainer(model=model, args=args, train_dataset=data, data_collator=collate)


def test_trainer_trains_and_loss_falls(tmp_path, tiny_config):
    trainer = make_trainer(tmp_path, no_dropout(tiny_config), 8, 1, examples(), max_steps=30)
    assert trainer.model_accepts_loss_kwargs is False
    trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert losses[-1] < 0.5 * losses[0]


def test_gradient_accumulation_matches_full_batch(tmp_path, tiny_config):
    config, data = no_dropout(tiny_config), examples(n=4)
    full = make_trainer(tmp_path / "a", config, 4, 1, data, max_steps=1)
    accumulated = make_trainer(tmp_path / "b", config, 2, 2, data, max_steps=1)
    start = full.model.heads["sst"].classifier.weight.detach().clone()
    full.train()
    accumulated.train()
    a = full.model.heads["sst"].classifier.weight.detach()
    b = accumulated.model.heads["sst"].classifier.weight.detach()
    assert not torch.allclose(a, start)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
