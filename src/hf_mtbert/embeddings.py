"""Sentence-embedding quality of any checkpoint: alignment and uniformity (Wang & Isola, ICML 2020) and the STS
Spearman correlation of plain cosine similarity.

- alignment = E_(x, y) positive pairs ‖f(x) − f(y)‖₂^α on L2-normalised embeddings (α = 2): lower is better; the
  positive pairs are the STS pairs with a gold score of at least 4 out of 5, as SimCSE measures it.
- uniformity = log E_(x, y) exp(−t ‖f(x) − f(y)‖₂²) over all pairs of distinct sentences (t = 2): lower is better.
- STS Spearman: the rank correlation between cos(f(a), f(b)) and the gold scores, with no trained head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy import stats
from tqdm.auto import tqdm

from .modeling_mtbert import pool


def alignment(x: torch.Tensor, y: torch.Tensor, alpha: float = 2.0) -> float:
    """Mean ‖x̂ᵢ − ŷᵢ‖^α of the normalised rows of two (N, H) tensors of positive pairs."""
    if x.shape != y.shape or x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"alignment needs two (N, H) tensors of the same shape, N > 0; got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    x, y = F.normalize(x.double(), dim=-1), F.normalize(y.double(), dim=-1)
    return float((x - y).norm(dim=1).pow(alpha).mean())


def uniformity(x: torch.Tensor, t: float = 2.0) -> float:
    """log of the mean Gaussian potential exp(−t‖x̂ᵢ − x̂ⱼ‖²) over all pairs i < j of normalised rows."""
    if x.dim() != 2 or x.shape[0] < 2:
        raise ValueError(f"uniformity needs an (N, H) tensor with N >= 2 rows, got {tuple(x.shape)}")
    x = F.normalize(x.double(), dim=-1)
    return float(torch.pdist(x).pow(2).mul(-t).exp().mean().log())


@torch.no_grad()
def encode_sentences(model, tokenizer, sentences: list[str], pooling: str = "mean", batch_size: int = 64,
                     max_length: int = 128, progress: bool = True) -> torch.Tensor:
    """(N, H) fp32 embeddings of `sentences` from `model.bert` (a MultiTaskBertModel) or any BERT-like model that
    returns `last_hidden_state`/`pooler_output`, pooled by `pooling` ("mean" or "cls")."""
    was_training = model.training
    model.eval()
    encoder = getattr(model, "bert", model)
    device = next(model.parameters()).device
    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))  # similar lengths share a batch
    out = torch.empty(len(sentences), model.config.hidden_size)
    try:
        for start in tqdm(range(0, len(order), batch_size), desc="Encoding", disable=not progress):
            rows = order[start:start + batch_size]
            batch = tokenizer([sentences[i] for i in rows], padding=True, truncation=True, max_length=max_length,
                              return_tensors="pt").to(device)
            output = encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                             token_type_ids=batch.get("token_type_ids"))
            out[rows] = pool(output, batch["attention_mask"], pooling).float().cpu()
    finally:
        model.train(was_training)
    return out


def embedding_quality(model, tokenizer, sentences_a: list[str], sentences_b: list[str], scores: list[float],
                      pooling: str = "mean", positive_threshold: float = 4.0, batch_size: int = 64,
                      progress: bool = True) -> dict[str, float]:
    """Alignment (pairs scored >= `positive_threshold`), uniformity (all distinct sentences) and the Spearman
    correlation of cosine similarity with `scores`, for sentence pairs such as the STS dev set."""
    if not len(sentences_a) == len(sentences_b) == len(scores) or not scores:
        raise ValueError(f"give as many sentence pairs as scores, at least one; got {len(sentences_a)}, "
                         f"{len(sentences_b)} and {len(scores)}")
    unique = sorted(set(sentences_a) | set(sentences_b))
    index = {s: i for i, s in enumerate(unique)}
    emb = encode_sentences(model, tokenizer, unique, pooling, batch_size, progress=progress)
    a = emb[[index[s] for s in sentences_a]]
    b = emb[[index[s] for s in sentences_b]]
    gold = torch.tensor(scores, dtype=torch.float64)
    cosine = F.cosine_similarity(a.double(), b.double(), dim=-1)
    positive = gold >= positive_threshold
    if not bool(positive.any()):
        raise ValueError(f"no pair has a score >= {positive_threshold}; alignment needs positive pairs")
    return {
        "sts_spearman_cosine": float(stats.spearmanr(cosine.numpy(), gold.numpy()).statistic),
        "alignment": alignment(a[positive], b[positive]),
        "uniformity": uniformity(emb),
        "positive_pairs": int(positive.sum()),
        "sentences": len(unique),
    }


__all__ = ["alignment", "embedding_quality", "encode_sentences", "uniformity"]
