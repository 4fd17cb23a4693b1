"""Configuration of a multi-task BERT: the BERT architecture plus one spec per task head.

This file is copied next to every checkpoint (remote code), so it imports only the standard library and
transformers.
"""

from __future__ import annotations

import copy
import os
import socket
from dataclasses import asdict, dataclass, field, fields
from typing import Any
from urllib.parse import urlparse

from transformers import PretrainedConfig
from transformers.utils import logging
from transformers.utils.hub import constants as hub_constants
from transformers.utils.hub import is_offline_mode, try_to_load_from_cache

logger = logging.get_logger(__name__)

TASK_KINDS = ("classification", "regression", "contrastive", "mlm")
# Contrastive objectives: SimCSE on two dropout views of one sentence, SimCSE on (anchor, positive[, hard negative])
# triplets, and the supervised contrastive loss of Khosla et al. (2020) where rows with the same label are positives.
CONTRASTIVE_OBJECTIVES = ("unsupervised", "supervised", "label")
PROJECTIONS = ("mlp", "none")
TASK_INPUTS = ("single", "pair")
PAIR_ENCODINGS = ("cross", "bi")
BI_COMBINES = ("concat", "cosine")
POOLINGS = ("cls", "mean")


def _hub_unreachable(name: str) -> str | None:
    """Why the Hub endpoint cannot be reached to download `name`, or None when that does not apply: `name` is a
    local folder, offline mode is on (transformers then uses the cache itself), a proxy is configured (a direct
    connection says nothing about it), or a TCP connection to the endpoint opens within 3 s."""
    proxies = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
    if os.path.isdir(name) or is_offline_mode() or any(os.environ.get(v) for v in proxies):
        return None
    endpoint = urlparse(hub_constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=3).close()
    except OSError as err:
        return f"{hub_constants.ENDPOINT}: {err.strerror or err}"
    return None


