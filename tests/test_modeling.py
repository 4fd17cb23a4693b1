"""Unit tests on tiny random configs: parity with transformers.BertModel, heads, losses, bad inputs."""

import math

import pytest
import torch
import torch.nn.functional as F
from _helpers import no_dropout, random_batch, with_overrides
from transformers import BertConfig, BertForSequenceClassification, BertModel

from hf_mtbert import MultiTaskBertConfig, MultiTaskBertModel


def bert_twin(config: MultiTaskBertConfig) -> BertConfig:
    keys = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
            "max_position_embeddings", "type_vocab_size", "layer_norm_eps")
    return BertConfig(**{k: getattr(config, k) for k in keys})


@pytest.fixture
def model(tiny_config):
    torch.manual_seed(0)
    return MultiTaskBertModel(tiny_config).eval()


@pytest.fixture
def bert_dir(tmp_path, tiny_config):
    """A random transformers.BertModel saved to disk (keys without the `bert.` prefix)."""
    torch.manual_seed(1)
    ref = BertModel(bert_twin(tiny_config), add_pooling_layer=True).eval()
    ref.save_pretrained(tmp_path / "bert")
    return tmp_path / "bert", ref


def test_parameter_names_match_bert(model, bert_dir):
    _, ref = bert_dir
    ours = {k.removeprefix("bert.") for k in model.state_dict() if k.startswith("bert.")}
    assert ours == set(ref.state_dict())


@pytest.mark.parametrize("unpad", [True, False])
def test_parity_with_transformers_tiny(bert_dir, tiny_config, unpad):
    path, ref = bert_dir
    ours = MultiTaskBertModel.from_pretrained(path, tasks=tiny_config.tasks, unpad_inputs=unpad).eval()
    ids, mask = random_batch(batch=5, length=12)
    types = torch.zeros_like(ids)
    types[:, 6:] = 1
    with torch.no_grad():
        expected = ref(input_ids=ids, attention_mask=mask, token_type_ids=types)
        got = ours.bert(input_ids=ids, attention_mask=mask, token_type_ids=types)
    real = mask.bool()
    torch.testing.assert_close(got.last_hidden_state[real], expected.last_hidden_state[real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.pooler_output, expected.pooler_output, atol=1e-5, rtol=1e-5)
    if unpad:
        assert bool((got.last_hidden_state[~real] == 0).all())  # padded rows are zeros by contract
    else:
        torch.testing.assert_close(got.last_hidden_state, expected.last_hidden_state, atol=1e-5, rtol=1e-5)


def test_loads_checkpoint_with_bert_prefix(tmp_path, tiny_config):
    torch.manual_seed(2)
    ref = BertForSequenceClassification(bert_twin(tiny_config)).eval()
    ref.save_pretrained(tmp_path)
    ours = MultiTaskBertModel.from_pretrained(tmp_path, tasks=tiny_config.tasks)
    for name, tensor in ref.bert.state_dict().items():
        torch.testing.assert_close(ours.bert.state_dict()[name], tensor, atol=0, rtol=0)


def test_eager_attention_matches_sdpa_and_returns_weights(model):
    ids, mask = random_batch()
    with torch.no_grad():
        sdpa = model.bert(ids, mask)
        eager = model.bert(ids, mask, output_attentions=True, output_hidden_states=True)
    torch.testing.assert_close(eager.last_hidden_state, sdpa.last_hidden_state, atol=1e-5, rtol=1e-5)
    assert len(eager.attentions) == 2 and eager.attentions[0].shape == (4, 4, 10, 10)
    assert len(eager.hidden_states) == 3
    probs = eager.attentions[0]
    torch.testing.assert_close(probs.sum(-1), torch.ones(4, 4, 10))
    assert float(probs[1][:, :, mask[1] == 0].abs().max()) < 1e-6  # no weight on padding


def test_classification_head_and_label_smoothing(model):
    ids, mask = random_batch()
    labels = torch.tensor([0, 4, 2, 1])
    out = model(task="sst", input_ids=ids, attention_mask=mask, labels=labels)
    assert out.logits.shape == (4, 5)
    pooled = model.bert(ids, mask).pooler_output  # "cls" pooling = BERT pooler output
    expected_logits = model.heads["sst"].classifier(pooled)
    torch.testing.assert_close(out.logits, expected_logits)
    # cross-entropy with label smoothing 0.1, by hand
    logp = expected_logits.log_softmax(-1)
    eps, C = 0.1, 5
    by_hand = -((1 - eps) * logp.gather(1, labels[:, None]).squeeze(1) + eps / C * logp.sum(-1)).mean()
    torch.testing.assert_close(out.loss, by_hand)
    assert not math.isclose(float(out.loss.detach()), float(F.cross_entropy(expected_logits, labels).detach()), rel_tol=1e-4)


def test_cross_pair_mean_pooling(model):
    ids, mask = random_batch(seed=3)
    out = model(task="quora", input_ids=ids, attention_mask=mask, labels=torch.tensor([0, 1, 1, 0]))
    hidden = model.bert(ids, mask).last_hidden_state
    m = mask.unsqueeze(-1).float()
    mean = (hidden * m).sum(1) / m.sum(1)
    torch.testing.assert_close(out.embeddings, mean)
    torch.testing.assert_close(out.logits, model.heads["quora"].classifier(mean))
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, torch.tensor([0, 1, 1, 0])))


