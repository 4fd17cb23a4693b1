"""Push a saved checkpoint folder to the Hugging Face Hub (or any Hub-compatible endpoint set by HF_ENDPOINT)."""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import HfApi, constants

# Training by-products that do not belong in a model repo: Trainer's intermediate checkpoints, TensorBoard runs,
# and optimizer / scheduler / RNG / scaler state (pickles, *.pt / *.pth).
PUSH_IGNORE_PATTERNS = [
    "checkpoint-*/",
    "*/checkpoint-*/",
    "runs/",
    "*/runs/",
    "*.pt",
    "*.pth",
    "*optimizer.*",
    "*scheduler.*",
    "*rng_state*",
]


def _offline() -> bool:
    # huggingface_hub reads HF_HUB_OFFLINE once, at import; the variable may also have been set since.
    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
    return constants.is_offline_mode() or (env is not None and env.upper() in constants.ENV_VARS_TRUE_VALUES)


def push_checkpoint(
    folder: str | Path,
    repo_id: str,
    revision: str | None = None,
    private: bool = False,
    token: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Upload the checkpoint in `folder` to the model repo `repo_id` (created if needed) and return the commit URL.

    `revision` names a branch: it is created from `main` when missing, and the commit goes there (default: `main`).
    Intermediate `checkpoint-*` folders, `runs/` and optimizer / scheduler / RNG state files are not uploaded.
    The return value is a `CommitInfo`, a `str` (the commit URL) whose `.oid` is the commit sha.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder")
    missing = []
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    if not any(folder.glob("*.safetensors")):
        missing.append("a *.safetensors weights file")
    if missing:
        raise ValueError(
            f"{folder} does not look like a saved checkpoint: missing {' and '.join(missing)} "
            "(save one with model.save_pretrained(folder))"
        )
    if _offline():
        raise OSError(
            f"Cannot push {folder} to {repo_id!r}: HF_HUB_OFFLINE is set, so the Hub cannot be reached. "
            "Unset HF_HUB_OFFLINE (and TRANSFORMERS_OFFLINE) on a machine with network access to push."
        )

    # Created now, not at import, so that a HF_ENDPOINT set after import is used.
    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT", "").rstrip("/") or None, token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    if revision is not None and revision != constants.DEFAULT_REVISION:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    return api.upload_folder(
        folder_path=folder,
        repo_id=repo_id,
        revision=revision,
        commit_message=commit_message or f"Upload {folder.name} with hf_mtbert",
        ignore_patterns=list(PUSH_IGNORE_PATTERNS),
    )