def hub_load_kwargs(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """`from_pretrained` keyword arguments for `name` when the network is down but HF_HUB_OFFLINE is not set.

    huggingface_hub would retry every file for about 25 s before failing or falling back to the cache. Instead: a
    repo id that is cached loads from the cache at once (`local_files_only`, with a warning), one that is not fails
    at once with an error that says why. Anything else (a folder, a reachable Hub, offline mode) is left as it is.
    """
    if kwargs.get("local_files_only"):
        return kwargs
    unreachable = _hub_unreachable(name)
    if not unreachable:
        return kwargs
    try:
        cached = try_to_load_from_cache(name, "config.json", cache_dir=kwargs.get("cache_dir"),
                                        revision=kwargs.get("revision"))
    except ValueError:  # not a repo id either: transformers says so, without the network
        return kwargs
    if not isinstance(cached, str):
        raise OSError(
            f"{name!r} is not a local folder, the Hub cannot be reached ({unreachable}), and it is not in the local "
            "cache. Pass a local checkpoint folder, or load it on a machine with network access (HF_HUB_OFFLINE=1 "
            "makes every load use the cache without trying the network)."
        )
    logger.warning(f"the Hub cannot be reached ({unreachable}); loading {name!r} from the local cache")
    return {**kwargs, "local_files_only": True}


def _choice(task: str, name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"task '{task}': {name}={value!r} is not supported; use one of {list(allowed)}")


@dataclass
class TaskSpec:
    """One task head. Stored in `MultiTaskBertConfig.tasks` as a plain dict (see `to_dict`)."""

    name: str
    kind: str = "classification"
    # Classification: number of classes (>= 2). Regression: always 1 output.
    num_labels: int | None = None
    id2label: dict[int, str] | None = None
    input: str = "single"
    # Pair tasks only: "cross" encodes `[CLS] a [SEP] b [SEP]` once; "bi" encodes a and b separately.
    pair_encoding: str | None = None
    # Bi-encoder pair tasks only: "concat" feeds (u, v, |u-v|, u*v) to a linear layer; "cosine" predicts
    # cos(u, v) scaled to the label range (regression only, no parameters).
    combine: str | None = None
    pooling: str = "cls"
    # Regression only: (low, high). Predictions are clamped to it and labels must lie in it.
    label_range: tuple[float, float] | None = None
    label_smoothing: float = 0.0
    # Dropout before the head's linear layer; None falls back to config.classifier_dropout, then
    # config.hidden_dropout_prob.
    dropout: float | None = None
    # Contrastive tasks only: the objective (see CONTRASTIVE_OBJECTIVES), the softmax temperature τ of the cosine
    # similarities, and "mlp" for a dense + tanh projection applied only while training (as SimCSE does).
    objective: str | None = None
    temperature: float | None = None
    projection: str | None = None
    # MLM tasks only: the share of tokens selected for masking (80% [MASK], 10% random, 10% kept).
    mlm_probability: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"task name {self.name!r} must be a Python identifier such as 'sst' or 'quora'")
        name = self.name
        _choice(name, "kind", self.kind, TASK_KINDS)
        _choice(name, "input", self.input, TASK_INPUTS)
        _choice(name, "pooling", self.pooling, POOLINGS)

        if self.input == "single":
            if self.pair_encoding is not None or self.combine is not None:
                raise ValueError(
                    f"task '{name}': pair_encoding/combine apply to pair tasks only; drop them or set input='pair'"
                )
        else:
            if self.pair_encoding is None:
                self.pair_encoding = "bi" if self.kind == "contrastive" else "cross"
            _choice(name, "pair_encoding", self.pair_encoding, PAIR_ENCODINGS)
            if self.pair_encoding == "cross" and self.combine is not None:
                raise ValueError(f"task '{name}': combine={self.combine!r} needs pair_encoding='bi'")
            if self.pair_encoding == "bi" and self.kind != "contrastive":
                if self.combine is None:
                    self.combine = "concat"
                _choice(name, "combine", self.combine, BI_COMBINES)

        contrastive_fields = {"objective": self.objective, "temperature": self.temperature,
                              "projection": self.projection}
        if self.kind != "contrastive" and any(v is not None for v in contrastive_fields.values()):
            given = sorted(k for k, v in contrastive_fields.items() if v is not None)
            raise ValueError(f"task '{name}': {given} apply to contrastive tasks only; drop them or set "
                             "kind='contrastive'")
        if self.kind != "mlm" and self.mlm_probability is not None:
            raise ValueError(f"task '{name}': mlm_probability applies to kind='mlm' only")
        if self.kind == "classification":
            self._validate_classification()
        elif self.kind == "regression":
            self._validate_regression()
        elif self.kind == "contrastive":
            self._validate_contrastive()
        else:
            self._validate_mlm()

        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"task '{name}': dropout={self.dropout} must be in [0, 1)")

    def _validate_classification(self) -> None:
        name = self.name
        if self.id2label is not None:
            self.id2label = {int(k): str(v) for k, v in self.id2label.items()}
            if sorted(self.id2label) != list(range(len(self.id2label))):
                raise ValueError(
                    f"task '{name}': id2label keys must be 0..n-1, got {sorted(self.id2label)}"
                )
            if self.num_labels is None:
                self.num_labels = len(self.id2label)
            elif self.num_labels != len(self.id2label):
                raise ValueError(
                    f"task '{name}': num_labels={self.num_labels} disagrees with id2label, which has "
                    f"{len(self.id2label)} entries; drop num_labels or fix id2label"
                )
        if self.num_labels is None or not isinstance(self.num_labels, int) or self.num_labels < 2:
            raise ValueError(
                f"task '{name}': a classification task needs num_labels >= 2, got {self.num_labels!r} "
                "(use kind='regression' for a single score)"
            )
        if self.id2label is None:
            self.id2label = {i: f"LABEL_{i}" for i in range(self.num_labels)}
        if self.combine == "cosine":
            raise ValueError(f"task '{name}': combine='cosine' is for regression tasks; use combine='concat'")
        if self.label_range is not None:
            raise ValueError(f"task '{name}': label_range applies to regression tasks only; drop it")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"task '{name}': label_smoothing={self.label_smoothing} must be in [0, 1)")

    def _validate_regression(self) -> None:
        name = self.name
        if self.id2label is not None:
            raise ValueError(
                f"task '{name}': a regression task has no labels, got id2label={self.id2label}; "
                "drop id2label or use kind='classification'"
            )
        if self.num_labels not in (None, 1):
            raise ValueError(f"task '{name}': a regression task has num_labels=1, got {self.num_labels}")
        self.num_labels = 1
        if self.label_smoothing:
            raise ValueError(f"task '{name}': label_smoothing applies to classification tasks only")
        if self.label_range is not None:
            low, high = (float(x) for x in self.label_range)
            if not low < high:
                raise ValueError(f"task '{name}': label_range={list(self.label_range)} needs low < high")
            self.label_range = (low, high)
        elif self.combine == "cosine":
            raise ValueError(
                f"task '{name}': combine='cosine' scales cos(u, v) to the label range; set label_range, e.g. (0, 5)"
            )

    def _no_labels_or_range(self, why: str) -> None:
        if self.id2label is not None or self.num_labels is not None:
            raise ValueError(f"task '{self.name}': {why}; drop num_labels/id2label")
        if self.label_range is not None or self.label_smoothing:
            raise ValueError(f"task '{self.name}': label_range/label_smoothing apply to classification and regression")

    def _validate_contrastive(self) -> None:
        name = self.name
        self._no_labels_or_range("a contrastive task has no output classes (its labels, if any, only group rows)")
        if self.objective is None:
            self.objective = "supervised" if self.input == "pair" else "unsupervised"
        _choice(name, "objective", self.objective, CONTRASTIVE_OBJECTIVES)
        if self.objective == "supervised":
            if self.input != "pair":
                raise ValueError(f"task '{name}': objective='supervised' trains on (anchor, positive[, hard "
                                 "negative]) rows; set input='pair'")
            if self.pair_encoding != "bi" or self.combine is not None:
                raise ValueError(f"task '{name}': a supervised contrastive task encodes each sentence on its own "
                                 "(pair_encoding='bi', no combine); drop pair_encoding/combine")
        elif self.input != "single":
            raise ValueError(f"task '{name}': objective={self.objective!r} takes one sentence per row; set "
                             "input='single' (or objective='supervised' for sentence pairs)")
        if self.temperature is None:
            self.temperature = 0.05
        if not self.temperature > 0:
            raise ValueError(f"task '{name}': temperature={self.temperature} must be > 0 (SimCSE uses 0.05)")
        self.temperature = float(self.temperature)
        if self.projection is None:
            self.projection = "mlp"
        _choice(name, "projection", self.projection, PROJECTIONS)

    def _validate_mlm(self) -> None:
        self._no_labels_or_range("an MLM task predicts vocabulary tokens")
        if self.input != "single":
            raise ValueError(f"task '{self.name}': an MLM task takes one text per row; set input='single'")
        if self.mlm_probability is None:
            self.mlm_probability = 0.15
        if not 0.0 < self.mlm_probability < 1.0:
            raise ValueError(f"task '{self.name}': mlm_probability={self.mlm_probability} must be in (0, 1)")

    @property
    def label2id(self) -> dict[str, int] | None:
        return None if self.id2label is None else {v: k for k, v in self.id2label.items()}

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if out["id2label"] is not None:  # JSON keys are strings
            out["id2label"] = {str(k): v for k, v in out["id2label"].items()}
        if out["label_range"] is not None:
            out["label_range"] = list(out["label_range"])
        return out


