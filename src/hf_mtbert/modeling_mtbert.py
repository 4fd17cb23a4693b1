"""A BERT encoder written natively in PyTorch, with one head per task.

Parameter names follow `transformers.BertModel` exactly (`embeddings.word_embeddings`,
`encoder.layer.N.attention.self.query`, ...), under `base_model_prefix = "bert"`, so any BERT checkpoint loads
with `from_pretrained` and no renaming table.

This file is copied next to every checkpoint (remote code), so it imports only torch, transformers and
`configuration_mtbert`.

Shapes: B batch, L sequence length, H hidden size, nh heads, hs head size (H = nh * hs), N token rows
(B * L, or only the real tokens when a padded batch is packed), C classes.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils import ModelOutput
from transformers.utils.hub import is_offline_mode

from .configuration_mtbert import MultiTaskBertConfig, TaskSpec, hub_load_kwargs


@dataclass
class TokenLayout:
    """Where the token rows of a (B, L) batch live while it runs through the encoder.

    When `indices` is set, the batch is packed: only real (non-padding) tokens are rows, and `indices` holds their
    flat positions in B * L. `attn_mask` is the (B, 1, 1, L) boolean key mask, or None when nothing is padded.
    """

    batch_size: int
    seq_len: int
    indices: torch.Tensor | None = None
    attn_mask: torch.Tensor | None = None

    def to_padded(self, rows: torch.Tensor) -> torch.Tensor:
        """(N, D) token rows -> (B, L, D), zeros at padded positions."""
        B, L = self.batch_size, self.seq_len
        if self.indices is not None:
            rows = rows.new_zeros(B * L, rows.shape[-1]).index_copy(0, self.indices, rows)
        return rows.view(B, L, -1)

    def to_rows(self, padded: torch.Tensor) -> torch.Tensor:
        """(B, L, D) -> (N, D) token rows."""
        rows = padded.reshape(self.batch_size * self.seq_len, -1)
        return rows if self.indices is None else rows.index_select(0, self.indices)


class MTBertDropout(nn.Dropout):
    """nn.Dropout with a faster CPU path: a uniform draw compared in place, instead of `bernoulli_`.

    On CPU `bernoulli_` took about a quarter of a BERT training step; this mask costs about half as much. Same
    distribution (each unit kept with probability 1 - p, scaled by 1 / (1 - p)), another random stream.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu" or self.p == 1.0:
            return F.dropout(x, self.p, training=True)
        return x * torch.rand_like(x).ge_(self.p).mul_(1.0 / (1.0 - self.p))


class MTBertEmbeddings(nn.Module):
    """Word + position + token-type embeddings, then LayerNorm and dropout."""

    def __init__(self, config: MultiTaskBertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = MTBertDropout(config.hidden_dropout_prob)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,  # (B, L)
        token_type_ids: torch.Tensor | None = None,  # (B, L)
        position_ids: torch.Tensor | None = None,  # (B, L) or (1, L)
        inputs_embeds: torch.Tensor | None = None,  # (B, L, H)
    ) -> torch.Tensor:
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        B, L = inputs_embeds.shape[:2]
        device = inputs_embeds.device
        if position_ids is None:
            position_ids = torch.arange(L, device=device).unsqueeze(0)  # (1, L)
        if token_type_ids is None:
            token_type_ids = torch.zeros(B, L, dtype=torch.long, device=device)
        embeddings = inputs_embeds + self.token_type_embeddings(token_type_ids) + self.position_embeddings(position_ids)
        return self.dropout(self.LayerNorm(embeddings))  # (B, L, H)


