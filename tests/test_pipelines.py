"""The sentiment-mt, paraphrase-mt and similarity-mt pipelines, with the package and from a checkpoint without it."""

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest
from _helpers import rounded
from transformers import pipeline

from hf_mtbert import MultiTaskBertConfig, MultiTaskBertModel
from hf_mtbert.configuration_mtbert import DEFAULT_PIPELINE_REPO
from hf_mtbert.inference import predict

SENTENCES = ["What a lovely film.", "Dull, long and badly acted.", "It was fine, I suppose."]
PAIRS = [("How do I learn Python?", "What is the best way to learn Python?"),
         ("A man plays a guitar.", "A cat sleeps on the sofa.")]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, minilm_tokenizer):
    """A small random model with the real tokenizer's vocabulary and the three CS224N heads."""
    import torch

    torch.manual_seed(0)
    config = MultiTaskBertConfig(vocab_size=minilm_tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=4, intermediate_size=37, max_position_embeddings=128)
    folder = tmp_path_factory.mktemp("pipelines") / "mtbert"
    MultiTaskBertModel(config).save_pretrained(folder)
    minilm_tokenizer.save_pretrained(folder)
    return folder


def _outputs(folder, **kwargs):
    sentiment = pipeline("sentiment-mt", model=str(folder), **kwargs)
    paraphrase = pipeline("paraphrase-mt", model=str(folder), **kwargs)
    similarity = pipeline("similarity-mt", model=str(folder), **kwargs)
    return {
        "sentiment": sentiment(SENTENCES),
        "sentiment_top2": sentiment(SENTENCES[0], top_k=2),
        "paraphrase": paraphrase([{"text": a, "text_pair": b} for a, b in PAIRS]),
        "similarity": similarity(PAIRS),
    }


def test_checkpoint_lists_the_pipelines_and_ships_their_code(checkpoint):
    config = json.loads((checkpoint / "config.json").read_text())
    assert set(config["custom_pipelines"]) == {"sentiment-mt", "paraphrase-mt", "similarity-mt"}
    assert config["custom_pipelines"]["sentiment-mt"]["impl"] == "pipeline_mtbert.SentimentPipeline"
    source = (checkpoint / "pipeline_mtbert.py").read_text()
    assert "hf_mtbert" not in source.replace("pipeline_mtbert", "")
    # loaded through the package, the config leaves them out, so no trust_remote_code is asked for
    assert not hasattr(MultiTaskBertConfig.from_pretrained(checkpoint), "custom_pipelines")


def test_pipelines_match_predict_and_are_json(checkpoint):
    out = _outputs(checkpoint)
    json.dumps(out)  # plain strings and floats
    model = MultiTaskBertModel.from_pretrained(checkpoint).eval()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    expected = predict(model, tokenizer, "sst", SENTENCES)
    for got, want in zip(out["sentiment"], expected, strict=True):
        assert got["label"] == want["label"] and got["score"] == pytest.approx(want["score"], rel=1e-5)
    top2 = out["sentiment_top2"]
    assert len(top2) == 2 and top2[0]["score"] >= top2[1]["score"] and top2[0]["label"] == out["sentiment"][0]["label"]
    quora = predict(model, tokenizer, "quora", [a for a, _ in PAIRS], [b for _, b in PAIRS])
    sts = predict(model, tokenizer, "sts", [a for a, _ in PAIRS], [b for _, b in PAIRS])
    for got, want in zip(out["paraphrase"], quora, strict=True):
        assert got["label"] == want["label"] and got["score"] == pytest.approx(want["score"], rel=1e-5)
        p1 = got["paraphrase_probability"]
        assert p1 == pytest.approx(got["score"] if got["label"] == "duplicate" else 1 - got["score"], rel=1e-5)
    for got, want in zip(out["similarity"], sts, strict=True):
        assert got["score"] == pytest.approx(want["score"], rel=1e-5, abs=1e-6) and 0.0 <= got["score"] <= 5.0


