"""Task pipelines for a multi-task BERT: `sentiment-mt`, `paraphrase-mt` and `similarity-mt`.

Each is a `transformers.Pipeline` with the four-method shape and picks its head from the model's tasks: the first
single-sentence classification task (sentiment), the first pair classification task with two classes (paraphrase),
the first pair regression task (similarity), unless `head=` names one. Outputs are plain floats and strings.

This file is copied next to every checkpoint (remote code, listed in `config.custom_pipelines`), so it imports only
torch and transformers.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import Pipeline


def _check_text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, got {type(value).__name__}: {value!r}")
    if not value.strip():
        raise ValueError(f"{what} is empty; give some text")
    return value


def _pick_head(config, kind: str, pair: bool, num_labels: int | None, pipeline_name: str, head: str | None) -> dict:
    tasks = {t["name"]: t for t in config.tasks}
    if head is not None:
        if head not in tasks:
            raise ValueError(f"head={head!r} is not a task of this model; its tasks are {list(tasks)}")
        spec = tasks[head]
        if spec["kind"] != kind or (spec["input"] == "pair") != pair:
            raise ValueError(f"{pipeline_name} needs a {'pair' if pair else 'single-sentence'} {kind} head; task "
                             f"{head!r} is a {spec['input']} {spec['kind']} task")
        return spec
    for spec in config.tasks:
        if spec["kind"] == kind and (spec["input"] == "pair") == pair and num_labels in (None, spec["num_labels"]):
            return spec
    raise ValueError(f"{pipeline_name} needs a {'pair' if pair else 'single-sentence'} {kind} task head, and this "
                     f"model has none among {list(tasks)}")


class _MultiTaskPipeline(Pipeline):
    """The shared part: choose the head, tokenize one sentence or a pair the head's way, run it."""

    pipeline_name = ""
    kind = "classification"
    pair = False
    num_labels: int | None = None

    def __init__(self, *args, head: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.spec = _pick_head(self.model.config, self.kind, self.pair, self.num_labels, self.pipeline_name, head)

    def _sanitize_parameters(self, head=None, max_length=None, **kwargs):
        if head is not None:
            raise ValueError("choose the head when building the pipeline: pipeline(..., head='name')")
        if kwargs:
            raise ValueError(f"{self.pipeline_name} got unknown options {sorted(kwargs)}")
        return ({} if max_length is None else {"max_length": int(max_length)}), {}, {}

    def _sentences(self, inputs) -> tuple[str, str | None]:
        if not self.pair:
            if isinstance(inputs, (dict, tuple, list)):
                raise ValueError(f"{self.pipeline_name} takes one sentence per input (a string), got a "
                                 f"{type(inputs).__name__}: {inputs!r}")
            return _check_text(inputs, "the sentence"), None
        if isinstance(inputs, dict):
            unknown = sorted(set(inputs) - {"text", "text_pair"})
            if unknown or "text_pair" not in inputs:
                raise ValueError(f"{self.pipeline_name} takes {{'text': ..., 'text_pair': ...}} pairs; got keys "
                                 f"{sorted(inputs)}")
            a, b = inputs.get("text"), inputs["text_pair"]
        elif isinstance(inputs, tuple) and len(inputs) == 2:
            a, b = inputs
        else:
            raise ValueError(f"{self.pipeline_name} takes sentence pairs as {{'text': a, 'text_pair': b}} or a "
                             f"tuple (a, b); got {type(inputs).__name__}: {inputs!r}")
        return _check_text(a, "text"), _check_text(b, "text_pair")

    def preprocess(self, inputs, max_length: int = 128) -> dict[str, torch.Tensor]:
        a, b = self._sentences(inputs)
        encode = dict(truncation=True, max_length=max_length, return_tensors="pt")
        if b is None:
            return dict(self.tokenizer(a, **encode))
        if self.spec.get("pair_encoding") == "cross":
            return dict(self.tokenizer(a, b, **encode))
        first, second = self.tokenizer(a, **encode), self.tokenizer(b, **encode)
        return {**first, **{f"{k}_b": v for k, v in second.items()}}

    def _forward(self, model_inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"logits": self.model(task=self.spec["name"], **model_inputs).logits}

    def _probabilities(self, model_outputs) -> torch.Tensor:
        return model_outputs["logits"][0].float().softmax(dim=-1)


class SentimentPipeline(_MultiTaskPipeline):
    """text -> {"label", "score"}; with `top_k=k`, the k most likely labels (`top_k=None` in the call: all)."""

    pipeline_name = "sentiment-mt"

    def postprocess(self, model_outputs, top_k: int | None = 1):
        probs = self._probabilities(model_outputs)
        id2label = {int(k): v for k, v in self.spec["id2label"].items()}
        ranked = [{"label": id2label[int(i)], "score": float(probs[i])} for i in probs.argsort(descending=True)]
        if top_k == 1:
            return ranked[0]
        return ranked if top_k is None else ranked[: int(top_k)]

    def _sanitize_parameters(self, head=None, max_length=None, **kwargs):
        has_top_k, top_k = "top_k" in kwargs, kwargs.pop("top_k", None)
        preprocess, forward, postprocess = super()._sanitize_parameters(head=head, max_length=max_length, **kwargs)
        if has_top_k:
            if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
                raise ValueError(f"top_k must be a positive integer or None (all labels), got {top_k!r}")
            postprocess["top_k"] = top_k
        return preprocess, forward, postprocess


class ParaphrasePipeline(_MultiTaskPipeline):
    """{"text", "text_pair"} or (a, b) -> {"label", "score", "paraphrase_probability"} (probability of class 1)."""

    pipeline_name = "paraphrase-mt"
    pair = True
    num_labels = 2

    def postprocess(self, model_outputs):
        probs = self._probabilities(model_outputs)
        best = int(probs.argmax())
        label = {int(k): v for k, v in self.spec["id2label"].items()}[best]
        return {"label": label, "score": float(probs[best]), "paraphrase_probability": float(probs[1])}


class SimilarityPipeline(_MultiTaskPipeline):
    """{"text", "text_pair"} or (a, b) -> {"score"}: the similarity in the head's label range (STS: 0-5)."""

    pipeline_name = "similarity-mt"
    kind = "regression"
    pair = True

    def postprocess(self, model_outputs):
        return {"score": float(model_outputs["logits"].reshape(-1)[0])}


PIPELINE_CLASSES = {"sentiment-mt": SentimentPipeline, "paraphrase-mt": ParaphrasePipeline,
                    "similarity-mt": SimilarityPipeline}

__all__ = ["PIPELINE_CLASSES", "ParaphrasePipeline", "SentimentPipeline", "SimilarityPipeline"]
