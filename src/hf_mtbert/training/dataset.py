"""One map-style dataset over several tasks' tokenized `datasets.Dataset`s, rows tagged with their task."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch


class MultiTaskDataset(torch.utils.data.Dataset):
    """Concatenates tasks in the given order: row i of task t has index `offsets[t] + i`.

    Items are the task's row (a dict) plus `"task": name`. `__getitems__` fetches a whole batch with one
    Arrow `take` per task, which the DataLoader uses when it exists.
    """

    def __init__(self, tasks: Mapping[str, object]):
        if not tasks:
            raise ValueError("MultiTaskDataset needs at least one task dataset")
        self.tasks = dict(tasks)
        self.names = list(self.tasks)
        self.sizes = {t: len(d) for t, d in self.tasks.items()}
        self._ends = np.cumsum([self.sizes[t] for t in self.names])
        self.offsets = dict(zip(self.names, self._ends - [self.sizes[t] for t in self.names], strict=True))

    def __len__(self) -> int:
        return int(self._ends[-1])

    def locate(self, index: int) -> tuple[str, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} is outside the {len(self)} rows of tasks {self.names}")
        t = int(np.searchsorted(self._ends, index, side="right"))
        name = self.names[t]
        return name, int(index - self.offsets[name])

    def __getitem__(self, index: int) -> dict:
        name, row = self.locate(int(index))
        return {**self.tasks[name][row], "task": name}

    def __getitems__(self, indices: list[int]) -> list[dict]:
        located = [self.locate(int(i)) for i in indices]
        rows: dict[str, list[int]] = {}
        for name, row in located:
            rows.setdefault(name, []).append(row)
        fetched = {}
        for name, wanted in rows.items():
            columns = self.tasks[name][wanted]  # dict of lists, one Arrow take
            fetched[name] = iter([{k: v[j] for k, v in columns.items()} for j in range(len(wanted))])
        return [{**next(fetched[name]), "task": name} for name, _ in located]

    def lengths(self, column: str = "length") -> dict[str, list[int]] | None:
        """Per-task row lengths for bucketing, when every task has the column."""
        if not all(column in getattr(d, "column_names", ()) for d in self.tasks.values()):
            return None
        return {t: list(d[column]) for t, d in self.tasks.items()}
