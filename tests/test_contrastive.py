"""Contrastive and MLM task kinds: the losses against hand computation, the heads, masking, embedding metrics."""

import math

import numpy as np
import pytest
import torch
from _helpers import random_batch, with_overrides
from transformers import BertConfig, BertForMaskedLM, DataCollatorForLanguageModeling

from hf_mtbert import MultiTaskBertConfig, MultiTaskBertModel
from hf_mtbert.embeddings import alignment, embedding_quality, uniformity
from hf_mtbert.modeling_mtbert import contrastive_loss, supervised_contrastive_loss

SIMCSE = {"name": "simcse", "kind": "contrastive", "pooling": "mean"}
NLI = {"name": "nli", "kind": "contrastive", "input": "pair", "pooling": "mean"}
SUPCON = {"name": "supcon", "kind": "contrastive", "objective": "label", "pooling": "mean"}
MLM = {"name": "mlm", "kind": "mlm"}


def _cos(a, b):
    return float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b))


def _hand_infonce(q, k, tau, negatives=None):
    total = 0.0
    for i in range(len(q)):
        logits = [_cos(q[i], k[j]) / tau for j in range(len(k))]
        if negatives is not None:
            logits += [_cos(q[i], n) / tau for n in negatives]
        total += -(logits[i] - math.log(sum(math.exp(x) for x in logits)))
    return total / len(q)


def test_contrastive_loss_matches_a_hand_computation():
    g = torch.Generator().manual_seed(0)
    q, k, n = (torch.randn(4, 3, generator=g) for _ in range(3))
    for tau in (0.05, 0.5):
        assert float(contrastive_loss(q, k, tau)) == pytest.approx(_hand_infonce(q.numpy(), k.numpy(), tau), rel=1e-5)
        assert float(contrastive_loss(q, k, tau, negatives=n)) == pytest.approx(
            _hand_infonce(q.numpy(), k.numpy(), tau, n.numpy()), rel=1e-5)


def test_positives_are_on_the_diagonal_and_temperature_sharpens():
    q = torch.eye(4) + 0.01
    aligned = contrastive_loss(q, q.clone(), 0.05)
    shuffled = contrastive_loss(q, q[[1, 2, 3, 0]], 0.05)
    assert float(aligned) < 1e-6 < 1.0 < float(shuffled)
    # with orthogonal keys the logits are 1/τ on the diagonal and 0 elsewhere: loss = log(1 + 3 e^{-1/τ})
    basis = torch.eye(4)
    for tau in (0.05, 1.0, 5.0):
        assert float(contrastive_loss(basis, basis, tau)) == pytest.approx(
            math.log(1 + 3 * math.exp(-1 / tau)), rel=1e-6, abs=1e-7)
    # cosine similarity: scaling an embedding changes nothing
    assert float(contrastive_loss(q * 7.0, q, 0.1)) == pytest.approx(float(contrastive_loss(q, q, 0.1)), rel=1e-6)


def test_hard_negatives_join_the_denominator():
    basis = torch.eye(3)
    # each query's hard negative equals its positive: the positive's share of the softmax halves
    with_copies = contrastive_loss(basis, basis, 1.0, negatives=basis.clone())
    expected = -math.log(math.e / (2 * math.e + 4))  # two logits of 1, four of 0
    assert float(with_copies) == pytest.approx(expected, rel=1e-6)


def _hand_supcon(z, labels, tau):
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    losses = []
    for i in range(len(z)):
        others = [j for j in range(len(z)) if j != i]
        positives = [j for j in others if labels[j] == labels[i]]
        if not positives:
            continue
        denominator = sum(math.exp(z[i] @ z[a] / tau) for a in others)
        losses.append(-np.mean([math.log(math.exp(z[i] @ z[p] / tau) / denominator) for p in positives]))
    return float(np.mean(losses))


