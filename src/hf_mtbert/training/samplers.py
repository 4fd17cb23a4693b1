"""Multi-task batch samplers: which task each optimizer step trains, and which examples it sees.

Every sampler here is a `torch.utils.data.Sampler` of index lists (a batch sampler) over a `MultiTaskDataset`,
whose global index of row `i` of task `t` is `offset[t] + i`. The whole stream is a pure function of
`(seed, epoch)`, so a run resumed mid-epoch (the Trainer re-iterates the sampler and skips the batches already
trained) sees exactly the batches an uninterrupted run sees.

One *step* is one optimizer update: all `gradient_accumulation_steps` micro-batches on all `world_size` ranks come
from the same task, and together they are one contiguous draw of `batch_size * GA * world_size` examples from that
task's shuffled stream. Hence:
- every rank trains the same task (and so the same head) at every step: DDP never waits on an unused head;
- ranks and micro-batches see distinct examples;
- GA=2 with batch B draws exactly the examples of GA=1 with batch 2B, and 2 ranks with B those of 1 rank with 2B.

A task's stream is a concatenation of seeded permutations of its rows ("cycles"), restarted every epoch. Batches
are always full: a task that needs more rows than it has in an epoch (oversampling, or the last batch of a pass)
wraps into its next permutation.

Task mixtures. With per-task sizes n_t and exponent alpha, p_t = n_t^alpha / sum_s n_s^alpha:
proportional alpha=1, sqrt alpha=1/2, temperature alpha=1/T, and annealed alpha = 1 - 0.8 (e-1)/(E-1) for epoch
e of E (Stickland & Murray, ICML 2019). The sampled strategies give each task round(S * p_t) of the epoch's S steps
(largest-remainder rounding) in a seeded random order, as MT-DNN shuffles its per-task batch lists; drawing tasks
i.i.d. per step would have the same expectation with more variance.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch

EPOCH_SIZES = ("full", "truncated")


def mixture_exponent(strategy: str, epoch: int = 0, num_epochs: int = 1, temperature: float = 1.0) -> float:
    """The exponent alpha of p_t ∝ n_t^alpha for a sampled strategy (epoch is 0-based)."""
    if strategy == "proportional":
        return 1.0
    if strategy == "sqrt":
        return 0.5
    if strategy == "temperature":
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        return 1.0 / temperature
    if strategy == "annealed":
        if num_epochs <= 1:
            return 1.0
        return 1.0 - 0.8 * epoch / (num_epochs - 1)
    raise ValueError(f"{strategy!r} is not a sampled strategy; use proportional, sqrt, temperature or annealed")


def sampling_probabilities(sizes: Sequence[int], alpha: float) -> np.ndarray:
    """p_t = n_t^alpha / sum_s n_s^alpha."""
    n = np.asarray(sizes, dtype=np.float64)
    if n.size == 0 or (n <= 0).any():
        raise ValueError(f"every task needs at least one example, got sizes {list(sizes)}")
    weights = n**alpha
    return weights / weights.sum()


def apportion(total: int, probabilities: np.ndarray) -> np.ndarray:
    """Integer counts summing to `total`, as close to total * p as possible (largest remainder, ties by order)."""
    exact = total * np.asarray(probabilities, dtype=np.float64)
    counts = np.floor(exact).astype(np.int64)
    short = total - int(counts.sum())
    order = sorted(range(len(exact)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[:short]:
        counts[i] += 1
    return counts


class TaskStream:
    """The rows of one task in a seeded order: permutation after permutation, restarted each epoch.

    With `lengths`, each permutation is cut into mega-batches of `bucket_size` rows, each sorted by length
    (longest first), so a batch holds rows of similar length and pads little (as transformers' LengthGroupedSampler).
    `take_batch` then hands out the batches of about one mega-batch in a seeded random order. transformers keeps the
    sorted order, so its steps run from the longest batches to the shortest in every mega-batch: step time falls
    steadily for `bucket_size / batch` steps and restarts, and the first steps of a run (which a time calibration
    measures) are the slowest ones.
    """

    def __init__(self, num_rows: int, seed: int, epoch: int, task_index: int,
                 lengths: np.ndarray | None = None, bucket_size: int | None = None):
        self.num_rows, self.key = num_rows, (seed, epoch, task_index)
        self.lengths, self.bucket_size = lengths, bucket_size
        self.cycle, self.order, self.position = 0, np.empty(0, dtype=np.int64), 0
        self.refills, self.batches = 0, []

    def _permutation(self) -> np.ndarray:
        order = np.random.default_rng([*self.key, self.cycle]).permutation(self.num_rows)
        self.cycle += 1
        if self.lengths is None or not self.bucket_size:
            return order
        chunks = [order[i : i + self.bucket_size] for i in range(0, len(order), self.bucket_size)]
        return np.concatenate([c[np.argsort(-self.lengths[c], kind="stable")] for c in chunks])

    def take(self, count: int) -> np.ndarray:
        parts = []
        while count > 0:
            if self.position == len(self.order):
                self.order, self.position = self._permutation(), 0
            part = self.order[self.position : self.position + count]
            parts.append(part)
            self.position += len(part)
            count -= len(part)
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)

    def take_batch(self, size: int) -> np.ndarray:
        """The next batch of `size` rows. With bucketing, consecutive length-sorted batches are drawn a mega-batch
        at a time and handed out shuffled, so batch lengths do not trend within a run."""
        if self.lengths is None or not self.bucket_size:
            return self.take(size)
        if not self.batches:
            drawn = [self.take(size) for _ in range(max(1, self.bucket_size // size))]
            shuffle = np.random.default_rng([*self.key, self.refills, 1]).permutation(len(drawn))
            self.refills += 1
            self.batches = [drawn[i] for i in shuffle[::-1]]  # popped from the end
        return self.batches.pop()


class MultiTaskBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Base class: subclasses say which task each step of an epoch trains (`task_schedule`).

    Args:
        task_sizes: rows per task, in the order of the `MultiTaskDataset` (which sets the index offsets).
        batch_sizes: per-device micro-batch size per task.
        seed: the stream depends on (seed, epoch) only.
        gradient_accumulation_steps, world_size, rank: see the module docstring.
        epoch_size: "full" (sum over tasks of the steps one pass over each takes) or "truncated" (the smallest
            task's steps per pass, times `truncation_factor`, per task).
        num_epochs: total epochs (the annealed strategy needs it).
        lengths: per-task row lengths, to bucket batches by length (`bucket_size` rows per sorted mega-batch).
    """

    strategy: str = ""

    def __init__(
        self,
        task_sizes: dict[str, int],
        batch_sizes: dict[str, int],
        *,
        seed: int = 42,
        gradient_accumulation_steps: int = 1,
        world_size: int = 1,
        rank: int = 0,
        epoch_size: str = "full",
        truncation_factor: float = 1.0,
        num_epochs: int = 1,
        temperature: float = 1.0,
        lengths: dict[str, Sequence[int]] | None = None,
        bucket_size: int | None = None,
    ):
        if not task_sizes:
            raise ValueError("a multi-task sampler needs at least one task")
        empty = [t for t, n in task_sizes.items() if n <= 0]
        if empty:
            raise ValueError(f"tasks {empty} have no training examples; drop them or give them data")
        missing = [t for t in task_sizes if t not in batch_sizes]
        if missing or any(batch_sizes[t] <= 0 for t in task_sizes):
            raise ValueError(f"every task needs a batch size >= 1, got {batch_sizes} for tasks {list(task_sizes)}")
        if epoch_size not in EPOCH_SIZES:
            raise ValueError(f"epoch_size={epoch_size!r}; use one of {list(EPOCH_SIZES)}")
        if truncation_factor <= 0:
            raise ValueError(f"truncation_factor must be > 0, got {truncation_factor}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        self.tasks = list(task_sizes)
        self.task_sizes = dict(task_sizes)
        self.batch_sizes = {t: int(batch_sizes[t]) for t in self.tasks}
        self.seed, self.epoch, self.num_epochs, self.temperature = seed, 0, num_epochs, temperature
        self.accumulation, self.world_size, self.rank = gradient_accumulation_steps, world_size, rank
        self.epoch_size, self.truncation_factor = epoch_size, truncation_factor
        self.offsets = dict(zip(self.tasks, np.cumsum([0] + [task_sizes[t] for t in self.tasks[:-1]]), strict=True))
        self.lengths = None if lengths is None else {t: np.asarray(lengths[t]) for t in self.tasks}
        self.bucket_size = bucket_size
        self.steps_per_epoch = self._steps_per_epoch()

    # --- what subclasses decide -------------------------------------------------------------------------------
    def task_schedule(self, epoch: int) -> list[str | None]:
        """The task of each step of `epoch` (None: one micro-batch of every task, see ConcurrentSampler)."""
        raise NotImplementedError

    # --- shared machinery ---------------------------------------------------------------------------------------
    def global_batch(self, task: str) -> int:
        """Examples one step draws from `task` over all micro-batches and ranks."""
        return self.batch_sizes[task] * self.accumulation * self.world_size

    def passes(self) -> dict[str, int]:
        """Steps one pass over each task takes (the last batch wraps into the next permutation)."""
        return {t: math.ceil(self.task_sizes[t] / self.global_batch(t)) for t in self.tasks}

    def _steps_per_epoch(self) -> int:
        passes = self.passes()
        if self.epoch_size == "full":
            return sum(passes.values())
        return len(self.tasks) * self._truncated_per_task()

    def _truncated_per_task(self) -> int:
        return max(1, round(min(self.passes().values()) * self.truncation_factor))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        """Micro-batches per epoch on this rank."""
        return self.steps_per_epoch * self.accumulation

    def _rng(self, epoch: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, epoch, 7919])

    def __iter__(self) -> Iterator[list[int]]:
        epoch = self.epoch
        schedule = self.task_schedule(epoch)
        if len(schedule) != self.steps_per_epoch:
            raise RuntimeError(f"{type(self).__name__} scheduled {len(schedule)} steps, expected {self.steps_per_epoch}")
        streams = {
            t: TaskStream(self.task_sizes[t], self.seed, epoch, i,
                          None if self.lengths is None else self.lengths[t], self.bucket_size)
            for i, t in enumerate(self.tasks)
        }
        for task in schedule:
            tasks = self.tasks if task is None else [task]
            draws = {t: streams[t].take_batch(self.global_batch(t)) for t in tasks}
            for micro in range(self.accumulation):
                batch: list[int] = []
                for t in tasks:
                    size = self.batch_sizes[t]
                    start = (micro * self.world_size + self.rank) * size
                    batch.extend(int(self.offsets[t] + i) for i in draws[t][start : start + size])
                yield batch

    def state_dict(self) -> dict:
        """What a checkpoint records so a resumed run can check it continues the same stream."""
        return {
            "strategy": self.strategy,
            "seed": self.seed,
            "epoch": self.epoch,
            "task_sizes": self.task_sizes,
            "batch_sizes": self.batch_sizes,
            "gradient_accumulation_steps": self.accumulation,
            "world_size": self.world_size,
            "epoch_size": self.epoch_size,
            "truncation_factor": self.truncation_factor,
            "num_epochs": self.num_epochs,
            "temperature": self.temperature,
            "steps_per_epoch": self.steps_per_epoch,
            # the batch order of length bucketing (checkpoints from before it was shuffled lack this key)
            "length_bucketing": None if self.lengths is None or not self.bucket_size else
            {"bucket_size": self.bucket_size, "batch_order": "shuffled"},
        }

    def check_resumable(self, saved: dict) -> None:
        """Raise if a checkpoint's sampler differs from this one (the resumed stream would silently differ)."""
        mine = self.state_dict()
        diff = {k: (saved.get(k), v) for k, v in mine.items() if k != "epoch" and saved.get(k) != v}
        if diff:
            details = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in diff.items())
            raise ValueError(
                f"cannot resume: the task sampler changed since the checkpoint ({details}). Resume with the same "
                "data, batch sizes, seed and sampling arguments, or start a new run"
            )


