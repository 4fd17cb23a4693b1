"""Tokenize inputs the way a task expects them and turn model outputs into readable predictions."""

from __future__ import annotations

from typing import Any

import torch
from tqdm.auto import tqdm

from .configuration_mtbert import TaskSpec


def tokenize_for_task(
    tokenizer, spec: TaskSpec, texts: list[str], texts_b: list[str] | None = None, max_length: int = 128
) -> dict[str, torch.Tensor]:
    """Model inputs for one task: one sequence, a `[CLS] a [SEP] b [SEP]` pair, or two sequences (`*_b`)."""
    kwargs = dict(padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    if spec.input == "single":
        if texts_b is not None:
            raise ValueError(f"task {spec.name!r} takes single sentences; got a second list of texts")
        return dict(tokenizer(texts, **kwargs))
    if texts_b is None or len(texts_b) != len(texts):
        raise ValueError(
            f"task {spec.name!r} takes sentence pairs; give texts_b with one entry per text "
            f"(got {len(texts)} texts and {None if texts_b is None else len(texts_b)} texts_b)"
        )
    if spec.pair_encoding == "cross":
        return dict(tokenizer(texts, texts_b, **kwargs))
    a, b = tokenizer(texts, **kwargs), tokenizer(texts_b, **kwargs)
    return {**a, **{f"{k}_b": v for k, v in b.items()}}


@torch.inference_mode()
def predict(
    model, tokenizer, task: str, texts: list[str], texts_b: list[str] | None = None, batch_size: int = 32,
    desc: str | None = None,
) -> list[dict[str, Any]]:
    """Predictions for `task`: `{"label", "score"}` (class probability) or `{"score"}` (regression).

    With `desc`, a progress bar of that name shows the batches.
    """
    spec = model.config.get_task(task)
    model.eval()
    results: list[dict[str, Any]] = []
    for start in tqdm(range(0, len(texts), batch_size), desc=desc, disable=desc is None, leave=False):
        chunk_b = None if texts_b is None else texts_b[start : start + batch_size]
        inputs = tokenize_for_task(tokenizer, spec, texts[start : start + batch_size], chunk_b)
        logits = model(task=task, **{k: v.to(model.device) for k, v in inputs.items()}).logits
        if spec.kind == "classification":
            probs = logits.float().softmax(dim=-1)
            best = probs.argmax(dim=-1)
            results += [
                {"label": spec.id2label[int(i)], "score": float(p[i])} for i, p in zip(best, probs, strict=True)
            ]
        else:
            results += [{"score": float(s)} for s in logits.float().reshape(-1)]
    return results


# CS224N's submission format: a header "id \t <column>" then "<id> , <prediction>" lines (their spelling).
CS224N_OUTPUTS = {
    "sst": ("sst", "Predicted_Sentiment"),
    "quora": ("para", "Predicted_Is_Paraphrase"),
    "sts": ("sts", "Predicted_Similiarity"),
    "cfimdb": ("cfimdb", "Predicted_Sentiment"),
}


def write_cs224n_predictions(
    model, tokenizer, output_dir, data_dir=None, splits: tuple[str, ...] = ("dev", "test"), batch_size: int = 64
) -> list[str]:
    """Predict every CS224N task of `model` on `splits` and write `<task>-<split>-output.csv` files.

    Classification writes the class id, regression the score. Splits the release lacks (quora test) are skipped
    with a log line. Returns the written paths.
    """
    from pathlib import Path

    from .data import CS224N_TASKS, load_cs224n

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    tasks = [t for t in model.config.task_names if t in CS224N_TASKS]
    if not tasks:
        raise ValueError(f"the model's tasks {model.config.task_names} include no CS224N task {list(CS224N_TASKS)}")
    written = []
    for task in tasks:
        spec = model.config.get_task(task)
        label_id = {name: int(i) for i, name in (spec.id2label or {}).items()}
        for split in splits:
            try:
                data = load_cs224n(task, split, data_dir)
            except ValueError as err:
                if "has no" not in str(err):
                    raise
                print(f"skipping {task} {split}: {err}")
                continue
            a = data["sentence"] if spec.input == "single" else data["sentence1"]
            b = None if spec.input == "single" else data["sentence2"]
            results = predict(model, tokenizer, task, a, b, batch_size, desc=f"{task} {split}")
            prefix, column = CS224N_OUTPUTS[task]
            path = output_dir / f"{prefix}-{split}-output.csv"
            with path.open("w", encoding="utf-8") as f:
                f.write(f"id \t {column} \n")
                for row_id, result in zip(data["id"], results, strict=True):
                    value = label_id[result["label"]] if "label" in result else round(result["score"], 4)
                    f.write(f"{row_id} , {value} \n")
            written.append(str(path))
    return written