class MTBertSelfAttention(nn.Module):
    """Multi-head self-attention. Q, K and V come from one fused matmul over the three weights."""

    def __init__(self, config: MultiTaskBertConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_size = config.hidden_size // config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = MTBertDropout(config.attention_probs_dropout_prob)

    def forward(
        self, hidden: torch.Tensor, layout: TokenLayout, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        # hidden: (N, H)
        projections = (self.query, self.key, self.value)
        if all(type(m) is nn.Linear for m in projections):
            # (H, 3H), built transposed and contiguous: MKL runs this GEMM ~20% faster than F.linear's transposed view
            weight_t = torch.cat([m.weight.t() for m in projections], dim=1)
            bias = torch.cat([m.bias for m in projections])  # (3H,)
            qkv = torch.addmm(bias, hidden, weight_t)  # (N, 3H)
        else:  # wrapped projections (LoRA adapters, quantized layers, ...) must run their own forward
            qkv = torch.cat([m(hidden) for m in projections], dim=-1)
        qkv = layout.to_padded(qkv)  # (B, L, 3H)
        B, L = layout.batch_size, layout.seq_len
        q, k, v = qkv.view(B, L, 3, self.num_heads, self.head_size).permute(2, 0, 3, 1, 4)  # 3 x (B, nh, L, hs)
        dropout_p = self.dropout.p if self.training else 0.0
        # SDPA on CPU has no fused kernel with dropout (it falls back to the math path), so there the eager path,
        # with the faster dropout mask, does the same work for less.
        if output_attentions or (dropout_p > 0 and q.device.type == "cpu"):
            context, probs = self._eager(q, k, v, layout.attn_mask)
        else:
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=layout.attn_mask, dropout_p=dropout_p)
            probs = None
        context = context.transpose(1, 2).reshape(B, L, -1)  # (B, L, H)
        return layout.to_rows(context), probs  # (N, H), (B, nh, L, L) or None

    def _eager(self, q, k, v, attn_mask):
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_size)  # (B, nh, L, L)
        if attn_mask is not None:
            scores = scores.masked_fill(~attn_mask, torch.finfo(scores.dtype).min)
        probs = scores.softmax(dim=-1)
        return self.dropout(probs) @ v, probs  # (B, nh, L, hs)


class MTBertSelfOutput(nn.Module):
    """Projection back to H, dropout, residual, LayerNorm: after attention (and, as MTBertOutput, after the FFN)."""

    def __init__(self, config: MultiTaskBertConfig, in_features: int | None = None):
        super().__init__()
        self.dense = nn.Linear(in_features or config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = MTBertDropout(config.hidden_dropout_prob)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden)) + residual)


class MTBertAttention(nn.Module):
    def __init__(self, config: MultiTaskBertConfig):
        super().__init__()
        self.self = MTBertSelfAttention(config)
        self.output = MTBertSelfOutput(config)

    def forward(self, hidden: torch.Tensor, layout: TokenLayout, output_attentions: bool = False):
        context, probs = self.self(hidden, layout, output_attentions)
        return self.output(context, hidden), probs


