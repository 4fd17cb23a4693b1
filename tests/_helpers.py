"""Shared test inputs (fixtures that are plain values)."""

import torch

from hf_mtbert import MultiTaskBertConfig

REAL_SENTENCES = [
    "It 's a lovely film with lovely performances by Buy and Accorsi .",
    "No one goes unindicted here , which is probably for the best .",
    "ok",
    "The acting , costumes , music , cinematography and sound are all astounding given the production 's "
    "austere locales .",
    "A man is playing a guitar.",
]


def random_batch(batch: int = 4, length: int = 10, vocab: int = 99, seed: int = 0, pad: bool = True):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    if pad:
        lengths = torch.randint(2, length, (batch,), generator=g)
        lengths[0] = length
        mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
        ids = ids * mask
    return ids, mask


def with_overrides(config: MultiTaskBertConfig, **changes) -> MultiTaskBertConfig:
    """A copy of `config` with some fields changed (validated like any new config)."""
    return MultiTaskBertConfig(**{**config.to_dict(), **changes})


def no_dropout(config: MultiTaskBertConfig) -> MultiTaskBertConfig:
    return with_overrides(config, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def rounded(value, digits: int = 5):
    """JSON-like output with every float rounded: for comparing pipeline results across processes."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v, digits) for v in value]
    return value
