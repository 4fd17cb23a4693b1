"""MultiTaskCollator: per-batch padding, dtypes, concurrent task batches, and batches the model takes as they are."""

import pytest
import torch
from datasets import Dataset, Features, Value

from hf_mtbert import MultiTaskBertModel, TaskSpec, default_tasks
from hf_mtbert.data import MultiTaskCollator, label_feature, tokenize_dataset

SENTENCES = ["A man is playing a guitar.", "ok", "No one goes unindicted here , which is probably for the best ."]
OTHERS = ["A woman plays the violin in a small room at night.", "fine", "Nobody is spared ."]


def spec(name: str) -> TaskSpec:
    return TaskSpec(**next(t for t in default_tasks() if t["name"] == name))


@pytest.fixture(scope="module")
def rows(minilm_tokenizer) -> dict[str, list[dict]]:
    """Three tokenized rows per default task, each with its "task" key, as a Trainer's dataloader hands them over."""
    data = {
        "sst": {"id": ["a", "b", "c"], "sentence": SENTENCES, "label": [4, 2, 1]},
        "quora": {"id": ["d", "e", "f"], "sentence1": SENTENCES, "sentence2": OTHERS, "label": [1, 0, 1]},
        "sts": {"id": ["g", "h", "i"], "sentence1": SENTENCES, "sentence2": OTHERS, "label": [3.8, 0.5, 2.25]},
    }
    out = {}
    for task, columns in data.items():
        features = Features({k: Value("string") for k in columns if k != "label"})
        features["label"] = label_feature(spec(task))
        tokenized = tokenize_dataset(Dataset.from_dict(columns, features=features), minilm_tokenizer, spec(task))
        out[task] = [{**row, "task": task} for row in tokenized]
    return out


@pytest.fixture(scope="module")
def model(minilm_path):
    return MultiTaskBertModel.from_pretrained(minilm_path).eval()  # default tasks: sst, quora, sts


def test_single_task_pads_to_longest(rows, minilm_tokenizer):
    batch = MultiTaskCollator(minilm_tokenizer)(rows["sst"])
    assert list(batch) == ["task", "input_ids", "attention_mask", "token_type_ids", "labels"]
    assert batch["task"] == "sst"
    lengths = [r["length"] for r in rows["sst"]]
    assert batch["input_ids"].shape == (3, max(lengths))
    assert batch["attention_mask"].sum(dim=1).tolist() == lengths
    short = lengths.index(min(lengths))
    assert (batch["input_ids"][short, min(lengths):] == minilm_tokenizer.pad_token_id).all()
    assert batch["input_ids"][short, : min(lengths)].tolist() == rows["sst"][short]["input_ids"]
    for key in ("input_ids", "attention_mask", "token_type_ids", "labels"):
        assert batch[key].dtype == torch.long, key
    assert batch["labels"].tolist() == [4, 2, 1]


def test_cross_pair_keeps_segments(rows, minilm_tokenizer):
    batch = MultiTaskCollator(minilm_tokenizer)(rows["quora"])
    assert "input_ids_b" not in batch
    for i, row in enumerate(rows["quora"]):
        n = len(row["input_ids"])
        assert batch["token_type_ids"][i, :n].tolist() == row["token_type_ids"]
        assert 1 in row["token_type_ids"]
        assert batch["token_type_ids"][i, n:].eq(0).all() and batch["attention_mask"][i, n:].eq(0).all()


def test_bi_pair_pads_each_side_to_its_own_longest(rows, minilm_tokenizer):
    batch = MultiTaskCollator(minilm_tokenizer)(rows["sts"])
    longest_a = max(len(r["input_ids"]) for r in rows["sts"])
    longest_b = max(len(r["input_ids_b"]) for r in rows["sts"])
    assert longest_a != longest_b  # else this test could not tell the sides apart
    assert batch["input_ids"].shape == (3, longest_a)
    assert batch["input_ids_b"].shape == batch["attention_mask_b"].shape == batch["token_type_ids_b"].shape
    assert batch["input_ids_b"].shape == (3, longest_b)
    assert batch["attention_mask_b"].sum(dim=1).tolist() == [len(r["input_ids_b"]) for r in rows["sts"]]
    assert batch["labels"].dtype == torch.float32
    assert batch["labels"].tolist() == pytest.approx([3.8, 0.5, 2.25])


def test_pad_to_multiple_of(rows, minilm_tokenizer):
    batch = MultiTaskCollator(minilm_tokenizer, pad_to_multiple_of=8)(rows["sts"])
    assert batch["input_ids"].shape[1] % 8 == 0 and batch["input_ids_b"].shape[1] % 8 == 0
    assert batch["input_ids"].shape[1] >= max(len(r["input_ids"]) for r in rows["sts"])


def test_rows_without_labels(rows, minilm_tokenizer):
    unlabeled = [{k: v for k, v in r.items() if k != "labels"} for r in rows["sst"]]
    assert "labels" not in MultiTaskCollator(minilm_tokenizer)(unlabeled)


def test_several_tasks_give_task_batches_in_order(rows, minilm_tokenizer):
    mixed = [rows["sts"][0], rows["sst"][0], rows["sts"][1], rows["quora"][2], rows["sst"][1]]
    batch = MultiTaskCollator(minilm_tokenizer)(mixed)
    assert list(batch) == ["task_batches"]
    assert list(batch["task_batches"]) == ["sts", "sst", "quora"]
    sts = batch["task_batches"]["sts"]
    assert "task" not in sts and sts["input_ids"].shape[0] == 2 and "input_ids_b" in sts
    assert sts["labels"].dtype == torch.float32 and batch["task_batches"]["sst"]["labels"].tolist() == [4, 2]
    assert batch["task_batches"]["quora"]["labels"].tolist() == [1]


def test_errors(rows, minilm_tokenizer):
    collate = MultiTaskCollator(minilm_tokenizer)
    with pytest.raises(ValueError, match="no features"):
        collate([])
    with pytest.raises(ValueError, match="feature 1 has task=None"):
        collate([rows["sst"][0], {k: v for k, v in rows["sst"][1].items() if k != "task"}])
    with pytest.raises(ValueError, match=r"unexpected \['sentence'\]"):
        collate([{"task": "sst", "sentence": "raw text", "input_ids": [101, 102]}])
    with pytest.raises(ValueError, match="rows have different keys"):
        collate([rows["sts"][0], {k: v for k, v in rows["sts"][1].items() if k != "input_ids_b"}])


@torch.inference_mode()
def test_batches_run_through_the_model(rows, minilm_tokenizer, model):
    collate = MultiTaskCollator(minilm_tokenizer)
    for task in ("sst", "quora", "sts"):
        out = model(**collate(rows[task]))
        assert out.loss is not None and torch.isfinite(out.loss), task
        assert out.logits.shape[0] == 3
    for task, batch in collate([rows["sts"][0], rows["quora"][0], rows["sts"][2]])["task_batches"].items():
        assert torch.isfinite(model(task=task, **batch).loss), task


@torch.inference_mode()
def test_padding_does_not_change_predictions(rows, minilm_tokenizer, model):
    """A bi-encoded row gives the same score alone and padded inside a batch."""
    collate = MultiTaskCollator(minilm_tokenizer)
    together = model(**collate(rows["sts"])).logits
    alone = torch.cat([model(**collate([row])).logits for row in rows["sts"]])
    torch.testing.assert_close(together, alone, atol=1e-4, rtol=1e-4)