def test_supervised_contrastive_loss_matches_a_hand_computation():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(6, 4, generator=g)
    labels = torch.tensor([0, 1, 0, 2, 1, 0])  # label 2 has no positive: that anchor is left out
    for tau in (0.1, 1.0):
        got = float(supervised_contrastive_loss(z, labels, tau))
        assert got == pytest.approx(_hand_supcon(z.numpy(), labels.numpy(), tau), rel=1e-5)


def test_supervised_contrastive_loss_without_positives_is_zero_and_differentiable():
    z = torch.randn(3, 4, requires_grad=True)
    loss = supervised_contrastive_loss(z, torch.tensor([0, 1, 2]), 0.1)
    loss.backward()
    assert loss.item() == 0.0 and z.grad is not None and float(z.grad.abs().sum()) == 0.0


def test_losses_are_fp32_under_bf16_autocast():
    q, k = torch.randn(4, 8).bfloat16(), torch.randn(4, 8).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = contrastive_loss(q, k, 0.05)
        sup = supervised_contrastive_loss(q, torch.tensor([0, 0, 1, 1]), 0.05)
    assert loss.dtype == sup.dtype == torch.float32
    # the same numbers as without autocast: nothing was rounded to bf16 on the way
    assert float(loss) == pytest.approx(float(contrastive_loss(q.float(), k.float(), 0.05)), rel=1e-6)
    assert float(sup) == pytest.approx(float(supervised_contrastive_loss(q.float(), torch.tensor([0, 0, 1, 1]), 0.05)),
                                       rel=1e-6)


# --- config ------------------------------------------------------------------------------------------------------
def test_contrastive_and_mlm_specs_get_their_defaults():
    config = MultiTaskBertConfig(tasks=[SIMCSE, NLI, SUPCON, MLM])
    simcse, nli, supcon, mlm = (config.get_task(t) for t in ("simcse", "nli", "supcon", "mlm"))
    assert (simcse.objective, simcse.temperature, simcse.projection) == ("unsupervised", 0.05, "mlp")
    assert (nli.objective, nli.pair_encoding, nli.combine) == ("supervised", "bi", None)
    assert supcon.objective == "label" and mlm.mlm_probability == 0.15
    assert mlm.temperature is None and simcse.mlm_probability is None


@pytest.mark.parametrize("task, message", [
    ({**SIMCSE, "num_labels": 3}, "no output classes"),
    ({**SIMCSE, "objective": "supervised"}, "set input='pair'"),
    ({**NLI, "objective": "unsupervised"}, "takes one sentence per row"),
    ({**NLI, "pair_encoding": "cross"}, "encodes each sentence on its own"),
    ({**SIMCSE, "temperature": 0}, "temperature=0 must be > 0"),
    ({**SIMCSE, "projection": "linear"}, "projection='linear' is not supported"),
    ({"name": "sst", "num_labels": 5, "temperature": 0.1}, "apply to contrastive tasks only"),
    ({"name": "sst", "num_labels": 5, "mlm_probability": 0.1}, "applies to kind='mlm' only"),
    ({**MLM, "mlm_probability": 1.0}, "must be in \\(0, 1\\)"),
    ({**MLM, "input": "pair"}, "one text per row"),
])
def test_bad_contrastive_and_mlm_specs_are_refused(task, message):
    with pytest.raises(ValueError, match=message):
        MultiTaskBertConfig(tasks=[task])


def test_one_mlm_task_at_most():
    with pytest.raises(ValueError, match="keep one MLM task"):
        MultiTaskBertConfig(tasks=[MLM, {**MLM, "name": "mlm2"}])


# --- model -------------------------------------------------------------------------------------------------------
def _model(tiny_config, *tasks, **overrides):
    torch.manual_seed(0)
    return MultiTaskBertModel(with_overrides(tiny_config, tasks=list(tasks), **overrides))