class MTBertIntermediate(nn.Module):
    """Feed-forward expansion H -> intermediate_size with the configured activation."""

    def __init__(self, config: MultiTaskBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = ACT2FN[config.hidden_act]

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.intermediate_act_fn(self.dense(hidden))


class MTBertOutput(MTBertSelfOutput):
    """Feed-forward contraction intermediate_size -> H, dropout, residual, LayerNorm."""

    def __init__(self, config: MultiTaskBertConfig):
        super().__init__(config, in_features=config.intermediate_size)


class MTBertLayer(nn.Module):
    """One transformer block: self-attention then feed-forward, each post-LayerNorm."""

    def __init__(self, config: MultiTaskBertConfig):
        super().__init__()
        self.attention = MTBertAttention(config)
        self.intermediate = MTBertIntermediate(config)
        self.output = MTBertOutput(config)

    def forward(self, hidden: torch.Tensor, layout: TokenLayout, output_attentions: bool = False):
        attended, probs = self.attention(hidden, layout, output_attentions)  # (N, H)
        return self.output(self.intermediate(attended), attended), probs


class MTBertEncoder(nn.Module):
    def __init__(self, config: MultiTaskBertConfig):
        super().__init__()
        self.layer = nn.ModuleList([MTBertLayer(config) for _ in range(config.num_hidden_layers)])
        self.gradient_checkpointing = False

    def forward(self, hidden: torch.Tensor, layout: TokenLayout, output_attentions=False, output_hidden_states=False):
        all_hidden = (layout.to_padded(hidden),) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layer:
            if self.gradient_checkpointing and self.training:
                checkpoint = getattr(self, "_gradient_checkpointing_func", None) or _checkpoint
                hidden, probs = checkpoint(layer.__call__, hidden, layout, output_attentions)
            else:
                hidden, probs = layer(hidden, layout, output_attentions)
            if output_hidden_states:
                all_hidden += (layout.to_padded(hidden),)
            if output_attentions:
                all_attentions += (probs,)
        return hidden, all_hidden, all_attentions


def _checkpoint(fn, *args):
    return torch.utils.checkpoint.checkpoint(fn, *args, use_reentrant=False)


class MTBertPooler(nn.Module):
    """BERT's pooler: dense + tanh on the first ([CLS]) token."""

    def __init__(self, config: MultiTaskBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()

    def forward(self, last_hidden: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(last_hidden[:, 0]))  # (B, H)


class MTBertModel(nn.Module):
    """The shared BERT encoder: embeddings, transformer layers, pooler."""

    def __init__(self, config: MultiTaskBertConfig):
        super().__init__()
        self.config = config
        self.embeddings = MTBertEmbeddings(config)
        self.encoder = MTBertEncoder(config)
        self.pooler = MTBertPooler(config)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,  # (B, L)
        attention_mask: torch.Tensor | None = None,  # (B, L), 1 = real token, 0 = padding
        token_type_ids: torch.Tensor | None = None,  # (B, L)
        position_ids: torch.Tensor | None = None,  # (B, L)
        inputs_embeds: torch.Tensor | None = None,  # (B, L, H)
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> BaseModelOutputWithPooling:
        keep = None if attention_mask is None else attention_mask.bool()  # (B, L)
        B, L = self._check_inputs(input_ids, keep, token_type_ids, inputs_embeds)
        layout = TokenLayout(B, L)
        if keep is not None and not bool(keep.all()):
            layout.attn_mask = keep[:, None, None, :]  # (B, 1, 1, L)
            if self.config.unpad_inputs:
                layout.indices = keep.flatten().nonzero().squeeze(1)  # (N,)
        embedded = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds)  # (B, L, H)
        hidden, all_hidden, all_attentions = self.encoder(
            layout.to_rows(embedded), layout, output_attentions, output_hidden_states
        )
        last_hidden = layout.to_padded(hidden)  # (B, L, H)
        return BaseModelOutputWithPooling(
            last_hidden_state=last_hidden,
            pooler_output=self.pooler(last_hidden),
            hidden_states=all_hidden,
            attentions=all_attentions,
        )

    def _check_inputs(self, input_ids, keep, token_type_ids, inputs_embeds) -> tuple[int, int]:
        config = self.config
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if input_ids is not None:
            if input_ids.dim() != 2:
                raise ValueError(f"input_ids must be (batch, seq_len), got shape {tuple(input_ids.shape)}")
            if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= config.vocab_size):
                raise ValueError(
                    f"input_ids must lie in [0, {config.vocab_size}) (vocab_size), got values in "
                    f"[{int(input_ids.min())}, {int(input_ids.max())}]; was the input made by another tokenizer?"
                )
            shape = tuple(input_ids.shape)
        else:
            shape = tuple(inputs_embeds.shape[:2])
        if shape[1] > config.max_position_embeddings:
            raise ValueError(
                f"sequence length {shape[1]} exceeds max_position_embeddings={config.max_position_embeddings}; "
                f"tokenize with truncation=True, max_length={config.max_position_embeddings}"
            )
        if keep is not None:
            if tuple(keep.shape) != shape:
                raise ValueError(f"attention_mask shape {tuple(keep.shape)} does not match the input shape {shape}")
            if shape[0] and not bool(keep.any(dim=1).all()):
                raise ValueError("attention_mask has a row with no real token; every sequence needs at least one")
        if token_type_ids is not None and token_type_ids.numel():
            if tuple(token_type_ids.shape) != shape:
                raise ValueError(f"token_type_ids shape {tuple(token_type_ids.shape)} does not match {shape}")
            if int(token_type_ids.max()) >= config.type_vocab_size or int(token_type_ids.min()) < 0:
                raise ValueError(f"token_type_ids must lie in [0, {config.type_vocab_size}) (type_vocab_size)")
        return shape


def pool(output: BaseModelOutputWithPooling, attention_mask: torch.Tensor | None, pooling: str) -> torch.Tensor:
    """Sentence embedding (B, H): BERT's pooler output ("cls") or the mean over real tokens ("mean")."""
    if pooling == "cls":
        return output.pooler_output
    if pooling == "mean":
        hidden = output.last_hidden_state  # (B, L, H)
        if attention_mask is None:
            return hidden.mean(dim=1)
        mask = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (B, L, 1)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    raise ValueError(f"pooling={pooling!r} is not supported; use 'cls' or 'mean'")


class MTBertPredictionHeadTransform(nn.Module):
    """dense -> activation -> LayerNorm on token states, as BERT's MLM head does before the vocabulary layer."""

    def __init__(self, config: MultiTaskBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.transform_act_fn = ACT2FN[config.hidden_act] if isinstance(config.hidden_act, str) else config.hidden_act
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.transform_act_fn(self.dense(hidden)))


