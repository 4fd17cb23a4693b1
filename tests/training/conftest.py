import pytest
from _helpers import no_dropout
from _trainers import three_tasks


@pytest.fixture
def tokenizer(minilm_tokenizer):
    return minilm_tokenizer


@pytest.fixture
def config(tiny_config):
    """The tiny config without dropout, with the three CS224N-like tasks only."""
    return three_tasks(no_dropout(tiny_config))