class SequentialSampler(MultiTaskBatchSampler):
    """All of one task, then all of the next, in config order (the tasks' steps follow the epoch size)."""

    strategy = "sequential"

    def task_schedule(self, epoch: int) -> list[str | None]:
        if self.epoch_size == "full":
            counts = self.passes()
        else:
            counts = dict.fromkeys(self.tasks, self._truncated_per_task())
        return [t for t in self.tasks for _ in range(counts[t])]


class RoundRobinSampler(MultiTaskBatchSampler):
    """Tasks in turn: t0, t1, t2, t0, ..."""

    strategy = "round_robin"

    def task_schedule(self, epoch: int) -> list[str | None]:
        return [self.tasks[i % len(self.tasks)] for i in range(self.steps_per_epoch)]


class MixtureSampler(MultiTaskBatchSampler):
    """Steps split over tasks in proportion to n_t^alpha, shuffled with the epoch's seed."""

    def probabilities(self, epoch: int) -> np.ndarray:
        alpha = mixture_exponent(self.strategy, epoch, self.num_epochs, self.temperature)
        return sampling_probabilities([self.task_sizes[t] for t in self.tasks], alpha)

    def task_schedule(self, epoch: int) -> list[str | None]:
        counts = apportion(self.steps_per_epoch, self.probabilities(epoch))
        schedule = np.repeat(np.arange(len(self.tasks)), counts)
        return [self.tasks[i] for i in self._rng(epoch).permutation(schedule)]


