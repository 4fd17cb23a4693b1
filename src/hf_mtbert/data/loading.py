"""Load the CS224N project data and users' own task data as `datasets.Dataset`s, and tokenize them for a task.

Every loader returns the same canonical columns, so the rest of the package never looks at file layouts:

    single-sentence task:  id (string), sentence (string), label
    sentence-pair task:    id (string), sentence1 (string), sentence2 (string), label

`label` is a `ClassLabel` for classification and `float32` for regression; unlabeled data has no `label`.
`tokenize_dataset` turns these into model inputs (unpadded; `MultiTaskCollator` pads each batch).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import datasets
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
from transformers.utils import logging

from ..configuration_mtbert import MultiTaskBertConfig, TaskSpec, default_tasks

logger = logging.get_logger(__name__)

DATA_DIR_ENV = "HF_MTBERT_DATA_DIR"

# Where each CS224N task lives in the data folder: per split, a list of (file, has_header_row); the file's text
# columns (already our canonical names) and its label column. Label names and kinds come from `cs224n_task_spec`.
_SPLIT_FILES = (("train", "train"), ("dev", "dev"), ("test", "test-student"))
_CS224N_FILES: dict[str, dict[str, Any]] = {
    "sst": {
        "splits": {s: [(f"ids-sst-{f}.csv", True)] for s, f in _SPLIT_FILES},
        "text": ("sentence",),
        "label": "sentiment",
    },
    "cfimdb": {
        "splits": {s: [(f"ids-cfimdb-{f}.csv", True)] for s, f in _SPLIT_FILES},
        "text": ("sentence",),
        "label": "sentiment",
    },
    "quora": {
        "splits": {
            "train": [
                ("quora-train-partial/quora-train-small.csv", True),
                ("quora-train-partial/quora-train-pre-left.csv", False),  # a slice of the same file, header dropped
            ],
            "dev": [("quora-dev.csv", True)],
        },
        "text": ("sentence1", "sentence2"),
        "label": "is_duplicate",
    },
    "sts": {
        "splits": {s: [(f"sts-{f}.csv", True)] for s, f in _SPLIT_FILES},
        "text": ("sentence1", "sentence2"),
        "label": "similarity",
    },
}
CS224N_TASKS = tuple(_CS224N_FILES)
CANONICAL_COLUMNS = ("id", "sentence", "sentence1", "sentence2", "hard_negative", "label")
_SOURCE_KEYS = ("path", "columns", "delimiter", "split")
_READERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet", ".txt": "text"}


def resolve_data_dir(path: str | os.PathLike | None = None) -> Path:
    """The CS224N data folder: `path` if given, else the folder named by `$HF_MTBERT_DATA_DIR`."""
    if path is None:
        path = os.environ.get(DATA_DIR_ENV)
        if not path:
            raise ValueError(
                f"no CS224N data folder given: pass data_dir=... or set the environment variable {DATA_DIR_ENV} "
                "to the folder holding ids-sst-train.csv, quora-dev.csv, sts-train.csv, ..."
            )
        origin = f"${DATA_DIR_ENV}"
    else:
        origin = "data_dir"
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{origin}={str(path)!r} is not a folder; point it (or the environment variable {DATA_DIR_ENV}) at the "
            "CS224N data folder"
        )
    return folder


def cs224n_task_spec(task: str) -> TaskSpec:
    """The head a CS224N task needs: sst, quora and sts as in `default_tasks()`, plus binary cfimdb."""
    if task == "cfimdb":
        return TaskSpec(name="cfimdb", kind="classification", id2label={0: "negative", 1: "positive"})
    for spec in default_tasks():
        if spec["name"] == task:
            return TaskSpec(**spec)
    raise ValueError(f"unknown CS224N task {task!r}; use one of {list(CS224N_TASKS)}")


def load_cs224n(task: str, split: str, data_dir: str | os.PathLike | None = None) -> Dataset:
    """One split ("train", "dev" or "test") of a CS224N task ("sst", "quora", "sts" or "cfimdb").

    Rows with an empty label (two in quora-dev.csv) are dropped with a warning; any other malformed row raises.
    The test split has no `label` column.
    """
    spec = cs224n_task_spec(task)
    layout = _CS224N_FILES[task]
    if split not in ("train", "dev", "test"):
        raise ValueError(f"unknown split {split!r}; use 'train', 'dev' or 'test'")
    if split not in layout["splits"]:
        raise ValueError(
            f"the CS224N release has no {task} {split} file (quora-test-student.csv is missing); "
            f"use one of {sorted(layout['splits'])}"
        )
    folder = resolve_data_dir(data_dir)
    label_column = None if split == "test" else layout["label"]
    parts = []
    for name, has_header in layout["splits"][split]:
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; is {folder} the CS224N data folder?")
        raw = _read_cs224n_csv(path, has_header, layout["text"], label_column)
        parts.append(
            _canonicalize(
                raw, spec, str(path), text_columns=layout["text"], label_column=label_column, drop_empty_labels=True
            )
        )
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)


def _read_cs224n_csv(path: Path, has_header: bool, text: tuple[str, ...], label: str | None) -> Dataset:
    """The id, text and label columns of one file, all as strings: ids stay ids and text like "NA" stays text."""
    columns = ["id", *text] + ([label] if label else [])
    if has_header:  # the header names the columns; usecols picks ours past the one or two pandas index columns
        layout = {"header": 0}
    else:
        layout = {"header": None, "names": ["index", *columns]}
    return datasets.load_dataset(
        "csv",
        data_files=str(path),
        split="train",
        delimiter="\t",
        usecols=columns,
        features=Features({c: Value("string") for c in columns}),
        keep_default_na=False,
        na_filter=False,
        **layout,
    )


def _canonicalize(
    dataset: Dataset,
    spec: TaskSpec,
    source: str,
    text_columns: tuple[str, ...],
    label_column: str | None,
    drop_empty_labels: bool = False,
) -> Dataset:
    """Strip and check the text and turn labels into the spec's feature; rows with an empty label raise, or, with
    `drop_empty_labels`, are dropped with one warning."""
    if label_column is not None and drop_empty_labels:
        empty = sum(_is_missing(v) for v in dataset.select_columns([label_column]).to_dict()[label_column])
        if empty:
            logger.warning(f"{source}: dropped {empty} of {len(dataset)} rows whose '{label_column}' label is empty")
            dataset = dataset.filter(_has_label, batched=True, fn_kwargs={"column": label_column})
    features = {}
    if "id" in dataset.column_names:
        features["id"] = Value("string")
    canonical_text = _text_columns(spec) + (("hard_negative",) if len(text_columns) == 3 else ())
    features.update({c: Value("string") for c in canonical_text})
    if label_column is not None:
        features["label"] = label_feature(spec)
    return dataset.map(
        _canonical_batch,
        batched=True,
        with_indices=True,
        remove_columns=[c for c in dataset.column_names if c not in features],
        features=Features(features),
        fn_kwargs={"spec": spec, "source": source, "text_columns": text_columns, "label_column": label_column},
        desc=f"Checking {spec.name}",
    )


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _has_label(batch: dict[str, list], column: str) -> list[bool]:
    return [not _is_missing(v) for v in batch[column]]


def _canonical_batch(
    batch: dict[str, list],
    indices: list[int],
    spec: TaskSpec,
    source: str,
    text_columns: tuple[str, ...],
    label_column: str | None,
) -> dict[str, list]:
    ids = batch.get("id")
    where = [f"row {i}" + ("" if ids is None else f" (id {ids[k]!r})") for k, i in enumerate(indices)]
    out: dict[str, list] = {}
    if ids is not None:
        out["id"] = [None if v is None else str(v) for v in ids]
    canonical_text = _text_columns(spec) + (("hard_negative",) if len(text_columns) == 3 else ())
    for column, canonical in zip(text_columns, canonical_text, strict=True):
        texts = [None if v is None else str(v).strip() for v in batch[column]]
        for row, text, raw in zip(where, texts, batch[column], strict=True):
            if not text:
                raise ValueError(f"{source}: {row} has an empty '{column}' ({raw!r}); fix or remove the row")
        out[canonical] = texts
    if label_column is not None:
        labels = batch[label_column]
        out["label"] = [_parse_label(v, spec, f"{source}: {row}") for v, row in zip(labels, where, strict=True)]
    return out


def _text_columns(spec: TaskSpec) -> tuple[str, ...]:
    return ("sentence",) if spec.input == "single" else ("sentence1", "sentence2")


def takes_labels(spec: TaskSpec) -> bool:
    """Whether a task trains on labels: not MLM, unsupervised SimCSE or (anchor, positive) contrastive rows."""
    return spec.kind in ("classification", "regression") or spec.objective == "label"


def label_feature(spec: TaskSpec) -> ClassLabel | Value:
    """The `datasets` feature of a task's labels: `ClassLabel` with the spec's names, float32 scores, or int64
    group ids for a label-supervised contrastive task."""
    if spec.kind == "classification":
        return ClassLabel(names=[spec.id2label[i] for i in range(spec.num_labels)])
    if spec.kind == "contrastive":
        return Value("int64")
    return Value("float32")


def _parse_label(value: Any, spec: TaskSpec, where: str) -> int | float:
    """A class id (from an id, an integral float or a class name), a score inside the spec's label range, or an
    integer group id (label-supervised contrastive tasks)."""
    if spec.kind == "contrastive":
        number = _as_float(value)
        if number is None or not number.is_integer():
            raise ValueError(f"{where}: label {value!r} of contrastive task '{spec.name}' is not an integer group id "
                             "(rows with equal labels are positives)")
        return int(number)
    if spec.kind == "classification":
        label2id = spec.label2id
        if isinstance(value, str) and value.strip() in label2id:
            return label2id[value.strip()]
        number = _as_float(value)
        if number is None or not number.is_integer() or not 0 <= number < spec.num_labels:
            raise ValueError(
                f"{where}: label {value!r} of task '{spec.name}' is not a class id in [0, {spec.num_labels}) "
                f"nor one of the class names {list(label2id)}"
            )
        return int(number)
    number = _as_float(value)
    if number is None or not math.isfinite(number):
        raise ValueError(f"{where}: label {value!r} of regression task '{spec.name}' is not a number")
    if spec.label_range is not None:
        low, high = spec.label_range
        if not low <= number <= high:
            raise ValueError(
                f"{where}: label {value!r} of task '{spec.name}' is outside its label_range [{low}, {high}]"
            )
    return number


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        return None


def load_task_data(source: str | os.PathLike | dict[str, Any], spec: TaskSpec, split: str = "train") -> Dataset:
    """A user's data for task `spec`, with the canonical columns (see the module docstring).

    `source` is a path (.csv, .tsv, .json, .jsonl, .parquet, or a folder written by `save_to_disk`), or a dict
    `{"path": ..., "columns": {"sentence": "text", "label": "stars"}, "delimiter": ";", "split": "train"}` whose
    `columns` maps our column names to the file's. `split` picks the split of a saved `DatasetDict` (and names a
    file's rows otherwise). Labels may be class ids, class names from `spec.id2label`, or regression scores.
    Columns other than id, the text and the label are dropped.
    """
    options = _parse_source(source, split)
    path, columns = options["path"], options["columns"]
    dataset = _read_user_file(path, options["split"], options["delimiter"])
    if _READERS.get(path.suffix.lower()) == "text":  # one text per line: the line is the sentence
        columns = {"sentence": "text", **columns}
        blank = sum(not line.strip() for line in dataset["text"])
        if blank:
            logger.info(f"{path}: skipped {blank} blank lines")
            dataset = dataset.filter(lambda batch: [bool(t.strip()) for t in batch["text"]], batched=True)
    if len(dataset) == 0:
        raise ValueError(f"{path}: no rows in split {options['split']!r}; task '{spec.name}' needs data")

    text_columns = _text_columns(spec)
    if spec.objective == "supervised" and columns.get("hard_negative", "hard_negative") in dataset.column_names:
        text_columns = (*text_columns, "hard_negative")
    elif "hard_negative" in columns:
        raise ValueError(f"{path}: columns maps 'hard_negative', which only supervised contrastive tasks use")
    renames = {}
    for canonical in text_columns:
        theirs = columns.get(canonical, canonical)
        if theirs not in dataset.column_names:
            raise ValueError(
                f"{path}: task '{spec.name}' needs a text column {theirs!r} (ours: {canonical!r}), but the file has "
                f"columns {dataset.column_names}; map yours with source={{'path': {str(path)!r}, 'columns': "
                f"{{'{canonical}': '<your column>', ...}}}}"
            )
        renames[theirs] = canonical
    for optional in ("id", "label") if takes_labels(spec) else ("id",):
        theirs = columns.get(optional, optional)
        if theirs in dataset.column_names:
            renames[theirs] = optional
        elif optional in columns:
            raise ValueError(
                f"{path}: columns maps {optional!r} to {theirs!r}, but the file has columns {dataset.column_names}; "
                f"fix the '{optional}' entry of columns"
            )
    if "label" not in renames.values() and options["split"] == "train" and takes_labels(spec):
        logger.warning(
            f"{path}: no 'label' column among {dataset.column_names}; loaded task '{spec.name}' without labels "
            "(map yours with columns={'label': '<your column>'})"
        )
    dataset = dataset.select_columns(list(renames)).rename_columns({k: v for k, v in renames.items() if k != v})
    if "id" in dataset.column_names and dataset.features["id"] != Value("string"):
        dataset = dataset.cast_column("id", Value("string"))
    label_column = "label" if "label" in dataset.column_names else None
    return _canonicalize(dataset, spec, source=str(path), text_columns=text_columns, label_column=label_column)


def _parse_source(source: str | os.PathLike | dict[str, Any], split: str) -> dict[str, Any]:
    options = {"path": source, "columns": {}, "delimiter": None, "split": split}
    if isinstance(source, dict):
        unknown = sorted(set(source) - set(_SOURCE_KEYS))
        if unknown or "path" not in source:
            raise ValueError(
                f"source dict needs 'path' and takes only {list(_SOURCE_KEYS)}; got keys {sorted(source)}"
            )
        options.update(source)
    columns = options["columns"] or {}
    bad = sorted(set(columns) - set(CANONICAL_COLUMNS))
    if bad:
        raise ValueError(
            f"columns maps our column names to yours; {bad} are not ours. Use keys from {list(CANONICAL_COLUMNS)}, "
            "e.g. {'sentence': 'text', 'label': 'stars'}"
        )
    options["columns"] = dict(columns)
    options["path"] = Path(options["path"]).expanduser()
    return options


def _read_user_file(path: Path, split: str, delimiter: str | None) -> Dataset:
    if path.is_dir():
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, DatasetDict):
            if split not in loaded:
                raise ValueError(f"{path}: no split {split!r}; the saved DatasetDict has splits {list(loaded)}")
            return loaded[split]
        return loaded
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise ValueError(
            f"{path}: can't read {path.suffix!r} files; use one of {sorted(_READERS)} or a save_to_disk folder"
        )
    if path.stat().st_size == 0:  # `datasets` fails on these with a bare StopIteration
        raise ValueError(f"{path}: the file is empty; it needs rows for task data")
    kwargs: dict[str, Any] = {}
    if reader == "csv":  # keep text such as "NA" or "null" as text
        kwargs = {"delimiter": delimiter or ("\t" if path.suffix.lower() == ".tsv" else ","), "keep_default_na": False}
    try:
        return datasets.load_dataset(reader, data_files={split: str(path)}, split=split, **kwargs)
    except ValueError as error:
        if "corresponds to no data" in str(error):  # `datasets`' words for a file with a header and no rows
            raise ValueError(f"{path}: no rows in split {split!r}; it needs rows for task data") from error
        raise


def tokenize_dataset(
    dataset: Dataset, tokenizer, spec: TaskSpec, max_length: int = 128, num_proc: int | None = None
) -> Dataset:
    """Model inputs for task `spec`, unpadded and truncated to `max_length`, cached by `Dataset.map`.

    Columns: input_ids, attention_mask, token_type_ids (sentence a, or the `[CLS] a [SEP] b [SEP]` pair for
    cross-encoded pairs), their `*_b` twins for sentence b of bi-encoded pairs, `labels` when the data has labels,
    and `length` (tokens; the longer side for bi-encoded pairs) for length bucketing.
    """
    text_columns = list(_text_columns(spec))
    if spec.objective == "supervised" and "hard_negative" in dataset.column_names:
        text_columns.append("hard_negative")
    missing = [c for c in text_columns if c not in dataset.column_names]
    if missing:
        raise ValueError(
            f"task '{spec.name}' needs columns {text_columns}, but the dataset has {dataset.column_names}; "
            "load it with load_cs224n or load_task_data"
        )
    tokenized = dataset.map(
        _tokenize_batch,
        batched=True,
        num_proc=num_proc,
        remove_columns=[c for c in dataset.column_names if c != "label"],
        fn_kwargs={
            "tokenizer": tokenizer,
            "text_columns": text_columns,
            "bi": spec.pair_encoding == "bi",
            "max_length": max_length,
        },
        desc=f"Tokenizing {spec.name}",
    )
    return tokenized.rename_column("label", "labels") if "label" in tokenized.column_names else tokenized


def _tokenize_batch(
    batch: dict[str, list], tokenizer, text_columns: list[str], bi: bool, max_length: int
) -> dict[str, list]:
    def encode(*texts: list[str]) -> dict[str, list]:
        enc = tokenizer(
            *texts, truncation=True, max_length=max_length, return_token_type_ids=True, return_attention_mask=True
        )
        return {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids")}

    if not bi:  # one sentence, or a cross-encoded pair
        out = encode(*(batch[c] for c in text_columns))
        out["length"] = [len(ids) for ids in out["input_ids"]]
        return out
    sides = [encode(batch[column]) for column in text_columns]  # a, b and, for triplets, the hard negative c
    out = {}
    for suffix, side in zip(("", "_b", "_c"), sides):
        out.update({f"{k}{suffix}": v for k, v in side.items()})
    out["length"] = [max(map(len, ids)) for ids in zip(*(side["input_ids"] for side in sides), strict=True)]
    return out


def load_cs224n_tasks(
    config: MultiTaskBertConfig,
    split: str,
    tokenizer=None,
    data_dir: str | os.PathLike | None = None,
    max_length: int = 128,
) -> dict[str, Dataset]:
    """`{task: dataset}` for the config's CS224N tasks, tokenized for each task's head when `tokenizer` is given.

    Tasks whose split does not exist (quora has no test file) are skipped with a warning.
    """
    found = [name for name in config.task_names if name in CS224N_TASKS]
    if not found:
        raise ValueError(
            f"the config has tasks {config.task_names}, none of them a CS224N task {list(CS224N_TASKS)}; "
            "use load_task_data for other data"
        )
    out = {}
    for name in found:
        if split not in _CS224N_FILES[name]["splits"] and split in ("train", "dev", "test"):
            logger.warning(f"the CS224N release has no {name} {split} file; skipping task '{name}'")
            continue
        spec = config.get_task(name)
        _check_spec(spec, cs224n_task_spec(name))
        dataset = load_cs224n(name, split, data_dir)
        out[name] = dataset if tokenizer is None else tokenize_dataset(dataset, tokenizer, spec, max_length)
    return out


def _check_spec(spec: TaskSpec, data: TaskSpec) -> None:
    """The config's head for a CS224N task must fit the task's data (its kind, input and number of classes)."""
    for field in ("kind", "input", "num_labels"):
        if getattr(spec, field) != getattr(data, field):
            raise ValueError(
                f"task '{spec.name}' in the config has {field}={getattr(spec, field)!r}, but the CS224N {spec.name} "
                f"data needs {field}={getattr(data, field)!r}; fix the task in the config or rename it"
            )


__all__ = [
    "CS224N_TASKS",
    "DATA_DIR_ENV",
    "cs224n_task_spec",
    "label_feature",
    "load_cs224n",
    "load_cs224n_tasks",
    "load_task_data",
    "resolve_data_dir",
    "takes_labels",
    "tokenize_dataset",
]
