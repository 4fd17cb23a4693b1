"""LoRA on the multi-task model with PEFT: low-rank adapters on the attention's query and value projections, the
task heads trained in full and saved with the adapter."""

from __future__ import annotations

import json
import os
from pathlib import Path

from peft import LoraConfig, PeftModel, get_peft_model

from .configuration_mtbert import MultiTaskBertConfig
from .modeling_mtbert import MultiTaskBertModel

# Trained in full and saved with the adapter: every head's classifier and projection, and the MLM head.
HEAD_MODULES = ["classifier", "projection", "cls"]
ADAPTER_CONFIG = "adapter_config.json"


def add_lora(model: MultiTaskBertModel, r: int = 8, alpha: int = 16, dropout: float = 0.1,
             target_modules: tuple[str, ...] = ("query", "value")) -> PeftModel:
    """`model` with LoRA adapters on `target_modules` (its other encoder weights frozen) and trainable heads."""
    if r < 1:
        raise ValueError(f"lora_r must be >= 1, got {r}")
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = sorted(set(target_modules) - present)
    if missing:
        raise ValueError(f"lora_target_modules {missing} are not modules of this model; BERT's attention has "
                         "'query', 'key', 'value' and 'dense'")
    heads = [m for m in HEAD_MODULES if m in present]
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules),
                        modules_to_save=heads)
    return get_peft_model(model, config)


def save_lora(model: PeftModel, folder: str | os.PathLike) -> None:
    """The adapter (adapter_config.json, adapter_model.safetensors) plus the multi-task config, so that
    `load_lora(folder)` rebuilds the same heads on the base model."""
    model.save_pretrained(folder)
    model.get_base_model().config.save_pretrained(folder)


def is_lora_folder(path: str | os.PathLike) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def load_lora(folder: str | os.PathLike, base: str | None = None, merge: bool = False):
    """The base model named in the adapter (or `base`) with the adapter of `folder` on top; merged into plain
    weights with `merge=True` (a `MultiTaskBertModel`), else a `PeftModel`."""
    folder = Path(folder)
    adapter = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    base = base or adapter.get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{folder / ADAPTER_CONFIG} names no base model; pass base=<the BERT checkpoint>")
    config = MultiTaskBertConfig.from_pretrained(folder)
    model = PeftModel.from_pretrained(MultiTaskBertModel.from_pretrained(base, config=config), str(folder))
    return model.merge_and_unload() if merge else model


__all__ = ["add_lora", "is_lora_folder", "load_lora", "save_lora"]