# The repo `pipeline("sentiment-mt")` and its siblings load when no model is given.
DEFAULT_PIPELINE_REPO = "hf-mtbert/mtbert-minilm-cs224n"
PIPELINE_CLASS_NAMES = {"sentiment-mt": "SentimentPipeline", "paraphrase-mt": "ParaphrasePipeline",
                        "similarity-mt": "SimilarityPipeline"}


def custom_pipelines() -> dict[str, dict[str, Any]]:
    """`config.custom_pipelines`: where `pipeline(task, model=..., trust_remote_code=True)` finds each pipeline's
    class (pipeline_mtbert.py, saved beside the model code)."""
    return {
        task: {"impl": f"pipeline_mtbert.{name}", "pt": ["AutoModel"], "type": "text",
               "default": {"model": [DEFAULT_PIPELINE_REPO, "main"]}}
        for task, name in PIPELINE_CLASS_NAMES.items()
    }


def default_tasks() -> list[dict[str, Any]]:
    """The three tasks of the CS224N multi-task project."""
    sst_labels = ["very negative", "negative", "neutral", "positive", "very positive"]
    return [
        TaskSpec(name="sst", kind="classification", id2label=dict(enumerate(sst_labels))).to_dict(),
        TaskSpec(
            name="quora",
            kind="classification",
            id2label={0: "not_duplicate", 1: "duplicate"},
            input="pair",
            pair_encoding="cross",
        ).to_dict(),
        TaskSpec(
            name="sts",
            kind="regression",
            input="pair",
            pair_encoding="bi",
            combine="cosine",
            pooling="mean",
            label_range=(0.0, 5.0),
        ).to_dict(),
    ]


