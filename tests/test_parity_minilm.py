"""Parity with transformers.BertModel on the real all-MiniLM-L6-v2 weights (fp32)."""

import pytest
import torch
from _helpers import REAL_SENTENCES
from transformers import BertModel

from hf_mtbert import MultiTaskBertModel


@pytest.fixture(scope="module")
def models(minilm_path):
    ref = BertModel.from_pretrained(minilm_path, attn_implementation="sdpa").eval()
    ours = MultiTaskBertModel.from_pretrained(minilm_path).eval()
    return ref, ours


@pytest.fixture(scope="module")
def batch(minilm_tokenizer):
    encoded = minilm_tokenizer(REAL_SENTENCES, padding=True, return_tensors="pt")
    assert not bool(encoded["attention_mask"].all()), "the batch must contain padding"
    return dict(encoded)


def test_every_encoder_weight_loaded(models):
    ref, ours = models
    for name, tensor in ref.state_dict().items():
        torch.testing.assert_close(ours.bert.state_dict()[name], tensor, atol=0, rtol=0)


@pytest.mark.parametrize("unpad", [True, False])
def test_outputs_match(models, batch, unpad):
    ref, ours = models
    ours.config.unpad_inputs = unpad
    try:
        with torch.no_grad():
            expected, got = ref(**batch), ours.bert(**batch)
    finally:
        ours.config.unpad_inputs = True
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(got.last_hidden_state[real], expected.last_hidden_state[real], atol=1e-5, rtol=0)
    torch.testing.assert_close(got.pooler_output, expected.pooler_output, atol=1e-5, rtol=0)
    if not unpad:  # without packing, padded positions carry BERT's values too
        torch.testing.assert_close(got.last_hidden_state, expected.last_hidden_state, atol=1e-5, rtol=0)


def test_eager_attention_matches(models, batch):
    ref, ours = models
    with torch.no_grad():
        expected = ref(**batch)
        got = ours.bert(**batch, output_attentions=True)
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(got.last_hidden_state[real], expected.last_hidden_state[real], atol=1e-5, rtol=0)


def test_gradients_match(models, batch):
    ref, ours = models
    mask = batch["attention_mask"]
    weights = torch.randn(*mask.shape, ref.config.hidden_size, generator=torch.Generator().manual_seed(0))

    def loss(out):  # depends on every real position and the pooler
        return (out.last_hidden_state * weights * mask.unsqueeze(-1)).sum() + out.pooler_output.pow(2).sum()

    for m in (ref, ours):
        m.zero_grad(set_to_none=True)
    loss(ref(**batch)).backward()
    loss(ours.bert(**batch)).backward()
    ours_grads = dict(ours.bert.named_parameters())
    checked = 0
    for name, p in ref.named_parameters():
        scale = p.grad.abs().max().clamp(min=1.0)
        torch.testing.assert_close(ours_grads[name].grad / scale, p.grad / scale, atol=1e-5, rtol=0, msg=name)
        checked += 1
    assert checked == len(ours_grads) == 103
