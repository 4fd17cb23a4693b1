"""Task loss weighting: static weights, loss-magnitude normalisation, learned uncertainty weights."""

from __future__ import annotations

import math

import torch
from torch import nn


class LossMagnitudeWeights:
    """w_t = static_t * mean_s(m_s) / m_t, with m_t a running mean (EMA) of task t's own loss.

    Every task then contributes a loss of about the same size, whatever its scale (an MSE on 0-5 scores is
    larger than a cross-entropy); the mean keeps the overall scale. Weights use the magnitudes before this step's
    update and are constants to autograd. A task not seen yet gets weight `static_t`.
    """

    def __init__(self, tasks: list[str], static: dict[str, float], momentum: float = 0.9):
        self.static, self.momentum = static, momentum
        self.magnitude: dict[str, float | None] = dict.fromkeys(tasks)

    def weight(self, task: str) -> float:
        seen = [m for m in self.magnitude.values() if m is not None]
        mine = self.magnitude[task]
        if mine is None or mine <= 0:
            return self.static[task]
        return self.static[task] * (sum(seen) / len(seen)) / mine

    def update(self, task: str, loss_value: float) -> None:
        if not math.isfinite(loss_value):
            return
        old = self.magnitude[task]
        self.magnitude[task] = loss_value if old is None else self.momentum * old + (1 - self.momentum) * loss_value

    def state_dict(self) -> dict:
        return {"magnitude": dict(self.magnitude)}

    def load_state_dict(self, state: dict) -> None:
        self.magnitude.update(state["magnitude"])


class UncertaintyWeights(nn.Module):
    """Homoscedastic uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018), one learned s_t = log sigma_t^2.

    Regression (Gaussian likelihood): L / (2 sigma^2) + log sigma = 0.5 exp(-s) L + 0.5 s.
    Classification (scaled softmax):  L / sigma^2 + log sigma     = exp(-s) L + 0.5 s.
    s starts at 0 (sigma = 1). The s_t are trained by the optimizer with the model but are not model weights.
    """

    def __init__(self, kinds: dict[str, str]):
        super().__init__()
        self.tasks = list(kinds)
        self.kinds = kinds
        self.log_vars = nn.Parameter(torch.zeros(len(self.tasks)))

    def forward(self, task: str, loss: torch.Tensor) -> torch.Tensor:
        s = self.log_vars[self.tasks.index(task)]
        scale = 0.5 if self.kinds[task] == "regression" else 1.0
        return scale * torch.exp(-s) * loss + 0.5 * s
