"""Model cards rendered from a checkpoint's own evaluation results and training arguments."""

import json

import pytest
import torch
import yaml

from hf_mtbert import MultiTaskBertConfig, MultiTaskBertModel
from hf_mtbert.card import model_card, write_model_card

RESULTS = {"eval_sst_accuracy": 0.4512, "eval_sst_macro_f1": 0.4023, "eval_quora_accuracy": 0.8276,
           "eval_sts_pearson": 0.8811, "eval_sts_spearman": 0.867, "eval_overall": 0.7399, "train_steps": 1319,
           "train_seconds": 633.0, "machine": "Test CPU | 2 threads"}


@pytest.fixture
def folder(tmp_path):
    torch.manual_seed(0)
    config = MultiTaskBertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                 intermediate_size=37, max_position_embeddings=64)
    MultiTaskBertModel(config).save_pretrained(tmp_path / "ckpt")
    return tmp_path / "ckpt"


def _front_matter(text: str) -> dict:
    return yaml.safe_load(text.split("---")[1])


def test_card_carries_the_checkpoints_own_results(folder):
    (folder / "eval_results.json").write_text(json.dumps(RESULTS))
    (folder / "training_args.json").write_text(json.dumps(
        {"learning_rate": 1e-4, "sampling_strategy": "sqrt", "smart": True, "grad_surgery": "pcgrad",
         "base_model": "sentence-transformers/all-MiniLM-L6-v2"}))
    text = str(model_card(folder, "someone/mtbert"))
    meta = _front_matter(text)
    metrics = {(r["task"]["type"], r["dataset"]["type"], m["type"]): m["value"]
               for r in meta["model-index"][0]["results"] for m in r["metrics"]}
    assert metrics[("text-classification", "sst5", "accuracy")] == RESULTS["eval_sst_accuracy"]
    assert metrics[("text-classification", "quora", "accuracy")] == RESULTS["eval_quora_accuracy"]
    assert metrics[("sentence-similarity", "stsb", "pearson")] == RESULTS["eval_sts_pearson"]
    assert meta["base_model"] == "sentence-transformers/all-MiniLM-L6-v2" and "hf-mtbert" in meta["tags"]
    assert "| sst | accuracy | 0.4512 |" in text and "| all three | CS224N overall | 0.7399 |" in text
    assert "| sampling_strategy | sqrt |" in text and "| optimizer steps | 1319 |" in text
    assert "Test CPU" in text and "Quora caveat" in text
    assert "| one sentence, [CLS] pooler |" in text  # each head says what it pools
    assert "| sentence pair, encoded apart, mean of the token states |" in text
    for task in ("sentiment-mt", "paraphrase-mt", "similarity-mt"):
        assert f'pipeline("{task}", model="someone/mtbert", trust_remote_code=True)' in text
    assert "gao2021simcse" not in text and "jiang2020smart" in text and "yu2020gradient" in text


def test_card_without_results_reports_none(folder):
    text = str(model_card(folder))
    assert "carries no evaluation results" in text and "model-index" not in _front_matter(text)
    assert "Quora caveat" not in text  # the base model is not recorded: no claim about it
    path = write_model_card(folder, "x/y")
    assert path.name == "README.md" and "x/y" in path.read_text()


def test_card_lists_only_the_pipelines_the_heads_support(tmp_path):
    config = MultiTaskBertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                 intermediate_size=37, tasks=[{"name": "sst", "num_labels": 5},
                                                              {"name": "simcse", "kind": "contrastive"}])
    MultiTaskBertModel(config).save_pretrained(tmp_path)
    text = str(model_card(tmp_path))
    assert "sentiment-mt" in text and "similarity-mt" not in text and "gao2021simcse" in text