class ProportionalSampler(MixtureSampler):
    strategy = "proportional"


class SqrtSampler(MixtureSampler):
    strategy = "sqrt"


class TemperatureSampler(MixtureSampler):
    strategy = "temperature"


class AnnealedSampler(MixtureSampler):
    """alpha falls linearly from 1 (proportional) in the first epoch to 0.2 in the last."""

    strategy = "annealed"


class ConcurrentSampler(MultiTaskBatchSampler):
    """Every step trains every task: each micro-batch holds one batch of each task (losses summed).

    An epoch is one pass over the largest task ("full") or the smallest task's pass times the factor
    ("truncated"); smaller tasks wrap around.
    """

    strategy = "concurrent"

    def _steps_per_epoch(self) -> int:
        if self.epoch_size == "full":
            return max(self.passes().values())
        return self._truncated_per_task()

    def task_schedule(self, epoch: int) -> list[str | None]:
        return [None] * self.steps_per_epoch


class PhasedSampler(MultiTaskBatchSampler):
    """Sequential for the first `sequential_epochs` epochs, then another strategy (the same epoch length)."""

    def __init__(self, joint: MultiTaskBatchSampler, sequential_epochs: int):
        if isinstance(joint, ConcurrentSampler):
            raise ValueError("a sequential-then-joint schedule needs a sampled joint strategy, not concurrent "
                             "(its epochs have another length)")
        self.__dict__.update(joint.__dict__)
        self.joint, self.sequential_epochs = joint, sequential_epochs
        self.strategy = f"sequential*{sequential_epochs}+{joint.strategy}"
        self.first = SequentialSampler.__new__(SequentialSampler)
        self.first.__dict__.update(joint.__dict__)

    def task_schedule(self, epoch: int) -> list[str | None]:
        phase = self.first if epoch < self.sequential_epochs else self.joint
        return phase.task_schedule(epoch)


SAMPLERS: dict[str, type[MultiTaskBatchSampler]] = {
    cls.strategy: cls
    for cls in (SequentialSampler, RoundRobinSampler, ProportionalSampler, SqrtSampler, TemperatureSampler,
                AnnealedSampler, ConcurrentSampler)
}


def build_sampler(strategy: str, *args, sequential_epochs: int = 0, **kwargs) -> MultiTaskBatchSampler:
    """The sampler for `strategy` (see SAMPLERS), optionally preceded by `sequential_epochs` sequential epochs."""
    if strategy not in SAMPLERS:
        raise ValueError(f"unknown sampling strategy {strategy!r}; use one of {list(SAMPLERS)}")
    sampler = SAMPLERS[strategy](*args, **kwargs)
    if sequential_epochs > 0:
        sampler = PhasedSampler(sampler, sequential_epochs)
    return sampler
