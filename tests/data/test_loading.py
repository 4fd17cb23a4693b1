"""Loaders: the real CS224N files (counts from shared/data/README.md), users' files, tokenization and caching."""

import json
import logging
import os
from collections import Counter
from pathlib import Path

import datasets
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Value

from hf_mtbert import MultiTaskBertConfig, TaskSpec, default_tasks
from hf_mtbert.data import (
    DATA_DIR_ENV,
    cs224n_task_spec,
    load_cs224n,
    load_cs224n_tasks,
    load_task_data,
    resolve_data_dir,
    tokenize_dataset,
)

SPLITS = [("sst", "train"), ("sst", "dev"), ("sst", "test"), ("quora", "train"), ("quora", "dev"),
          ("sts", "train"), ("sts", "dev"), ("sts", "test"), ("cfimdb", "train"), ("cfimdb", "dev"), ("cfimdb", "test")]
SST_HEADER = "\tid\tsentence\tsentiment\n"


@pytest.fixture(scope="module")
def data_dir() -> Path:
    path = os.environ.get(DATA_DIR_ENV)
    if not path:  # a hard failure, not a skip: these tests are the ones that check the real files
        pytest.fail(f"set {DATA_DIR_ENV} to the CS224N data folder, e.g. {DATA_DIR_ENV}=../shared/data/cs224n")
    return resolve_data_dir(path)


@pytest.fixture(scope="module")
def cs224n(data_dir) -> dict[tuple[str, str], Dataset]:
    return {(task, split): load_cs224n(task, split, data_dir) for task, split in SPLITS}