def test_unsupervised_simcse_uses_two_dropout_views_while_training(tiny_config):
    model = _model(tiny_config, SIMCSE, hidden_dropout_prob=0.1)
    ids, mask = random_batch(4, 9)
    model.train()
    out = model(task="simcse", input_ids=ids, attention_mask=mask)
    assert out.embeddings.shape == (8, tiny_config.hidden_size) and out.logits.shape == (4, tiny_config.hidden_size)
    first, second = out.embeddings.chunk(2)
    assert not torch.allclose(first, second)  # different dropout masks
    z = model.heads["simcse"].projection(out.embeddings)
    torch.testing.assert_close(out.loss, contrastive_loss(*z.chunk(2), 0.05))
    model.eval()
    plain = model(task="simcse", input_ids=ids, attention_mask=mask)
    torch.testing.assert_close(plain.logits, model.encode(ids, mask, pooling="mean"))  # no projection at inference


def test_supervised_simcse_takes_hard_negatives(tiny_config):
    model = _model(tiny_config, NLI, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0).train()
    a, mask_a = random_batch(4, 9, seed=1)
    b, mask_b = random_batch(4, 7, seed=2)
    c, mask_c = random_batch(4, 8, seed=3)
    pair = model(task="nli", input_ids=a, attention_mask=mask_a, input_ids_b=b, attention_mask_b=mask_b)
    triplet = model(task="nli", input_ids=a, attention_mask=mask_a, input_ids_b=b, attention_mask_b=mask_b,
                    input_ids_c=c, attention_mask_c=mask_c)
    project = model.heads["nli"].projection
    za, zb, zc = (project(model.encode(x, m, pooling="mean")) for x, m in ((a, mask_a), (b, mask_b), (c, mask_c)))
    torch.testing.assert_close(pair.loss, contrastive_loss(za, zb, 0.05), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(triplet.loss, contrastive_loss(za, zb, 0.05, negatives=zc), atol=1e-5, rtol=1e-5)
    assert triplet.loss.item() > pair.loss.item()
    with pytest.raises(ValueError, match="pass the positive as input_ids_b"):
        model(task="nli", input_ids=a, attention_mask=mask_a)


def test_label_supervised_contrastive_needs_integer_labels(tiny_config):
    model = _model(tiny_config, SUPCON).train()
    ids, mask = random_batch(4, 9)
    out = model(task="supcon", input_ids=ids, attention_mask=mask, labels=torch.tensor([0, 1, 0, 1]))
    assert math.isfinite(out.loss.item()) and out.embeddings.shape[0] == 8
    with pytest.raises(ValueError, match="needs labels"):
        model(task="supcon", input_ids=ids, attention_mask=mask)
    with pytest.raises(ValueError, match="integer labels"):
        model(task="supcon", input_ids=ids, attention_mask=mask, labels=torch.rand(4))
    simcse = _model(tiny_config, SIMCSE)
    with pytest.raises(ValueError, match="takes no labels"):
        simcse(task="simcse", input_ids=ids, attention_mask=mask, labels=torch.tensor([0, 1, 0, 1]))


def test_mlm_head_loads_from_a_bert_for_masked_lm_checkpoint(tmp_path, tiny_config):
    torch.manual_seed(0)
    reference = BertForMaskedLM(BertConfig(**{k: getattr(tiny_config, k) for k in (
        "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
        "max_position_embeddings")}, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)).eval()
    with torch.no_grad():
        reference.cls.predictions.bias.normal_()  # not the zero it starts as: loading must carry it over
    reference.save_pretrained(tmp_path)
    config = MultiTaskBertConfig.from_pretrained(tmp_path, tasks=[MLM])
    model = MultiTaskBertModel.from_pretrained(tmp_path, config=config).eval()
    torch.testing.assert_close(model.cls.predictions.bias, reference.cls.predictions.bias)
    ids, mask = random_batch(3, 8)
    expected = reference(input_ids=ids, attention_mask=mask).logits
    got = model(task="mlm", input_ids=ids, attention_mask=mask).logits
    keep = mask.bool()
    torch.testing.assert_close(got[keep], expected[keep], atol=1e-5, rtol=1e-5)
    labels = torch.full_like(ids, -100)
    labels[0, 2], labels[2, 1] = 7, 11
    out = model(task="mlm", input_ids=ids, attention_mask=mask, labels=labels)
    manual = torch.nn.functional.cross_entropy(expected[labels != -100], labels[labels != -100])
    assert out.logits.shape == (2, tiny_config.vocab_size)
    torch.testing.assert_close(out.loss, manual, atol=1e-5, rtol=1e-5)
    # the decoder is the word-embedding matrix itself: a change to one is a change to the other
    with torch.no_grad():
        model.bert.embeddings.word_embeddings.weight[5] += torch.randn(tiny_config.hidden_size)
    assert not torch.allclose(model(task="mlm", input_ids=ids, attention_mask=mask).logits[..., 5], got[..., 5])


def test_mlm_labels_are_checked(tiny_config):
    model = _model(tiny_config, MLM)
    ids, mask = random_batch(2, 6)
    with pytest.raises(ValueError, match="must have the input's shape"):
        model(task="mlm", input_ids=ids, attention_mask=mask, labels=torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"must lie in \[0, 99\)"):
        model(task="mlm", input_ids=ids, attention_mask=mask, labels=torch.full_like(ids, 500))


def test_masking_follows_bert_80_10_10(minilm_tokenizer):
    tokenizer = minilm_tokenizer
    torch.manual_seed(0)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
    text = " ".join(["the quick brown fox jumps over the lazy dog"] * 12)
    rows = [tokenizer(text, truncation=True, max_length=128) for _ in range(200)]
    batch = collator(rows)
    original = torch.tensor([r["input_ids"] for r in rows])
    chosen = batch["labels"] != -100
    special = torch.isin(original, torch.tensor(tokenizer.all_special_ids))
    assert not bool((chosen & special).any())
    assert torch.equal(batch["labels"][chosen], original[chosen])
    share = float(chosen.sum()) / float((~special).sum())
    masked = float((batch["input_ids"][chosen] == tokenizer.mask_token_id).float().mean())
    kept = float((batch["input_ids"][chosen] == original[chosen]).float().mean())
    assert share == pytest.approx(0.15, abs=0.01)
    assert masked == pytest.approx(0.8, abs=0.02) and kept == pytest.approx(0.1, abs=0.02)
    assert 1 - masked - kept == pytest.approx(0.1, abs=0.02)  # random replacements (a few hit the same token)


# --- embedding metrics -------------------------------------------------------------------------------------------
def test_alignment_and_uniformity_on_constructed_embeddings():
    x = torch.randn(5, 3)
    assert alignment(x, x * 3.0) == pytest.approx(0.0, abs=1e-12)  # normalised first: same direction, distance 0
    assert alignment(x, -x) == pytest.approx(4.0)  # antipodal: ‖2x̂‖² = 4
    basis = torch.eye(4)  # every pair at squared distance 2: log e^{-2·2}
    assert uniformity(basis) == pytest.approx(-4.0)
    assert uniformity(torch.tensor([[1.0, 0.0], [-1.0, 0.0]])) == pytest.approx(-8.0)
    assert uniformity(torch.ones(3, 2)) == pytest.approx(0.0)  # collapsed: the worst value
    with pytest.raises(ValueError, match="N >= 2"):
        uniformity(torch.ones(1, 2))


def test_embedding_quality_of_a_model(tiny_config, minilm_tokenizer):
    model = _model(tiny_config, SIMCSE, vocab_size=minilm_tokenizer.vocab_size)
    a = ["a cat sat", "the dog ran", "birds fly high", "rain falls down"]
    b = ["a cat sat down", "a dog ran", "fish swim deep", "snow is white"]
    result = embedding_quality(model, minilm_tokenizer, a, b, [5.0, 4.2, 0.5, 1.0], progress=False)
    assert result["positive_pairs"] == 2 and result["sentences"] == 8
    assert -1.0 <= result["sts_spearman_cosine"] <= 1.0 and 0.0 <= result["alignment"] <= 4.0
    assert result["uniformity"] <= 0.0
    with pytest.raises(ValueError, match="no pair has a score >= 4"):
        embedding_quality(model, minilm_tokenizer, a, b, [1.0, 1.0, 1.0, 1.0], progress=False)
