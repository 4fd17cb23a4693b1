"""LoRA (PEFT) on the multi-task model: adapters on query/value, trainable heads, save, load, merge."""

import json

import pytest
import torch
from _helpers import random_batch
from _synthetic import task_datasets
from _trainers import args as trainer_args

from hf_mtbert import MultiTaskBertModel
from hf_mtbert.lora import add_lora, load_lora, save_lora
from hf_mtbert.training import MultiTaskTrainer


@pytest.fixture
def base(tmp_path, config):
    torch.manual_seed(0)
    model = MultiTaskBertModel(config).eval()
    model.save_pretrained(tmp_path / "base")
    return tmp_path / "base"


def _logits(model, config):
    ids, mask = random_batch(3, 9, seed=4)
    ids_b, mask_b = random_batch(3, 7, seed=5)
    with torch.no_grad():
        return {"sst": model(task="sst", input_ids=ids, attention_mask=mask).logits,
                "quora": model(task="quora", input_ids=ids, attention_mask=mask).logits,
                "sts": model(task="sts", input_ids=ids, attention_mask=mask, input_ids_b=ids_b,
                             attention_mask_b=mask_b).logits}


def test_lora_wraps_query_and_value_and_trains_only_adapters_and_heads(base):
    model = add_lora(MultiTaskBertModel.from_pretrained(base))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or ".classifier." in n for n in trainable)
    assert any("query.lora_A" in n for n in trainable) and any("value.lora_B" in n for n in trainable)
    assert not any("key.lora" in n or "word_embeddings" in n for n in trainable)
    with pytest.raises(ValueError, match=r"lora_target_modules \['qkv'\] are not modules"):
        add_lora(MultiTaskBertModel.from_pretrained(base), target_modules=("qkv",))


def test_the_adapter_reaches_the_attention(base, config):
    """The fused QKV matmul must not bypass LoRA's wrapped projections."""
    plain = _logits(MultiTaskBertModel.from_pretrained(base).eval(), config)
    model = add_lora(MultiTaskBertModel.from_pretrained(base)).eval()
    torch.testing.assert_close(_logits(model, config)["sst"], plain["sst"])  # lora_B starts at zero
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_()
    assert not torch.allclose(_logits(model, config)["sst"], plain["sst"])


def test_trained_adapter_saves_loads_and_merges_to_the_same_outputs(tmp_path, base, config, tokenizer):
    model = add_lora(MultiTaskBertModel.from_pretrained(base), r=4)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = MultiTaskTrainer(model=model, args=trainer_args(tmp_path / "run", max_steps=6, learning_rate=5e-2),
                               train_dataset=task_datasets(config, {"sst": 24, "quora": 24, "sts": 24}),
                               processing_class=tokenizer)
    trainer.train()
    after = dict(model.named_parameters())
    changed = {n for n in before if not torch.equal(before[n], after[n].detach())}
    assert any("lora_B" in n for n in changed) and any("classifier" in n for n in changed)
    assert all("lora_" in n or "classifier" in n for n in changed), sorted(changed)
    model.eval()
    expected = _logits(model, config)
    save_lora(model, tmp_path / "adapter")
    files = {p.name for p in (tmp_path / "adapter").iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "config.json"} <= files
    assert "model.safetensors" not in files  # an adapter, not a copy of the base weights
    adapter = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert set(adapter["target_modules"]) == {"query", "value"}
    loaded = load_lora(tmp_path / "adapter", base=str(base)).eval()
    merged = load_lora(tmp_path / "adapter", base=str(base), merge=True).eval()
    assert type(merged) is MultiTaskBertModel and not any("lora" in n for n, _ in merged.named_parameters())
    for task, logits in expected.items():
        torch.testing.assert_close(_logits(loaded, config)[task], logits, msg=task)
        torch.testing.assert_close(_logits(merged, config)[task], logits, atol=1e-5, rtol=1e-4, msg=task)


def test_lora_with_gradient_surgery_keeps_heads_out_of_the_shared_buffers(tmp_path, base, config, tokenizer):
    model = add_lora(MultiTaskBertModel.from_pretrained(base))
    trainer = MultiTaskTrainer(model=model, args=trainer_args(tmp_path / "run", max_steps=2,
                                                              sampling_strategy="concurrent", grad_surgery="pcgrad"),
                               train_dataset=task_datasets(config, {"sst": 16, "quora": 16, "sts": 16}),
                               processing_class=tokenizer)
    shared = {id(p) for p in trainer.surgery.shared}
    heads = [p for n, p in model.named_parameters() if p.requires_grad and "classifier" in n]
    assert heads and not any(id(p) in shared for p in heads)
    trainer.train()