@pytest.fixture
def user_dir(tmp_path, monkeypatch) -> Path:
    """A folder for small files; `datasets` caches what it reads from them next to them, not in ~/.cache."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def spec(name: str) -> TaskSpec:
    return TaskSpec(**next(t for t in default_tasks() if t["name"] == name))


# --- the data folder ---------------------------------------------------------------------------------------------


def test_resolve_data_dir(tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    with pytest.raises(ValueError, match=DATA_DIR_ENV):
        resolve_data_dir()
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match=f"{DATA_DIR_ENV}.*missing"):
        resolve_data_dir()
    assert resolve_data_dir(tmp_path) == tmp_path  # the argument wins over the variable
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    assert resolve_data_dir() == tmp_path


# --- the real CS224N files ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "split", "rows"),
    [("sst", "train", 8544), ("sst", "dev", 1101), ("sst", "test", 2210), ("quora", "train", 13507),
     ("quora", "dev", 20212), ("sts", "train", 6040), ("sts", "dev", 863), ("sts", "test", 1725),
     ("cfimdb", "train", 1707), ("cfimdb", "dev", 245), ("cfimdb", "test", 488)],
)
def test_row_counts(cs224n, task, split, rows):
    assert cs224n[task, split].num_rows == rows


@pytest.mark.parametrize(
    ("task", "split", "counts"),
    [("sst", "train", [1092, 2218, 1624, 2322, 1288]), ("sst", "dev", [139, 289, 229, 279, 165]),
     ("quora", "train", [3144 + 5332, 1856 + 3175]), ("quora", "dev", [12627, 7585]),
     ("cfimdb", "train", [856, 851]), ("cfimdb", "dev", [123, 122])],
)
def test_label_distributions(cs224n, task, split, counts):
    labels = Counter(cs224n[task, split].to_dict()["label"])
    assert [labels[i] for i in range(len(counts))] == counts
    assert sum(labels.values()) == sum(counts)


def test_features(cs224n):
    names = {
        "sst": ["very negative", "negative", "neutral", "positive", "very positive"],
        "quora": ["not_duplicate", "duplicate"],
        "cfimdb": ["negative", "positive"],
    }
    for (task, split), ds in cs224n.items():
        text = ["sentence"] if task in ("sst", "cfimdb") else ["sentence1", "sentence2"]
        expected = {"id": Value("string"), **{c: Value("string") for c in text}}
        if split != "test":
            expected["label"] = Value("float32") if task == "sts" else ClassLabel(names=names[task])
        assert ds.features == expected, (task, split)
        assert ds.column_names == list(expected), (task, split)


def test_ids_and_text_are_clean_strings(cs224n):
    for (task, split), ds in cs224n.items():
        rows = ds.to_dict()
        ids = rows["id"]
        assert all(isinstance(i, str) and len(i) == 25 for i in ids), (task, split)
        assert len(set(ids)) == len(ids), (task, split)
        for column in set(ds.column_names) & {"sentence", "sentence1", "sentence2"}:
            texts = rows[column]
            assert all(isinstance(t, str) and t and t == t.strip() for t in texts), (task, split, column)
    # SST's sentences start with a space in the files
    assert cs224n["sst", "train"][0]["sentence"].startswith("The Rock is destined")


def test_sts_scores(cs224n):
    for split in ("train", "dev"):
        scores = cs224n["sts", split].to_dict()["label"]
        assert min(scores) == 0.0 and max(scores) == 5.0
        assert len(set(scores)) > 50  # real-valued, not rounded to classes


def test_quora_train_joins_both_files(cs224n, data_dir):
    ds = cs224n["quora", "train"]
    assert ds[0]["id"] == "a4da64a4e943bf8b008d174ca"  # first row of quora-train-small.csv
    assert ds[5000]["id"] == "18a4d1a93a812758ca0b98701"  # first row of the header-less quora-train-pre-left.csv
    assert ds[5000]["sentence1"] == "What is Jack Fraser's IQ?" and ds[5000]["label"] == 1


def test_quora_dev_drops_empty_labels_with_one_warning(data_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="hf_mtbert"):
        ds = load_cs224n("quora", "dev", data_dir)
    warnings = [r for r in caplog.records if r.name.startswith("hf_mtbert") and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "quora-dev.csv" in warnings[0].getMessage() and "dropped 2 " in warnings[0].getMessage()
    assert ds.num_rows == 20212
    assert "ad118c967d683c93883bf072d" not in ds.to_dict()["id"]


def test_cs224n_argument_errors(data_dir):
    with pytest.raises(ValueError, match="no quora test file.*'dev'"):
        load_cs224n("quora", "test", data_dir)
    with pytest.raises(ValueError, match="unknown CS224N task 'para'.*'sst'"):
        load_cs224n("para", "train", data_dir)
    with pytest.raises(ValueError, match="unknown split 'validation'"):
        load_cs224n("sst", "validation", data_dir)


# --- CS224N layout on small files: what pandas would otherwise mangle, and malformed rows -------------------------


def test_numbers_and_na_words_stay_strings(user_dir):
    write(user_dir / "ids-sst-train.csv",
          SST_HEADER + "0\t0000000000000000000000001\t NA\t2\n1\t1e5\t null\t0\n2\tabc\t\"a \"\"quoted\"\" one\"\t4\n")
    ds = load_cs224n("sst", "train", user_dir)
    assert ds["id"] == ["0000000000000000000000001", "1e5", "abc"]
    assert ds["sentence"] == ["NA", "null", 'a "quoted" one']
    assert ds["label"] == [2, 0, 4]


def test_test_student_header(user_dir):
    write(user_dir / "ids-cfimdb-test-student.csv", "0\t\tid\tsentence\n1\t0.0\tdeadbeef\t Great .\n")
    ds = load_cs224n("cfimdb", "test", user_dir)
    assert ds.column_names == ["id", "sentence"] and ds[0] == {"id": "deadbeef", "sentence": "Great ."}


@pytest.mark.parametrize(
    ("row", "message"),
    [("0\tbad1\t fine\t7", r"ids-sst-train.csv: row 0 \(id 'bad1'\): label '7' .*\[0, 5\)"),
     ("0\tbad2\t fine\tgood", r"ids-sst-train.csv: row 0 \(id 'bad2'\): label 'good'"),
     ("0\tbad3\t fine\t2.5", r"id 'bad3'.*label '2.5'"),
     ("0\tbad4\t  \t1", r"ids-sst-train.csv: row 0 \(id 'bad4'\) has an empty 'sentence'")],
)
def test_malformed_rows_raise(user_dir, row, message):
    write(user_dir / "ids-sst-train.csv", SST_HEADER + row + "\n")
    with pytest.raises(ValueError, match=message):
        load_cs224n("sst", "train", user_dir)


def test_sts_score_out_of_range(user_dir):
    write(user_dir / "sts-dev.csv", "\tid\tsentence1\tsentence2\tsimilarity\n0\tx1\ta\tb\t5.5\n")
    with pytest.raises(ValueError, match=r"sts-dev.csv: row 0 \(id 'x1'\): label '5.5'.*label_range \[0.0, 5.0\]"):
        load_cs224n("sts", "dev", user_dir)


def test_missing_file(user_dir):
    with pytest.raises(FileNotFoundError, match="ids-sst-dev.csv"):
        load_cs224n("sst", "dev", user_dir)


# --- users' own data ---------------------------------------------------------------------------------------------


def test_user_csv_with_column_mapping(user_dir):
    path = write(user_dir / "reviews.csv", 'text,stars,other\n"Loved it, really",4,x\nNA,0,y\n 12 ,2,z\n')
    ds = load_task_data({"path": path, "columns": {"sentence": "text", "label": "stars"}}, spec("sst"))
    assert ds.features == {"sentence": Value("string"), "label": ClassLabel(names=list(spec("sst").id2label.values()))}
    assert ds["sentence"] == ["Loved it, really", "NA", "12"]
    assert ds["label"] == [4, 0, 2]


def test_user_tsv_and_delimiter(user_dir):
    tsv = write(user_dir / "pairs.tsv", "id\tq1\tq2\tdup\n7\tHow?\tWhy?\t1\n")
    ds = load_task_data({"path": tsv, "columns": {"sentence1": "q1", "sentence2": "q2", "label": "dup"}}, spec("quora"))
    assert ds[0] == {"id": "7", "sentence1": "How?", "sentence2": "Why?", "label": 1}
    semi = write(user_dir / "pairs.csv", "sentence1;sentence2;label\nA;B;0\n")
    ds = load_task_data({"path": str(semi), "delimiter": ";"}, spec("quora"))
    assert ds.column_names == ["sentence1", "sentence2", "label"] and ds["label"] == [0]


def test_user_jsonl_with_class_names(user_dir):
    rows = [
        {"q": "a", "r": "b", "y": "duplicate"},
        {"q": "c", "r": "d", "y": "not_duplicate"},
        {"q": "e", "r": "f", "y": 1},
    ]
    path = write(user_dir / "pairs.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    ds = load_task_data({"path": path, "columns": {"sentence1": "q", "sentence2": "r", "label": "y"}}, spec("quora"))
    assert ds["label"] == [1, 0, 1]


def test_user_json_regression_and_unlabeled(user_dir):
    path = write(user_dir / "sts.json", json.dumps([{"sentence1": "a", "sentence2": "b", "label": 3.2}]))
    ds = load_task_data(path, spec("sts"))
    assert ds.features["label"] == Value("float32") and ds["label"] == [pytest.approx(3.2)]
    path = write(user_dir / "sts_test.json", json.dumps([{"sentence1": "a", "sentence2": "b"}]))
    assert load_task_data(path, spec("sts"), split="test").column_names == ["sentence1", "sentence2"]


def test_user_parquet_and_saved_folder(user_dir):
    rows = {"sentence": ["good", "bad"], "label": [1, 0]}
    Dataset.from_dict(rows).to_parquet(str(user_dir / "d.parquet"))
    binary = TaskSpec(name="cfimdb", id2label={0: "negative", 1: "positive"})
    assert load_task_data(user_dir / "d.parquet", binary)["label"] == [1, 0]
    DatasetDict(train=Dataset.from_dict(rows), dev=Dataset.from_dict({"sentence": ["meh"], "label": [0]})).save_to_disk(
        str(user_dir / "saved")
    )
    assert load_task_data(user_dir / "saved", binary, split="dev")["sentence"] == ["meh"]
    assert load_task_data({"path": user_dir / "saved", "split": "train"}, binary).num_rows == 2
    with pytest.raises(ValueError, match=r"no split 'test'.*\['train', 'dev'\]"):
        load_task_data(user_dir / "saved", binary, split="test")


def test_user_missing_column(user_dir):
    path = write(user_dir / "reviews.csv", "text,stars\nfine,1\n")
    with pytest.raises(ValueError, match=r"needs a text column 'sentence'.*\['text', 'stars'\].*'columns'"):
        load_task_data(path, spec("sst"))
    with pytest.raises(ValueError, match=r"maps 'label' to 'score'.*\['text', 'stars'\]"):
        load_task_data({"path": path, "columns": {"sentence": "text", "label": "score"}}, spec("sst"))
    with pytest.raises(ValueError, match=r"\['text'\] are not ours"):
        load_task_data({"path": path, "columns": {"text": "sentence"}}, spec("sst"))


@pytest.mark.parametrize(
    ("task", "content", "message"),
    [("sst", "sentence,label\nok,5\nbad,1\n", r"row 0: label 5 of task 'sst' is not a class id in \[0, 5\)"),
     ("sst", "sentence,label\nok,1\nbad,-1\n", r"row 1: label -1 "),
     ("sst", "sentence,label\nok,1\nbad,\n", r"row 1: label '' "),
     ("sst", "sentence,label\nok,1\nbad,great\n", r"row 1: label 'great'.*'very positive'"),
     ("sts", "sentence1,sentence2,label\na,b,6.0\n", r"row 0: label 6.0 of task 'sts' is outside its label_range"),
     ("sts", "sentence1,sentence2,label\na,b,high\n", r"row 0: label 'high' of regression task 'sts' is not a number"),
     ("sst", "sentence,label\n,1\n", r"row 0 has an empty 'sentence'")],
)
def test_user_bad_values(user_dir, task, content, message):
    path = write(user_dir / "bad.csv", content)
    with pytest.raises(ValueError, match=message) as error:
        load_task_data(path, spec(task))
    assert "bad.csv" in str(error.value)


def test_user_empty_and_unreadable(user_dir):
    with pytest.raises(ValueError, match=r"header.csv: no rows in split 'train'"):
        load_task_data(write(user_dir / "header.csv", "sentence,label\n"), spec("sst"))
    with pytest.raises(ValueError, match=r"empty.jsonl: the file is empty"):
        load_task_data(write(user_dir / "empty.jsonl", ""), spec("sst"))
    with pytest.raises(ValueError, match=r"'\.xlsx'.*\.parquet"):
        load_task_data(write(user_dir / "a.xlsx", "x"), spec("sst"))
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        load_task_data(user_dir / "nope.csv", spec("sst"))
    with pytest.raises(ValueError, match=r"takes only.*got keys \['file'\]"):
        load_task_data({"file": "x.csv"}, spec("sst"))


# --- tokenization ------------------------------------------------------------------------------------------------


def test_tokenize_single(cs224n, minilm_tokenizer):
    ds = cs224n["sst", "dev"].select(range(64))
    out = tokenize_dataset(ds, minilm_tokenizer, spec("sst"), max_length=16)
    assert out.column_names == ["labels", "input_ids", "attention_mask", "token_type_ids", "length"]
    assert out.features["labels"] == ds.features["label"]
    assert out["labels"] == ds["label"]
    row = out[0]
    assert row["input_ids"] == minilm_tokenizer(ds[0]["sentence"], truncation=True, max_length=16)["input_ids"]
    assert max(out["length"]) == 16 and out["length"] == [len(i) for i in out["input_ids"]]
    assert min(out["length"]) < 16  # not padded: the collator pads per batch


def test_tokenize_cross_pair_marks_second_segment(cs224n, minilm_tokenizer):
    ds = cs224n["quora", "dev"].select(range(16))
    out = tokenize_dataset(ds, minilm_tokenizer, spec("quora"))
    assert "input_ids_b" not in out.column_names
    for raw, row in zip(ds, out, strict=True):
        expected = minilm_tokenizer(raw["sentence1"], raw["sentence2"], truncation=True, max_length=128)
        assert row["input_ids"] == expected["input_ids"]
        first_sep = row["input_ids"].index(minilm_tokenizer.sep_token_id)
        assert row["token_type_ids"] == [0] * (first_sep + 1) + [1] * (len(row["input_ids"]) - first_sep - 1)


def test_tokenize_bi_pair(cs224n, minilm_tokenizer):
    ds = cs224n["sts", "test"].select(range(16))
    out = tokenize_dataset(ds, minilm_tokenizer, spec("sts"))
    assert out.column_names == ["input_ids", "attention_mask", "token_type_ids", "input_ids_b", "attention_mask_b",
                                "token_type_ids_b", "length"]  # no labels on the test split
    for raw, row in zip(ds, out, strict=True):
        assert row["input_ids"] == minilm_tokenizer(raw["sentence1"])["input_ids"]
        assert row["input_ids_b"] == minilm_tokenizer(raw["sentence2"])["input_ids"]
        assert set(row["token_type_ids_b"]) == {0}
        assert row["length"] == max(len(row["input_ids"]), len(row["input_ids_b"]))


def test_tokenize_needs_the_text_columns(cs224n, minilm_tokenizer):
    with pytest.raises(ValueError, match=r"needs columns \['sentence1', 'sentence2'\]"):
        tokenize_dataset(cs224n["sst", "dev"], minilm_tokenizer, spec("quora"))


def test_tokenize_is_cached(user_dir, minilm_tokenizer):
    path = write(user_dir / "d.csv", "sentence,label\n" + "".join(f"sentence number {i},{i % 5}\n" for i in range(50)))
    first = tokenize_dataset(load_task_data(path, spec("sst")), minilm_tokenizer, spec("sst"))
    cache = Path(first.cache_files[0]["filename"])
    written = cache.stat().st_mtime_ns
    again = tokenize_dataset(load_task_data(path, spec("sst")), minilm_tokenizer, spec("sst"))  # a fresh load
    assert [Path(f["filename"]) for f in again.cache_files] == [cache]
    assert cache.stat().st_mtime_ns == written  # read back, not recomputed
    other = tokenize_dataset(load_task_data(path, spec("sst")), minilm_tokenizer, spec("sst"), max_length=8)
    assert Path(other.cache_files[0]["filename"]) != cache


# --- several tasks from a config ---------------------------------------------------------------------------------


def test_load_cs224n_tasks(data_dir, minilm_tokenizer):
    sts = next(t for t in default_tasks() if t["name"] == "sts")
    config = MultiTaskBertConfig(tasks=[cs224n_task_spec("cfimdb").to_dict(), sts, {"name": "other", "num_labels": 3}])
    out = load_cs224n_tasks(config, "dev", minilm_tokenizer, data_dir=data_dir, max_length=32)
    assert list(out) == ["cfimdb", "sts"]
    assert out["cfimdb"].num_rows == 245 and max(out["cfimdb"]["length"]) == 32
    assert "input_ids_b" in out["sts"].column_names and out["sts"].features["labels"] == Value("float32")


def test_load_cs224n_tasks_test_split_skips_quora(data_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="hf_mtbert"):
        out = load_cs224n_tasks(MultiTaskBertConfig(), "test", data_dir=data_dir)
    assert list(out) == ["sst", "sts"] and "label" not in out["sst"].column_names
    assert any("no quora test file" in r.getMessage() for r in caplog.records)


def test_load_cs224n_tasks_checks_the_config(data_dir):
    with pytest.raises(ValueError, match="task 'sst' in the config has num_labels=3.*num_labels=5"):
        load_cs224n_tasks(MultiTaskBertConfig(tasks=[{"name": "sst", "num_labels": 3}]), "dev", data_dir=data_dir)
    with pytest.raises(ValueError, match=r"none of them a CS224N task"):
        load_cs224n_tasks(MultiTaskBertConfig(tasks=[{"name": "para", "num_labels": 2}]), "dev", data_dir=data_dir)
