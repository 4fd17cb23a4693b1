"""Task data: loaders that return canonical `datasets.Dataset`s, tokenization, and the multi-task collator."""

from .collators import MultiTaskCollator
from .loading import (
    CS224N_TASKS,
    DATA_DIR_ENV,
    cs224n_task_spec,
    label_feature,
    load_cs224n,
    load_cs224n_tasks,
    load_task_data,
    resolve_data_dir,
    tokenize_dataset,
)

__all__ = [
    "CS224N_TASKS",
    "DATA_DIR_ENV",
    "MultiTaskCollator",
    "cs224n_task_spec",
    "label_feature",
    "load_cs224n",
    "load_cs224n_tasks",
    "load_task_data",
    "resolve_data_dir",
    "tokenize_dataset",
]
