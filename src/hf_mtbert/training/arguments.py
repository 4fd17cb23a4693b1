"""`MultiTaskTrainingArguments`: the Trainer's arguments plus how tasks are mixed, weighted and batched."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import TrainingArguments
from transformers.utils import logging

from ..hardware import cpu_info
from .samplers import EPOCH_SIZES, SAMPLERS
from .smart import NORMS
from .surgery import SURGERIES

logger = logging.get_logger(__name__)

TASK_WEIGHTINGS = ("static", "loss_magnitude", "uncertainty")
WORD_EMBEDDINGS = ("train", "freeze")
BF16_CHOICES = ("auto", "true", "false")


def parse_task_values(value: str | dict | None, name: str, cast: type) -> dict[str, Any]:
    """`{"sst": 32}`, a JSON string of it, or "sst=32,quora=64" -> {"sst": 32, ...}."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as err:
                raise ValueError(f"{name}={value!r} is not valid JSON: {err}") from None
        else:
            pairs = [p.split("=", 1) for p in text.split(",") if p.strip()]
            if any(len(p) != 2 for p in pairs):
                raise ValueError(f"{name}={value!r}: write it as 'task=value,task=value' or as a JSON object")
            value = {k.strip(): v.strip() for k, v in pairs}
    if not isinstance(value, dict):
        raise ValueError(f"{name} must map task names to values, got {value!r}")
    try:
        return {str(k): cast(v) for k, v in value.items()}
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r}: every value must be a {cast.__name__}") from None