class MultiTaskBertConfig(PretrainedConfig):
    r"""
    Configuration of [`MultiTaskBertModel`]: every field of `transformers.BertConfig`, plus `tasks`.

    Args:
        tasks (`list[dict]`, *optional*):
            One dict per task head with the fields of [`TaskSpec`] (`name`, `kind`, `num_labels`, `id2label`,
            `input`, `pair_encoding`, `combine`, `pooling`, `label_range`, `label_smoothing`, `dropout`, and for
            `contrastive` tasks `objective`, `temperature`, `projection`, for `mlm` tasks `mlm_probability`).
            Defaults to the CS224N tasks: `sst` (5 classes), `quora` (binary, pair), `sts` (regression 0-5, pair).
        unpad_inputs (`bool`, *optional*, defaults to `True`):
            Run the dense layers on real tokens only when a batch has padding. Hidden states at padded
            positions are then returned as zeros instead of the values BERT computes for them.
    """

    model_type = "mtbert"

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int | None = 0
    position_embedding_type: str = "absolute"
    classifier_dropout: float | None = None
    tasks: list[dict[str, Any]] | None = None
    unpad_inputs: bool = True

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not a multiple of num_attention_heads={self.num_attention_heads}"
            )
        if self.position_embedding_type != "absolute":
            raise ValueError(
                f"position_embedding_type={self.position_embedding_type!r} is not supported; "
                "MultiTaskBertModel implements 'absolute' position embeddings only"
            )
        if getattr(self, "is_decoder", False) or getattr(self, "add_cross_attention", False):
            raise ValueError("MultiTaskBertModel is an encoder; is_decoder/add_cross_attention must be False")
        if self.tasks is None:
            self.tasks = default_tasks()
        specs = [self._as_spec(t) for t in self.tasks]
        names = [s.name for s in specs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate task names {duplicates}; every task needs a unique name")
        mlm = [s.name for s in specs if s.kind == "mlm"]
        if len(mlm) > 1:
            raise ValueError(f"tasks {mlm} are all kind='mlm'; the model has one MLM head, so keep one MLM task")
        if not specs:
            raise ValueError("tasks is empty; give at least one task or leave tasks=None for the defaults")
        self.tasks = [s.to_dict() for s in specs]
        # Checkpoints always list the pipelines (see to_dict). Loaded as remote code (transformers' dynamic modules)
        # the config keeps them; loaded through the installed package, whose import registered the pipelines, it
        # leaves them out, since transformers would otherwise insist on trust_remote_code.
        if __name__.startswith("transformers_modules"):
            if not getattr(self, "custom_pipelines", None):
                self.custom_pipelines = custom_pipelines()
        else:
            self.__dict__.pop("custom_pipelines", None)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args: Any, **kwargs: Any) -> MultiTaskBertConfig:
        kwargs = hub_load_kwargs(str(pretrained_model_name_or_path), kwargs)
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> MultiTaskBertConfig:
        # transformers applies keyword overrides (`from_pretrained(path, tasks=...)`) with setattr after building the
        # config, which would skip every check above and leave `tasks` unnormalised. Our fields go to the constructor.
        names = {f.name for f in fields(cls)}
        overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in names}
        return super().from_dict({**config_dict, **overrides}, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["custom_pipelines"] = custom_pipelines()
        return out

    @staticmethod
    def _as_spec(task: Any) -> TaskSpec:
        if isinstance(task, TaskSpec):
            return TaskSpec(**copy.deepcopy(asdict(task)))
        if not isinstance(task, dict):
            raise ValueError(f"each task must be a dict or TaskSpec, got {type(task).__name__}: {task!r}")
        unknown = sorted(set(task) - set(TaskSpec.__dataclass_fields__))
        if unknown:
            raise ValueError(
                f"task {task.get('name')!r}: unknown fields {unknown}; known fields are "
                f"{sorted(TaskSpec.__dataclass_fields__)}"
            )
        return TaskSpec(**copy.deepcopy(task))

    @property
    def task_names(self) -> list[str]:
        return [t["name"] for t in self.tasks]

    def get_task(self, name: str | None) -> TaskSpec:
        """The spec of task `name`; `None` is allowed when the config has exactly one task."""
        if name is None:
            if len(self.tasks) == 1:
                return TaskSpec(**self.tasks[0])
            raise ValueError(f"task is required for a multi-task model; pass one of {self.task_names}")
        for task in self.tasks:
            if task["name"] == name:
                return TaskSpec(**task)
        raise ValueError(f"unknown task {name!r}; this model has tasks {self.task_names}")


__all__ = ["DEFAULT_PIPELINE_REPO", "MultiTaskBertConfig", "TaskSpec", "custom_pipelines", "default_tasks",
           "hub_load_kwargs"]
