"""Multi-task training: arguments, samplers, loss weighting and the Trainer subclass."""

from .arguments import MultiTaskTrainingArguments
from .dataset import MultiTaskDataset
from .samplers import (
    SAMPLERS,
    MultiTaskBatchSampler,
    apportion,
    build_sampler,
    mixture_exponent,
    sampling_probabilities,
)
from .trainer import MultiTaskTrainer, per_task_predictions
from .weighting import LossMagnitudeWeights, UncertaintyWeights

__all__ = [
    "SAMPLERS",
    "LossMagnitudeWeights",
    "MultiTaskBatchSampler",
    "MultiTaskDataset",
    "MultiTaskTrainer",
    "MultiTaskTrainingArguments",
    "UncertaintyWeights",
    "apportion",
    "build_sampler",
    "mixture_exponent",
    "per_task_predictions",
    "sampling_probabilities",
]