class MTBertLMPredictionHead(nn.Module):
    """Token states (..., H) -> vocabulary logits (..., V) through the word-embedding matrix (tied, not copied).

    The names (`transform.*`, `bias`) are those of `BertForMaskedLM.cls.predictions`, so a checkpoint's MLM head
    loads as it is; its `decoder.weight` is the word-embedding matrix itself and is not stored twice.
    """

    def __init__(self, config: MultiTaskBertConfig):
        super().__init__()
        self.transform = MTBertPredictionHeadTransform(config)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        return F.linear(self.transform(hidden), word_embeddings, self.bias)


class MTBertOnlyMLMHead(nn.Module):
    def __init__(self, config: MultiTaskBertConfig):
        super().__init__()
        self.predictions = MTBertLMPredictionHead(config)

    def forward(self, hidden: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        return self.predictions(hidden, word_embeddings)


def _wide(x: torch.Tensor) -> torch.Tensor:
    """x in fp32, or as it is when already fp32 or fp64 (a loss must not round a float64 model down)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _gather_rows(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All ranks' rows of x concatenated in rank order (differentiable: each rank's gradient reaches the rank that
    made the rows), and where this rank's rows start. Without a process group, x itself and 0."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x, 0
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous())), dist.get_rank() * x.shape[0]


def _gather_labels(labels: torch.Tensor) -> torch.Tensor:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return labels
    parts = [torch.empty_like(labels) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, labels.contiguous())
    return torch.cat(parts)


def contrastive_loss(queries: torch.Tensor, keys: torch.Tensor, temperature: float,
                     negatives: torch.Tensor | None = None, gather: bool = False) -> torch.Tensor:
    """InfoNCE over cosine similarities, as SimCSE trains: query i's positive is key i, every other key (and every
    hard negative) is a negative. (B, H) inputs; computed in fp32.

    With `gather`, keys and negatives of all ranks join the denominator; the mean over this rank's queries, averaged
    by DDP across ranks, then equals the loss of one process on the whole global batch.
    """
    with torch.autocast(queries.device.type, enabled=False):  # logits / τ in fp32 even under bf16 autocast
        return _contrastive_loss(_wide(queries), _wide(keys), temperature,
                                 None if negatives is None else _wide(negatives), gather)


def _contrastive_loss(queries, keys, temperature, negatives, gather) -> torch.Tensor:
    q = F.normalize(queries, dim=-1)
    k = F.normalize(keys, dim=-1)
    offset = 0
    if gather:
        k, offset = _gather_rows(k)
    scores = [q @ k.T]  # (B, B') cosine similarities
    if negatives is not None:
        n = F.normalize(negatives, dim=-1)
        if gather:
            n, _ = _gather_rows(n)
        scores.append(q @ n.T)
    logits = torch.cat(scores, dim=1) / temperature
    target = torch.arange(q.shape[0], device=q.device) + offset
    return F.cross_entropy(logits, target)


def supervised_contrastive_loss(embeddings: torch.Tensor, labels: torch.Tensor, temperature: float,
                                gather: bool = False) -> torch.Tensor:
    """The supervised contrastive loss of Khosla et al. (2020), L_out: for each anchor, the mean over its positives
    (other rows with the same label) of -log softmax of their cosine similarity / τ over all other rows. Anchors
    with no positive in the batch are left out. (N, H) embeddings, (N,) integer labels; computed in fp32."""
    with torch.autocast(embeddings.device.type, enabled=False):  # similarities / τ in fp32 under bf16 autocast
        return _supervised_contrastive_loss(_wide(embeddings), labels, temperature, gather)


def _supervised_contrastive_loss(embeddings, labels, temperature, gather) -> torch.Tensor:
    z = F.normalize(embeddings, dim=-1)
    keys, offset = _gather_rows(z) if gather else (z, 0)
    key_labels = _gather_labels(labels) if gather else labels
    sim = z @ keys.T / temperature  # (N, M)
    rows = torch.arange(z.shape[0], device=z.device)
    is_self = torch.zeros_like(sim, dtype=torch.bool)
    is_self[rows, rows + offset] = True
    sim = sim.masked_fill(is_self, float("-inf"))
    positive = (labels[:, None] == key_labels[None, :]) & ~is_self
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    count = positive.sum(dim=1)
    per_anchor = -log_prob.masked_fill(~positive, 0.0).sum(dim=1) / count.clamp(min=1)
    has_positive = count > 0
    if not bool(has_positive.any()):  # no two rows share a label: nothing to pull together
        return sim.masked_fill(is_self, 0.0).sum() * 0.0
    return per_anchor[has_positive].mean()


class MTBertTaskHead(nn.Module):
    """Maps pooled sentence embedding(s) to one task's logits (B, C) or scores (B, 1)."""

    def __init__(self, config: MultiTaskBertConfig, spec: TaskSpec):
        super().__init__()
        self.spec = spec
        p = spec.dropout
        if p is None:
            p = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = MTBertDropout(p)
        in_features = 4 * config.hidden_size if spec.pair_encoding == "bi" else config.hidden_size
        has_classifier = spec.kind in ("classification", "regression") and spec.combine != "cosine"
        self.classifier = nn.Linear(in_features, spec.num_labels) if has_classifier else None
        # Contrastive tasks: SimCSE's training-only projection (dense + tanh) of the pooled embedding.
        self.projection = None
        if spec.kind == "contrastive" and spec.projection == "mlp":
            self.projection = nn.Sequential(nn.Linear(config.hidden_size, config.hidden_size), nn.Tanh())
        # Set by the trainer under DDP: contrast each rank's queries with every rank's keys (more negatives).
        self.gather_across_ranks = False

    def forward(self, u: torch.Tensor, v: torch.Tensor | None = None) -> torch.Tensor:
        """Unclamped head output; u, v: (B, H) embeddings of sentence a and (bi-encoder tasks) sentence b."""
        if self.spec.combine == "cosine":
            low, high = self.spec.label_range
            return (F.cosine_similarity(u, v, dim=-1) * high).unsqueeze(-1)  # (B, 1)
        if v is not None:
            u = torch.cat([u, v, (u - v).abs(), u * v], dim=-1)  # (B, 4H)
        return self.classifier(self.dropout(u))