def test_bi_concat_head(model):
    ids_a, mask_a = random_batch(seed=4, length=8)
    ids_b, mask_b = random_batch(seed=5, length=11)
    out = model(task="para", input_ids=ids_a, attention_mask=mask_a, input_ids_b=ids_b, attention_mask_b=mask_b)
    u = model.bert(ids_a, mask_a).pooler_output
    v = model.bert(ids_b, mask_b).pooler_output
    features = torch.cat([u, v, (u - v).abs(), u * v], dim=-1)
    torch.testing.assert_close(out.logits, model.heads["para"].classifier(features), atol=1e-5, rtol=1e-5)
    assert out.logits.shape == (4, 2) and out.embeddings.shape == (8, 32)


def test_bi_cosine_regression_scaled_and_clamped(model):
    ids_a, mask_a = random_batch(seed=6)
    ids_b, mask_b = random_batch(seed=7)
    labels = torch.tensor([0.0, 1.5, 5.0, 3.2])
    out = model(task="sts", input_ids=ids_a, attention_mask=mask_a, input_ids_b=ids_b, attention_mask_b=mask_b,
                labels=labels)
    u, v = model.encode(ids_a, mask_a, pooling="mean"), model.encode(ids_b, mask_b, pooling="mean")
    raw = F.cosine_similarity(u, v) * 5
    assert out.logits.shape == (4, 1)
    torch.testing.assert_close(out.logits.squeeze(1), raw.clamp(0, 5), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.loss, F.mse_loss(raw, labels), atol=1e-5, rtol=1e-5)
    # the same pair twice scores the top of the range
    same = model(task="sts", input_ids=ids_a, attention_mask=mask_a, input_ids_b=ids_a, attention_mask_b=mask_a)
    torch.testing.assert_close(same.logits, torch.full((4, 1), 5.0))


def test_linear_regression_head_clamps_predictions_not_loss(model):
    head = model.heads["score"]
    with torch.no_grad():
        head.classifier.bias.fill_(10.0)  # push predictions above the range
    ids, mask = random_batch()
    labels = torch.tensor([1.0, 2.0, 3.0, 4.0])
    out = model(task="score", input_ids=ids, attention_mask=mask, labels=labels)
    raw = head.classifier(model.bert(ids, mask).pooler_output).squeeze(1)
    assert bool((out.logits == 5.0).all())
    torch.testing.assert_close(out.loss, F.mse_loss(raw, labels))  # gradient still flows above the range


def test_loss_backward_reaches_encoder_and_head(model):
    model.train()
    ids, mask = random_batch()
    out = model(task="sst", input_ids=ids, attention_mask=mask, labels=torch.tensor([0, 1, 2, 3]))
    out.loss.backward()
    assert model.heads["sst"].classifier.weight.grad.abs().sum() > 0
    assert model.bert.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0
    assert model.heads["quora"].classifier.weight.grad is None


def test_unpad_gradients_match_padded_path(tiny_config):
    torch.manual_seed(0)
    packed = MultiTaskBertModel(tiny_config).eval()
    padded = MultiTaskBertModel(with_overrides(tiny_config, unpad_inputs=False)).eval()
    padded.load_state_dict(packed.state_dict())
    ids, mask = random_batch(batch=6, length=16, seed=9)
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    for m in (packed, padded):
        m(task="sst", input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
    for (name, a), (_, b) in zip(packed.named_parameters(), padded.named_parameters(), strict=True):
        if a.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=1e-4, msg=name)