@dataclass
class MultiTaskTrainingArguments(TrainingArguments):
    """`TrainingArguments` for several tasks at once. Per-task values are written `sst=32,quora=64` or as JSON."""

    sampling_strategy: str = field(
        default="proportional",
        metadata={"help": "Which task each step trains.", "choices": list(SAMPLERS)},
    )
    sampling_temperature: float = field(
        default=2.0, metadata={"help": "T for sampling_strategy=temperature: p_t ∝ n_t^(1/T)."}
    )
    epoch_size: str = field(
        default="full",
        metadata={"help": "'full': one pass over every task per epoch; 'truncated': the smallest task's pass "
                  "times truncation_factor, per task.", "choices": list(EPOCH_SIZES)},
    )
    truncation_factor: float = field(default=1.0, metadata={"help": "Epoch length factor for epoch_size=truncated."})
    sequential_epochs: int = field(
        default=0, metadata={"help": "Train task after task for this many epochs first, then sampling_strategy."}
    )
    task_batch_sizes: str | None = field(
        default=None, metadata={"help": "Per-task per-device batch sizes (others use per_device_train_batch_size)."}
    )
    task_weights: str | None = field(default=None, metadata={"help": "Static per-task loss weights (default 1)."})
    task_weighting: str = field(
        default="static",
        metadata={"help": "'static': task_weights only; 'loss_magnitude': divide each task's loss by a running "
                  "mean of its own magnitude (times the mean over tasks); 'uncertainty': learned homoscedastic "
                  "uncertainty weights (Kendall et al., CVPR 2018).", "choices": list(TASK_WEIGHTINGS)},
    )
    loss_magnitude_momentum: float = field(
        default=0.9, metadata={"help": "EMA momentum of the running loss magnitudes (task_weighting=loss_magnitude)."}
    )
    label_smoothing: float | None = field(
        default=None, metadata={"help": "Label smoothing for every classification task (default: each task's own)."}
    )
    length_bucketing: bool = field(
        default=False, metadata={"help": "Batch rows of similar length together (less padding). Each mega-batch is sorted by "
                                    "length, then its batches come in a seeded random order."}
    )
    bucket_size_multiplier: int = field(
        default=50, metadata={"help": "Rows per length-sorted mega-batch, in global batches."}
    )
    word_embeddings: str = field(
        default="train",
        metadata={"help": "'freeze' keeps the word embedding table fixed: AdamW then skips its 30522 rows, most "
                  "of a small model's parameters.", "choices": list(WORD_EMBEDDINGS)},
    )
    bf16: str = field(  # type: ignore[assignment]
        default="auto",
        metadata={"help": "bf16 autocast: 'auto' turns it on only where bf16 runs in hardware (a GPU with bf16, or "
                  "a CPU with AMX or AVX512-BF16); elsewhere it is emulated and slower than fp32.",
                  "choices": list(BF16_CHOICES)},
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "The multi-task collator keeps only model inputs itself."}
    )
    smart: bool = field(
        default=False,
        metadata={"help": "Add SMART's adversarial smoothness regulariser (Jiang et al., ACL 2020) to every task's "
                  "loss: λ_task · ℓ_s(f(x), f(x + δ)) with δ a worst-case perturbation of the embedding output."},
    )
    smart_weights: str | None = field(
        default=None, metadata={"help": "λ per task, e.g. 'sst=5,quora=3,sts=3' (default 1 for every task)."}
    )
    smart_steps: int = field(default=1, metadata={"help": "K: projected ascent steps for δ."})
    smart_step_size: float = field(default=1e-3, metadata={"help": "η: ascent step length."})
    smart_epsilon: float = field(default=1e-5, metadata={"help": "ε: radius of the per-token p-norm ball of δ."})
    smart_noise_std: float = field(default=1e-5, metadata={"help": "σ: std of the initial Gaussian δ."})
    smart_norm: str = field(default="inf", metadata={"help": "p of the ball and step.", "choices": list(NORMS)})
    smart_bregman_weight: float = field(
        default=0.0,
        metadata={"help": "μ of SMART's Bregman proximal point term against a momentum (EMA) teacher; 0 turns it "
                  "off, the paper uses 1. Works with or without --smart."},
    )
    smart_bregman_momentum: float = field(
        default=0.999, metadata={"help": "Teacher EMA momentum β after the first 10%% of steps."}
    )
    smart_bregman_early_momentum: float = field(
        default=0.99, metadata={"help": "Teacher EMA momentum β during the first 10%% of steps."}
    )
    grad_surgery: str = field(
        default="none",
        metadata={"help": "Combine per-task gradients of the shared encoder with PCGrad, CAGrad or GradVac "
                  "(needs sampling_strategy=concurrent).", "choices": list(SURGERIES)},
    )
    contrastive_gather: bool = field(
        default=False,
        metadata={"help": "Under DDP, contrast each rank's contrastive queries with the keys of every rank (world "
                  "size times the in-batch negatives; the loss then equals one process on the global batch)."},
    )
    max_train_minutes: float | None = field(
        default=None,
        metadata={"help": "Stop training after this many minutes (evaluation time included), then evaluate and save "
                  "as at the end of a run. The learning-rate schedule still follows max_steps/num_train_epochs, so "
                  "size those to end near the limit; this is a guard, not a schedule."},
    )
    cagrad_c: float = field(default=0.4, metadata={"help": "CAGrad's c: how far the update may leave the mean."})
    gradvac_beta: float = field(default=0.01, metadata={"help": "GradVac's EMA rate for the cosine targets."})

    def __post_init__(self):
        self.bf16 = self._resolve_bf16(self.bf16)
        if self.bf16 and not self.use_cpu and not torch.accelerator.is_available():
            # bf16 on a machine with no accelerator is CPU autocast; transformers refuses it unless told use_cpu
            self.use_cpu = True
        if not torch.cuda.is_available():
            self.dataloader_pin_memory = False  # pinning needs an accelerator; on CPU it only warns
        if self.max_train_minutes is not None and self.max_train_minutes <= 0:
            raise ValueError(f"max_train_minutes must be > 0, got {self.max_train_minutes}")
        if self.sampling_strategy not in SAMPLERS:
            raise ValueError(f"sampling_strategy={self.sampling_strategy!r}; use one of {list(SAMPLERS)}")
        if self.epoch_size not in EPOCH_SIZES:
            raise ValueError(f"epoch_size={self.epoch_size!r}; use one of {list(EPOCH_SIZES)}")
        if self.task_weighting not in TASK_WEIGHTINGS:
            raise ValueError(f"task_weighting={self.task_weighting!r}; use one of {list(TASK_WEIGHTINGS)}")
        if self.word_embeddings not in WORD_EMBEDDINGS:
            raise ValueError(f"word_embeddings={self.word_embeddings!r}; use one of {list(WORD_EMBEDDINGS)}")
        if self.sampling_temperature <= 0:
            raise ValueError(f"sampling_temperature must be > 0, got {self.sampling_temperature}")
        if self.truncation_factor <= 0:
            raise ValueError(f"truncation_factor must be > 0, got {self.truncation_factor}")
        if self.sequential_epochs < 0:
            raise ValueError(f"sequential_epochs must be >= 0, got {self.sequential_epochs}")
        if self.sequential_epochs and self.sampling_strategy in ("sequential", "concurrent"):
            raise ValueError(f"sequential_epochs needs a sampled joint strategy, not {self.sampling_strategy!r}")
        if not 0.0 <= self.loss_magnitude_momentum < 1.0:
            raise ValueError(f"loss_magnitude_momentum must be in [0, 1), got {self.loss_magnitude_momentum}")
        if self.label_smoothing is not None and not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.bucket_size_multiplier < 1:
            raise ValueError(f"bucket_size_multiplier must be >= 1, got {self.bucket_size_multiplier}")
        if self.grad_surgery not in SURGERIES:
            raise ValueError(f"grad_surgery={self.grad_surgery!r}; use one of {list(SURGERIES)}")
        if self.grad_surgery != "none" and self.sampling_strategy != "concurrent":
            raise ValueError(f"grad_surgery={self.grad_surgery!r} combines one gradient per task, so every step must "
                             f"train every task: use sampling_strategy='concurrent' (got {self.sampling_strategy!r})")
        if self.smart_norm not in NORMS:
            raise ValueError(f"smart_norm={self.smart_norm!r}; use one of {list(NORMS)}")
        if self.smart_bregman_weight < 0:
            raise ValueError(f"smart_bregman_weight must be >= 0, got {self.smart_bregman_weight}")
        self.smart_weights = parse_task_values(self.smart_weights, "smart_weights", float)
        self.task_batch_sizes = parse_task_values(self.task_batch_sizes, "task_batch_sizes", int)
        self.task_weights = parse_task_values(self.task_weights, "task_weights", float)
        bad = {k: v for k, v in self.task_batch_sizes.items() if v < 1}
        if bad:
            raise ValueError(f"task_batch_sizes must be >= 1, got {bad}")
        bad = {k: v for k, v in self.task_weights.items() if v < 0}
        if bad:
            raise ValueError(f"task_weights must be >= 0, got {bad}")
        super().__post_init__()

    @staticmethod
    def _resolve_bf16(value: str | bool) -> bool:
        if isinstance(value, bool):
            return value
        choice = str(value).lower()
        if choice not in BF16_CHOICES:
            raise ValueError(f"bf16={value!r}; use one of {list(BF16_CHOICES)}")
        if choice != "auto":
            return choice == "true"
        if torch.cuda.is_available():
            return torch.cuda.is_bf16_supported()
        info = cpu_info()
        if not info.native_bf16:
            logger.warning(f"bf16=auto: training in fp32; this CPU ({info.capability}) has no AMX/AVX512-BF16, "
                           "so bf16 would be emulated and slower")
        return info.native_bf16

    def batch_sizes_for(self, tasks: list[str]) -> dict[str, int]:
        return self._per_task(self.task_batch_sizes, "task_batch_sizes", tasks, self.per_device_train_batch_size)

    def weights_for(self, tasks: list[str]) -> dict[str, float]:
        return self._per_task(self.task_weights, "task_weights", tasks, 1.0)

    def smart_weights_for(self, tasks: list[str]) -> dict[str, float]:
        return self._per_task(self.smart_weights, "smart_weights", tasks, 1.0)

    @staticmethod
    def _per_task(values: dict, name: str, tasks: list[str], default: float) -> dict[str, float]:
        unknown = sorted(set(values) - set(tasks))
        if unknown:
            raise ValueError(f"{name} names unknown tasks {unknown}; the tasks are {tasks}")
        return {t: values.get(t, default) for t in tasks}