@dataclass
class MultiTaskBertOutput(ModelOutput):
    """
    loss: task loss when `labels` is given (cross-entropy or MSE).
    logits: (B, C) class logits, or (B, 1) regression scores clamped to the task's label range.
    embeddings: (B, H) pooled sentence embeddings fed to the head; (2B, H) for bi-encoder tasks, sentence a first.
    hidden_states / attentions: per layer, when asked; for bi-encoder tasks their batch is 2B, sentence a first.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    embeddings: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


class MultiTaskBertPreTrainedModel(PreTrainedModel):
    config_class = MultiTaskBertConfig
    base_model_prefix = "bert"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["MTBertEmbeddings", "MTBertLayer"]
    # Old BERT checkpoints saved the position_ids buffer; we compute positions on the fly.
    _keys_to_ignore_on_load_unexpected = [r"position_ids", r"^cls\.", r"^classifier\."]

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, MTBertLMPredictionHead):
            init.zeros_(module.bias)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        name = str(pretrained_model_name_or_path)
        kwargs = hub_load_kwargs(name, kwargs)
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except OSError as err:
            if is_offline_mode() and not os.path.isdir(name):
                raise OSError(
                    f"{name!r} is not a local folder and HF_HUB_OFFLINE is set, so it cannot be downloaded from the "
                    "Hub (and it is not in the local cache). Pass a local checkpoint folder, or unset HF_HUB_OFFLINE "
                    "on a machine with network access."
                ) from err
            raise


class MultiTaskBertModel(MultiTaskBertPreTrainedModel):
    """Shared BERT encoder (`self.bert`) plus one head per task in `config.tasks` (`self.heads[name]`)."""

    # The loss is a per-batch mean, so Trainer must scale it for gradient accumulation itself.
    accepts_loss_kwargs = False

    def __init__(self, config: MultiTaskBertConfig):
        super().__init__(config)
        self.bert = MTBertModel(config)
        self.heads = nn.ModuleDict({t["name"]: MTBertTaskHead(config, TaskSpec(**t)) for t in config.tasks})
        # One MLM head, named as in BertForMaskedLM so that a checkpoint's `cls.predictions.*` loads into it.
        self.cls = MTBertOnlyMLMHead(config) if any(t["kind"] == "mlm" for t in config.tasks) else None
        self.post_init()

    def save_pretrained(self, save_directory, *args, **kwargs):
        """As PreTrainedModel's, plus the pipelines' code (pipeline_mtbert.py) beside the model code, so that
        `pipeline("sentiment-mt", model=<folder or repo>, trust_remote_code=True)` works without this package."""
        super().save_pretrained(save_directory, *args, **kwargs)
        source = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pipeline_mtbert.py")
        if os.path.isfile(source):
            import shutil

            shutil.copyfile(source, os.path.join(save_directory, "pipeline_mtbert.py"))

    def get_input_embeddings(self) -> nn.Embedding:
        return self.bert.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.bert.embeddings.word_embeddings = value

    def _head(self, task: str | None) -> MTBertTaskHead:
        if task is None:
            if len(self.heads) == 1:
                return next(iter(self.heads.values()))
            raise ValueError(f"task is required for a multi-task model; pass task= one of {list(self.heads)}")
        if task not in self.heads:
            raise ValueError(f"unknown task {task!r}; this model has tasks {list(self.heads)}")
        return self.heads[task]

    def encode(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        pooling: str = "mean",
    ) -> torch.Tensor:
        """Pooled sentence embeddings (B, H) from the shared encoder."""
        output = self.bert(input_ids, attention_mask, token_type_ids, inputs_embeds=inputs_embeds)
        return pool(output, attention_mask, pooling)

    def forward(
        self,
        task: str | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        input_ids_b: torch.Tensor | None = None,
        attention_mask_b: torch.Tensor | None = None,
        token_type_ids_b: torch.Tensor | None = None,
        inputs_embeds_b: torch.Tensor | None = None,
        input_ids_c: torch.Tensor | None = None,
        attention_mask_c: torch.Tensor | None = None,
        token_type_ids_c: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> MultiTaskBertOutput | tuple:
        r"""
        Run task `task` on a batch. Single-sentence and cross-encoded pair tasks take `input_ids` (a pair already
        joined as `[CLS] a [SEP] b [SEP]`); bi-encoder pair tasks also take `input_ids_b` for sentence b.
        `labels`: (B,) class ids for classification, (B,) float scores for regression, (B,) group ids for a
        label-supervised contrastive task, (B, L) token ids with -100 at unmasked positions for MLM.

        Contrastive tasks return the loss without labels (unsupervised: two dropout views of `input_ids` while
        training; supervised: anchor `input_ids`, positive `input_ids_b`, optional hard negative `input_ids_c`) and
        `logits` = the pooled embeddings (B, H) of `input_ids`, without the training-only projection. MLM tasks
        return (N, V) logits of the N masked tokens when `labels` is given, else (B, L, V).
        """
        head = self._head(task)
        spec = head.spec
        output_attentions = bool(output_attentions)
        output_hidden_states = bool(output_hidden_states)
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        has_c = input_ids_c is not None
        if has_c and not (spec.kind == "contrastive" and spec.objective == "supervised"):
            raise ValueError(f"task {spec.name!r}: input_ids_c (a hard negative) is for supervised contrastive tasks")
        if position_ids is not None and spec.kind in ("contrastive", "mlm"):
            raise ValueError(f"task {spec.name!r}: position_ids are not supported for {spec.kind} tasks")
        if spec.kind == "contrastive":
            out = _contrastive_forward(self, head, (input_ids, attention_mask, token_type_ids, inputs_embeds),
                                       (input_ids_b, attention_mask_b, token_type_ids_b, inputs_embeds_b),
                                       (input_ids_c, attention_mask_c, token_type_ids_c, None), labels,
                                       output_attentions, output_hidden_states)
            return out if return_dict else out.to_tuple()
        if spec.kind == "mlm":
            if input_ids_b is not None or inputs_embeds_b is not None:
                raise ValueError(f"task {spec.name!r} takes one input sequence; drop input_ids_b")
            out = _mlm_forward(self, spec, input_ids, attention_mask, token_type_ids, inputs_embeds, labels,
                               output_attentions, output_hidden_states)
            return out if return_dict else out.to_tuple()

        bi = spec.pair_encoding == "bi"
        has_b = input_ids_b is not None or inputs_embeds_b is not None
        if bi and not has_b:
            raise ValueError(f"task {spec.name!r} encodes each sentence separately; pass input_ids_b for sentence b")
        if not bi and has_b:
            raise ValueError(
                f"task {spec.name!r} takes one input sequence (input={spec.input!r}, "
                f"pair_encoding={spec.pair_encoding!r}); drop input_ids_b"
            )
        if bi:
            if position_ids is not None:
                raise ValueError(f"task {spec.name!r}: position_ids are not supported for bi-encoder tasks")
            input_ids, attention_mask, token_type_ids, inputs_embeds = _stack_sides(
                [(input_ids, attention_mask, token_type_ids, inputs_embeds),
                 (input_ids_b, attention_mask_b, token_type_ids_b, inputs_embeds_b)],
                pad_token_id=self.config.pad_token_id or 0,
            )
        encoded = self.bert(
            input_ids,
            attention_mask,
            token_type_ids,
            position_ids,
            inputs_embeds,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        embeddings = pool(encoded, attention_mask, spec.pooling)  # (B, H) or (2B, H)
        if bi:
            u, v = embeddings.chunk(2)
            scores = head(u, v)
        else:
            scores = head(embeddings)

        loss = None
        if labels is not None:
            loss = task_loss(spec, scores, labels)
        logits = scores
        if spec.kind == "regression" and spec.label_range is not None:
            logits = scores.clamp(*spec.label_range)

        out = MultiTaskBertOutput(
            loss=loss,
            logits=logits,
            embeddings=embeddings,
            hidden_states=encoded.hidden_states,
            attentions=encoded.attentions,
        )
        return out if return_dict else out.to_tuple()


def _contrastive_forward(model: MultiTaskBertModel, head: MTBertTaskHead, a: tuple, b: tuple, c: tuple,
                         labels: torch.Tensor | None, output_attentions: bool,
                         output_hidden_states: bool) -> MultiTaskBertOutput:
    spec = head.spec
    has_b, has_c = b[0] is not None or b[3] is not None, c[0] is not None
    if spec.objective == "supervised":
        if not has_b:
            raise ValueError(f"task {spec.name!r} trains on (anchor, positive) rows; pass the positive as input_ids_b")
        sides = [a, b, c] if has_c else [a, b]
    else:
        if has_b:
            raise ValueError(f"task {spec.name!r} (objective={spec.objective!r}) takes one sentence per row; drop "
                             "input_ids_b")
        sides = [a, a] if model.training else [a]  # two views that differ only in their dropout masks
    if spec.objective == "label":
        if labels is None:
            raise ValueError(f"task {spec.name!r} (objective='label') needs labels: rows with equal labels are "
                             "positives")
        if labels.is_floating_point() or labels.dtype == torch.bool:
            raise ValueError(f"task {spec.name!r} expects integer labels, got dtype {labels.dtype}")
    elif labels is not None:
        raise ValueError(f"task {spec.name!r} (objective={spec.objective!r}) takes no labels")
    ids, mask, types, embeds = _stack_sides(sides, pad_token_id=model.config.pad_token_id or 0)
    encoded = model.bert(ids, mask, types, None, embeds, output_attentions=output_attentions,
                         output_hidden_states=output_hidden_states)
    embeddings = pool(encoded, mask, spec.pooling)  # (S*B, H)
    z = embeddings
    if model.training and head.projection is not None:
        z = head.projection(z)
    views = z.chunk(len(sides))
    gather = head.gather_across_ranks
    if spec.objective == "unsupervised":
        loss = contrastive_loss(views[0], views[-1], spec.temperature, gather=gather)
    elif spec.objective == "supervised":
        loss = contrastive_loss(views[0], views[1], spec.temperature, negatives=views[2] if has_c else None,
                                gather=gather)
    else:
        loss = supervised_contrastive_loss(z, labels.reshape(-1).repeat(len(sides)), spec.temperature, gather=gather)
    return MultiTaskBertOutput(loss=loss, logits=embeddings.chunk(len(sides))[0], embeddings=embeddings,
                               hidden_states=encoded.hidden_states, attentions=encoded.attentions)


def _mlm_forward(model: MultiTaskBertModel, spec: TaskSpec, input_ids, attention_mask, token_type_ids, inputs_embeds,
                 labels, output_attentions: bool, output_hidden_states: bool) -> MultiTaskBertOutput:
    encoded = model.bert(input_ids, attention_mask, token_type_ids, None, inputs_embeds,
                         output_attentions=output_attentions, output_hidden_states=output_hidden_states)
    hidden = encoded.last_hidden_state  # (B, L, H)
    weight = model.bert.embeddings.word_embeddings.weight
    loss = None
    if labels is None:
        logits = model.cls(hidden, weight)  # (B, L, V)
    else:
        if labels.shape != hidden.shape[:2]:
            raise ValueError(f"task {spec.name!r}: MLM labels must have the input's shape {tuple(hidden.shape[:2])} "
                             f"(-100 where no token is masked), got {tuple(labels.shape)}")
        if labels.is_floating_point():
            raise ValueError(f"task {spec.name!r} expects integer token ids as labels, got dtype {labels.dtype}")
        masked = labels != -100
        targets = labels[masked]
        if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= weight.shape[0]):
            raise ValueError(f"task {spec.name!r}: label token ids must lie in [0, {weight.shape[0]})")
        logits = model.cls(hidden[masked], weight)  # (N, V): only the masked tokens are scored
        if targets.numel():
            loss = F.cross_entropy(_wide(logits), targets)
        else:  # no token was masked in this batch: a zero loss that keeps the graph
            loss = hidden.sum() * 0.0
    return MultiTaskBertOutput(loss=loss, logits=logits, hidden_states=encoded.hidden_states,
                               attentions=encoded.attentions)


def _stack_sides(sides: list[tuple], pad_token_id: int) -> tuple:
    """Stack the batches of several sentences (a, b, ...; each (ids, mask, types, embeds)) into one (S*B, L) batch,
    right-padding each to the longest."""
    with_ids = {ids is not None for ids, *_ in sides}
    if len(with_ids) > 1:
        raise ValueError("give every sentence as input_ids or every sentence as inputs_embeds")
    refs = [ids if ids is not None else embeds for ids, _, _, embeds in sides]
    sizes = [ref.shape[0] for ref in refs]
    if len(set(sizes)) > 1:
        raise ValueError(f"the sentences of a row have different batch sizes {sizes}; give one of each per row")
    L = max(ref.shape[1] for ref in refs)

    def stack(column: int, pad_value, default_value=None):
        """Right-pad every side to L along dim 1 and concatenate; a missing side becomes (B, L_side) of default."""
        parts = []
        for side, ref in zip(sides, refs, strict=True):
            x = side[column]
            if x is None:
                x = torch.full(ref.shape[:2], default_value, dtype=torch.long, device=ref.device)
            parts.append(F.pad(x, (0, 0, 0, L - x.shape[1]) if x.dim() == 3 else (0, L - x.shape[1]), value=pad_value))
        return torch.cat(parts)

    ids = stack(0, pad_token_id) if True in with_ids else None
    embeds = stack(3, 0.0) if ids is None else None
    mask = stack(1, 0, default_value=1)
    types = stack(2, 0, default_value=0)
    return ids, mask, types, embeds


def task_loss(spec: TaskSpec, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy (with the task's label smoothing) or MSE, after checking the labels fit the task."""
    if labels.shape[0] != scores.shape[0]:
        raise ValueError(f"task {spec.name!r}: got {labels.shape[0]} labels for a batch of {scores.shape[0]}")
    if spec.kind == "classification":
        if labels.is_floating_point() or labels.dtype == torch.bool:
            raise ValueError(
                f"task {spec.name!r} expects integer class labels in [0, {spec.num_labels}), got dtype {labels.dtype}"
            )
        labels = labels.reshape(-1)
        real = labels[labels != -100]  # -100 marks examples to ignore, as in transformers
        if real.numel() and (int(real.min()) < 0 or int(real.max()) >= spec.num_labels):
            raise ValueError(
                f"task {spec.name!r} expects class labels in [0, {spec.num_labels}), "
                f"got values in [{int(real.min())}, {int(real.max())}]"
            )
        return F.cross_entropy(scores, labels, label_smoothing=spec.label_smoothing)
    if not labels.is_floating_point():
        raise ValueError(
            f"task {spec.name!r} expects float regression labels, got dtype {labels.dtype}; cast with labels.float()"
        )
    labels = labels.reshape(-1).to(scores.dtype)
    if bool(torch.isnan(labels).any()):
        raise ValueError(f"task {spec.name!r}: labels contain NaN")
    if spec.label_range is not None:
        low, high = spec.label_range
        if labels.numel() and (float(labels.min()) < low or float(labels.max()) > high):
            raise ValueError(
                f"task {spec.name!r} expects labels in [{low:g}, {high:g}], got values in "
                f"[{float(labels.min()):g}, {float(labels.max()):g}]"
            )
    return F.mse_loss(scores.reshape(-1), labels)


__all__ = [
    "MultiTaskBertModel",
    "MultiTaskBertOutput",
    "MultiTaskBertPreTrainedModel",
    "MTBertModel",
    "contrastive_loss",
    "supervised_contrastive_loss",
]