def test_gradient_checkpointing_same_gradients(tiny_config):
    config = no_dropout(tiny_config)
    torch.manual_seed(0)
    a = MultiTaskBertModel(config).train()
    b = MultiTaskBertModel(config).train()
    b.load_state_dict(a.state_dict())
    b.activation_checkpointing_enable()
    assert b.bert.encoder.gradient_checkpointing
    ids, mask = random_batch()
    labels = torch.tensor([0, 1, 2, 3])
    a(task="sst", input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
    b(task="sst", input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
    torch.testing.assert_close(a.bert.embeddings.word_embeddings.weight.grad,
                               b.bert.embeddings.word_embeddings.weight.grad)


def test_return_dict_false_gives_tuple(model):
    ids, mask = random_batch()
    out = model(task="sst", input_ids=ids, attention_mask=mask, labels=torch.tensor([0, 1, 2, 3]), return_dict=False)
    assert isinstance(out, tuple) and out[0].dim() == 0 and out[1].shape == (4, 5)


# ---------------------------------------------------------------- bad inputs


def test_unknown_task_lists_known(model):
    ids, mask = random_batch()
    with pytest.raises(ValueError, match=r"unknown task 'nli'; this model has tasks \['sst', 'quora', 'para'"):
        model(task="nli", input_ids=ids, attention_mask=mask)
    with pytest.raises(ValueError, match="task is required"):
        model(input_ids=ids, attention_mask=mask)


@pytest.mark.parametrize(
    "task, labels, message",
    [
        ("sst", torch.tensor([0.0, 1.0, 2.0, 3.0]), "expects integer class labels in \\[0, 5\\), got dtype torch.float32"),
        ("sst", torch.tensor([0, 1, 5, 3]), "expects class labels in \\[0, 5\\), got values in \\[0, 5\\]"),
        ("sst", torch.tensor([0, -3, 1, 1]), "got values in \\[-3, 1\\]"),
        ("score", torch.tensor([0, 1, 2, 3]), "expects float regression labels, got dtype torch.int64"),
        ("score", torch.tensor([0.0, 1.0, 7.0, 3.0]), "expects labels in \\[0, 5\\], got values in \\[0, 7\\]"),
        ("score", torch.tensor([0.0, float("nan"), 1.0, 3.0]), "labels contain NaN"),
        ("sst", torch.tensor([0, 1]), "got 2 labels for a batch of 4"),
    ],
)
def test_bad_labels(model, task, labels, message):
    ids, mask = random_batch()
    with pytest.raises(ValueError, match=message):
        model(task=task, input_ids=ids, attention_mask=mask, labels=labels)


def test_ignore_index_labels_allowed(model):
    ids, mask = random_batch()
    out = model(task="sst", input_ids=ids, attention_mask=mask, labels=torch.tensor([0, -100, 2, -100]))
    assert torch.isfinite(out.loss)


def test_sequence_longer_than_position_table(model):
    ids = torch.ones(2, 65, dtype=torch.long)
    with pytest.raises(ValueError, match="sequence length 65 exceeds max_position_embeddings=64.*truncation=True"):
        model(task="sst", input_ids=ids)


def test_bad_input_shapes_and_values(model):
    ids, mask = random_batch()
    with pytest.raises(ValueError, match="input_ids must lie in \\[0, 99\\)"):
        model(task="sst", input_ids=ids + 200, attention_mask=mask)
    with pytest.raises(ValueError, match="attention_mask shape"):
        model(task="sst", input_ids=ids, attention_mask=mask[:, :5])
    empty = mask.clone()
    empty[2] = 0
    with pytest.raises(ValueError, match="no real token"):
        model(task="sst", input_ids=ids, attention_mask=empty)
    with pytest.raises(ValueError, match="drop input_ids_b"):
        model(task="sst", input_ids=ids, input_ids_b=ids)
    with pytest.raises(ValueError, match="pass input_ids_b"):
        model(task="sts", input_ids=ids, attention_mask=mask)
    with pytest.raises(ValueError, match="exactly one of input_ids or inputs_embeds"):
        model(task="sst")


def test_mismatched_config_raises(tmp_path, model, tiny_config):
    model.save_pretrained(tmp_path)
    bigger = with_overrides(tiny_config, hidden_size=64)
    with pytest.raises(Exception, match="size mismatch|mismatch"):
        MultiTaskBertModel.from_pretrained(tmp_path, config=bigger)


def test_fast_dropout_keeps_the_right_fraction_and_scales():
    from hf_mtbert.modeling_mtbert import MTBertDropout

    torch.manual_seed(0)
    drop = MTBertDropout(0.25)
    x = torch.ones(200_000, requires_grad=True)
    y = drop(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.75) < 0.005
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / 0.75))
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / 0.75)  # gradient flows through kept units only
    drop.eval()
    assert drop(x) is x


def test_training_attention_dropout_is_random_and_eval_is_not(tiny_config):
    config = with_overrides(tiny_config, attention_probs_dropout_prob=0.5, hidden_dropout_prob=0.0)
    model = MultiTaskBertModel(config)
    ids, mask = random_batch()
    model.train()
    a, b = model.bert(ids, mask).pooler_output, model.bert(ids, mask).pooler_output
    assert not torch.allclose(a, b)
    model.eval()
    torch.testing.assert_close(model.bert(ids, mask).pooler_output, model.bert(ids, mask).pooler_output)