def test_batched_equals_one_by_one(checkpoint):
    sentiment = pipeline("sentiment-mt", model=str(checkpoint))
    similarity = pipeline("similarity-mt", model=str(checkpoint))
    one = [sentiment(s) for s in SENTENCES]
    batched = sentiment(SENTENCES, batch_size=3)
    for a, b in zip(one, batched, strict=True):
        assert a["label"] == b["label"] and a["score"] == pytest.approx(b["score"], rel=1e-5)
    pairs = PAIRS * 2
    for a, b in zip([similarity(p) for p in pairs], similarity(pairs, batch_size=4), strict=True):
        assert a["score"] == pytest.approx(b["score"], rel=1e-5, abs=1e-6)


def test_long_input_is_truncated(checkpoint):
    sentiment = pipeline("sentiment-mt", model=str(checkpoint))
    assert set(sentiment("word " * 2000)) == {"label", "score"}  # 2000 tokens > 128 positions: truncated


@pytest.mark.parametrize("task, bad, message", [
    ("sentiment-mt", "", "the sentence is empty"),
    ("sentiment-mt", 42, "must be a string, got int"),
    ("sentiment-mt", ("a", "b"), "takes one sentence per input"),
    ("paraphrase-mt", "just one sentence", "takes sentence pairs"),
    ("paraphrase-mt", {"text": "a", "other": "b"}, "got keys \\['other', 'text'\\]"),
    ("similarity-mt", ("a", "  "), "text_pair is empty"),
])
def test_bad_input_is_a_clear_error(checkpoint, task, bad, message):
    with pytest.raises(ValueError, match=message):
        pipeline(task, model=str(checkpoint))(bad)


def test_head_choice(checkpoint):
    with pytest.raises(ValueError, match="needs a single-sentence classification head; task 'quora'"):
        pipeline("sentiment-mt", model=str(checkpoint), head="quora")
    with pytest.raises(ValueError, match="head='nli' is not a task"):
        pipeline("sentiment-mt", model=str(checkpoint), head="nli")
    assert pipeline("sentiment-mt", model=str(checkpoint), head="sst").spec["name"] == "sst"


def test_pipelines_from_a_checkpoint_without_the_package(checkpoint, tmp_path):
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(
        """
        import json, sys
        sys.modules["hf_mtbert"] = None  # the package cannot be imported in this process
        from transformers import pipeline
        folder, out, data = sys.argv[1:]
        sentences, pairs = json.loads(data)
        pairs = [tuple(p) for p in pairs]
        result = {
            "sentiment": pipeline("sentiment-mt", model=folder, trust_remote_code=True)(sentences),
            "sentiment_top2": pipeline("sentiment-mt", model=folder, trust_remote_code=True)(sentences[0], top_k=2),
            "paraphrase": pipeline("paraphrase-mt", model=folder, trust_remote_code=True)(
                [{"text": a, "text_pair": b} for a, b in pairs]),
            "similarity": pipeline("similarity-mt", model=folder, trust_remote_code=True)(pairs),
            "module": type(pipeline("similarity-mt", model=folder, trust_remote_code=True)).__module__,
        }
        json.dump(result, open(out, "w"))
        """))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run([sys.executable, str(script), str(checkpoint), str(tmp_path / "out.json"),
                             json.dumps([SENTENCES, PAIRS])], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads((tmp_path / "out.json").read_text())
    assert got.pop("module").startswith("transformers_modules.")
    expected = _outputs(checkpoint)
    assert got.keys() == expected.keys()
    for key in expected:
        assert rounded(got[key]) == rounded(json.loads(json.dumps(expected[key]))), key


def test_default_model_offline_fails_fast_and_names_the_repo(tmp_path):
    code = "import hf_mtbert\nfrom transformers import pipeline\npipeline('sentiment-mt')\n"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode != 0
    assert DEFAULT_PIPELINE_REPO in result.stderr
    assert time.perf_counter() - start < 60  # no retries against a network that is not there
