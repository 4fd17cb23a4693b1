import re

import pytest

from hf_mtbert import MultiTaskBertConfig, TaskSpec


def test_defaults_are_the_cs224n_tasks():
    config = MultiTaskBertConfig()
    assert config.model_type == "mtbert"
    assert config.task_names == ["sst", "quora", "sts"]
    sst, quora, sts = (config.get_task(n) for n in config.task_names)
    assert (sst.kind, sst.num_labels, sst.input) == ("classification", 5, "single")
    assert sst.id2label[0] == "very negative" and sst.id2label[4] == "very positive"
    assert (quora.kind, quora.num_labels, quora.input, quora.pair_encoding) == ("classification", 2, "pair", "cross")
    assert (sts.kind, sts.num_labels, sts.combine, sts.label_range) == ("regression", 1, "cosine", (0.0, 5.0))


def test_bert_fields_present():
    config = MultiTaskBertConfig(hidden_size=64, num_attention_heads=4)
    for field in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                  "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings",
                  "type_vocab_size", "initializer_range", "layer_norm_eps", "pad_token_id", "classifier_dropout"):
        assert hasattr(config, field), field


def test_save_load_round_trip(tmp_path, tiny_config):
    tiny_config.save_pretrained(tmp_path)
    loaded = MultiTaskBertConfig.from_pretrained(tmp_path)
    assert loaded.tasks == tiny_config.tasks
    assert loaded.hidden_size == 32
    # id2label keys come back as ints despite JSON's string keys
    assert loaded.get_task("sst").id2label[3] == "LABEL_3"


def test_loads_from_plain_bert_config(minilm_path):
    config = MultiTaskBertConfig.from_pretrained(minilm_path)
    assert (config.hidden_size, config.num_hidden_layers) == (384, 6)
    assert config.task_names == ["sst", "quora", "sts"]


def test_from_pretrained_overrides_are_validated(tmp_path):
    """`from_pretrained(path, tasks=...)` must normalise and check the override as the constructor does (transformers
    sets keyword overrides with setattr after construction, which skipped every check: the tasks stayed partial
    dicts and the model then failed with KeyError: 'kind')."""
    from transformers import BertConfig

    BertConfig(hidden_size=64, num_attention_heads=4, intermediate_size=128).save_pretrained(tmp_path)
    config = MultiTaskBertConfig.from_pretrained(tmp_path, tasks=[{"name": "sst", "num_labels": 5}])
    assert config.get_task("sst").kind == "classification" and config.tasks[0]["input"] == "single"
    spec = MultiTaskBertConfig.from_pretrained(tmp_path, tasks=[TaskSpec(name="x", num_labels=3)]).tasks[0]
    assert isinstance(spec, dict) and spec["num_labels"] == 3
    with pytest.raises(ValueError, match="kind='nope'"):
        MultiTaskBertConfig.from_pretrained(tmp_path, tasks=[{"name": "a", "kind": "nope"}])
    with pytest.raises(ValueError, match="not a multiple of num_attention_heads=5"):
        MultiTaskBertConfig.from_pretrained(tmp_path, num_attention_heads=5)
    config, unused = MultiTaskBertConfig.from_pretrained(tmp_path, hidden_dropout_prob=0.3, not_a_field=1,
                                                         return_unused_kwargs=True)
    assert config.hidden_dropout_prob == 0.3 and config.hidden_size == 64 and unused == {"not_a_field": 1}


def test_defaults_fill_in():
    spec = TaskSpec(name="nli", num_labels=3, input="pair")
    assert spec.pair_encoding == "cross"
    bi = TaskSpec(name="nli", num_labels=3, input="pair", pair_encoding="bi")
    assert bi.combine == "concat"
    assert TaskSpec(name="x", id2label={0: "a", 1: "b"}).num_labels == 2


@pytest.mark.parametrize(
    "tasks, message",
    [
        ([{"name": "a", "num_labels": 2}, {"name": "a", "num_labels": 3}], "duplicate task names ['a']"),
        ([{"name": "a", "kind": "ranking"}], "kind='ranking' is not supported"),
        ([{"name": "a", "num_labels": 3, "id2label": {0: "x", 1: "y"}}], "num_labels=3 disagrees with id2label"),
        ([{"name": "a", "kind": "regression", "id2label": {0: "x"}}], "a regression task has no labels"),
        ([{"name": "a", "kind": "regression", "num_labels": 2}], "regression task has num_labels=1"),
        ([{"name": "a", "num_labels": 1}], "num_labels >= 2"),
        ([{"name": "a", "num_labels": 2, "pooling": "max"}], "pooling='max' is not supported"),
        ([{"name": "a", "num_labels": 2, "input": "triple"}], "input='triple' is not supported"),
        ([{"name": "a", "num_labels": 2, "pair_encoding": "bi"}], "apply to pair tasks only"),
        ([{"name": "a", "num_labels": 2, "input": "pair", "combine": "concat"}], "needs pair_encoding='bi'"),
        ([{"name": "a", "num_labels": 2, "input": "pair", "pair_encoding": "bi", "combine": "cosine"}],
         "combine='cosine' is for regression"),
        ([{"name": "a", "kind": "regression", "input": "pair", "pair_encoding": "bi", "combine": "cosine"}],
         "set label_range"),
        ([{"name": "a", "kind": "regression", "label_range": [5, 0]}], "needs low < high"),
        ([{"name": "a", "num_labels": 2, "label_smoothing": 1.5}], "label_smoothing=1.5"),
        ([{"name": "a", "num_labels": 2, "label_range": [0, 1]}], "regression tasks only"),
        ([{"name": "a", "num_labels": 2, "heads": 3}], "unknown fields ['heads']"),
        ([{"name": "not valid", "num_labels": 2}], "must be a Python identifier"),
        ([], "tasks is empty"),
    ],
)
def test_bad_tasks_raise(tasks, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        MultiTaskBertConfig(tasks=tasks)


def test_bad_architecture_raises():
    with pytest.raises(ValueError, match="not a multiple of num_attention_heads"):
        MultiTaskBertConfig(hidden_size=30, num_attention_heads=4)
    with pytest.raises(ValueError, match="relative_key"):
        MultiTaskBertConfig(position_embedding_type="relative_key")


def test_get_task_errors_list_known_tasks():
    config = MultiTaskBertConfig()
    with pytest.raises(ValueError, match=r"unknown task 'nli'; this model has tasks \['sst', 'quora', 'sts'\]"):
        config.get_task("nli")
    with pytest.raises(ValueError, match="task is required"):
        config.get_task(None)
    single = MultiTaskBertConfig(tasks=[{"name": "only", "num_labels": 3}])
    assert single.get_task(None).name == "only"


def test_model_from_pretrained_task_override(tiny_bert):
    """Config keywords given to the model's from_pretrained go through the same checks."""
    from hf_mtbert import MultiTaskBertModel

    model = MultiTaskBertModel.from_pretrained(tiny_bert, tasks=[{"name": "sst", "num_labels": 5}])
    assert model.config.task_names == ["sst"] and list(model.heads) == ["sst"]
    with pytest.raises(ValueError, match="regression task has num_labels=1"):
        MultiTaskBertModel.from_pretrained(tiny_bert, tasks=[{"name": "s", "kind": "regression", "num_labels": 5}])
