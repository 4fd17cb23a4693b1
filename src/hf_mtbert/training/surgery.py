"""Gradient surgery for concurrent multi-task steps: PCGrad, CAGrad and GradVac.

Each method turns the task gradients g_1..g_T of the shared parameters into one update direction d. All three
only ever combine the task gradients linearly, so `d = Σ_k w_k g_k` and the weights w follow from the T × T Gram
matrix G G^T alone. We compute that matrix once (one pass over the gradients), run the method on it in float64, and
form d with one more pass: the cost does not grow with T² passes over the parameters as it does in the usual
per-pair implementations.

- PCGrad (Yu et al., NeurIPS 2020): for each task i, in a random order of the other tasks j, if g_i' · g_j < 0
  remove the component of g_i' along g_j (g_j is the original gradient); d = Σ_i g_i'.
- CAGrad (Liu et al., NeurIPS 2021): d = g_0 + (√φ / ‖g_w‖) g_w, with g_0 the mean gradient, φ = c² ‖g_0‖², and
  w on the simplex minimising g_w · g_0 + √φ ‖g_w‖ (solved with scipy's SLSQP); rescaled by 1 / (1 + c²) as in the
  authors' code, then multiplied by T so that c = 0 gives the summed gradient like the other methods.
- GradVac (Wang et al., ICLR 2021): like PCGrad, but each pair (i, j) keeps an EMA φ̂_ij of its gradient cosine;
  when cos(g_i', g_j) < φ̂_ij, add the multiple of g_j that raises the cosine to φ̂_ij; d = Σ_i g_i'.

`GradientSurgery` keeps one flat gradient buffer per task for the shared parameters, makes each task's backward
pass accumulate straight into its own buffer, reduces the buffers across ranks once per optimizer step, and writes
d into the parameters' `.grad`. Task heads keep their own task's gradient.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy.optimize import minimize
from torch import nn

SURGERIES = ("none", "pcgrad", "cagrad", "gradvac")


def _unit(T: int, j: int) -> torch.Tensor:
    e = torch.zeros(T, dtype=torch.float64)
    e[j] = 1.0
    return e


def pcgrad_weights(gram: torch.Tensor, orders: Sequence[Sequence[int]]) -> torch.Tensor:
    """PCGrad as weights on the task gradients. gram: (T, T) G G^T; orders[i]: the other tasks in projection order."""
    gram = gram.double()
    T = gram.shape[0]
    total = torch.zeros(T, dtype=torch.float64)
    for i in range(T):
        coef = _unit(T, i)  # g_i' = coef · G
        for j in orders[i]:
            dot = coef @ gram[:, j]
            if dot < 0 and gram[j, j] > 0:
                coef = coef - (dot / gram[j, j]) * _unit(T, j)
        total += coef
    return total


def gradvac_weights(gram: torch.Tensor, orders: Sequence[Sequence[int]], targets: torch.Tensor,
                    beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """GradVac as weights on the task gradients, and the updated (T, T) EMA cosine targets φ̂."""
    gram = gram.double()
    targets = targets.double().clone()
    T = gram.shape[0]
    total = torch.zeros(T, dtype=torch.float64)
    for i in range(T):
        coef = _unit(T, i)
        for j in orders[i]:
            norm_i = float(coef @ gram @ coef) ** 0.5
            norm_j = float(gram[j, j]) ** 0.5
            if norm_i == 0.0 or norm_j == 0.0:
                continue
            cos = float(coef @ gram[:, j]) / (norm_i * norm_j)
            target = float(targets[i, j])
            if cos < target:
                room = max(1.0 - target**2, 1e-12)
                step = norm_i * (target * math.sqrt(max(1.0 - cos**2, 0.0)) - cos * math.sqrt(room))
                coef = coef + step / (norm_j * math.sqrt(room)) * _unit(T, j)
            targets[i, j] = (1.0 - beta) * target + beta * cos
        total += coef
    return total, targets


def cagrad_weights(gram: torch.Tensor, c: float) -> torch.Tensor:
    """CAGrad as weights on the task gradients (scaled so that c = 0 gives the sum)."""
    A = gram.double().numpy()
    T = A.shape[0]
    mean = np.full(T, 1.0 / T)
    g0_norm = math.sqrt(max(float(mean @ A @ mean), 0.0))
    radius = c * g0_norm
    if radius == 0.0:
        return torch.ones(T, dtype=torch.float64)

    def objective(w):
        return float(w @ A @ mean) + radius * math.sqrt(max(float(w @ A @ w), 0.0) + 1e-18)

    result = minimize(objective, mean.copy(), method="SLSQP", bounds=[(0.0, 1.0)] * T,
                      constraints=({"type": "eq", "fun": lambda w: 1.0 - w.sum()},))
    w = np.clip(result.x, 0.0, None)
    gw_norm = math.sqrt(max(float(w @ A @ w), 0.0))
    coef = mean + (radius / gw_norm) * w if gw_norm > 0 else mean
    return torch.from_numpy(coef * T / (1.0 + c**2))


class GradientSurgery:
    """Per-task gradient buffers for the shared parameters, and the surgery applied once per optimizer step.

    Use: for every micro-batch and task, `select(task)` before that task's backward pass; on the micro-batch that
    ends the optimizer step, `apply(step, reduce)` after the last backward. `reduce`, when given, averages a tensor
    across ranks in place: every rank then projects the same task gradients and applies the same update.
    """

    def __init__(self, method: str, model: nn.Module, tasks: Sequence[str], seed: int = 0, cagrad_c: float = 0.4,
                 gradvac_beta: float = 0.01, head_prefix: tuple[str, ...] = ("heads.", "cls.")):
        if method not in SURGERIES or method == "none":
            raise ValueError(f"grad_surgery={method!r}; use one of {list(SURGERIES[1:])}")
        if cagrad_c < 0:
            raise ValueError(f"cagrad_c must be >= 0, got {cagrad_c}")
        if not 0.0 < gradvac_beta <= 1.0:
            raise ValueError(f"gradvac_beta must be in (0, 1], got {gradvac_beta}")
        self.method, self.tasks, self.seed = method, list(tasks), seed
        self.cagrad_c, self.gradvac_beta = cagrad_c, gradvac_beta
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        # PEFT's wrappers prefix every name with "base_model.model."
        named = [(n.removeprefix("base_model.model."), p) for n, p in named]
        self.shared = [p for n, p in named if not n.startswith(head_prefix)]
        self.heads = [p for n, p in named if n.startswith(head_prefix)]
        self.numel = sum(p.numel() for p in self.shared)
        dtypes = {p.dtype for p in self.shared}
        if len(dtypes) != 1:  # the per-task buffers are one flat tensor that every .grad is a view of
            raise ValueError(f"gradient surgery needs the shared parameters in one dtype, got {sorted(map(str, dtypes))}")
        self.dtype = dtypes.pop()
        self.targets = torch.zeros(len(self.tasks), len(self.tasks), dtype=torch.float64)  # GradVac φ̂
        self._buffer: torch.Tensor | None = None  # (T, numel)
        self._views: list[list[torch.Tensor]] = []
        self._combined: torch.Tensor | None = None
        self._combined_views: list[torch.Tensor] = []
        self._used: set[int] = set()
        self._fresh = True  # the next select() starts a new optimizer step
        self._hooks = [p.register_post_accumulate_grad_hook(self._mark_used) for p in self.shared]

    @property
    def buffer_bytes(self) -> int:
        """Memory of the per-task buffers plus the combined gradient."""
        return (len(self.tasks) + 1) * self.numel * self.dtype.itemsize

    def _mark_used(self, param: torch.Tensor) -> None:
        self._used.add(id(param))

    def _allocate(self) -> None:
        device = self.shared[0].device
        self._buffer = torch.zeros(len(self.tasks), self.numel, device=device, dtype=self.dtype)
        self._combined = torch.zeros(self.numel, device=device, dtype=self.dtype)
        self._views = [self._split(row) for row in self._buffer]
        self._combined_views = self._split(self._combined)

    def _split(self, flat: torch.Tensor) -> list[torch.Tensor]:
        views, start = [], 0
        for p in self.shared:
            views.append(flat[start:start + p.numel()].view_as(p))
            start += p.numel()
        return views

    def select(self, task: str) -> None:
        """Point the shared parameters' `.grad` at `task`'s buffer, so its backward pass accumulates there."""
        if self._buffer is None:
            self._allocate()
        if self._fresh:
            self._buffer.zero_()
            self._used.clear()
            self._fresh = False
        for p, view in zip(self.shared, self._views[self.tasks.index(task)], strict=True):
            p.grad = view

    def orders(self, step: int) -> list[list[int]]:
        """For each task, the other tasks in a random order seeded by (seed, step): the same on every rank."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        T = len(self.tasks)
        return [[j for j in torch.randperm(T, generator=generator).tolist() if j != i] for i in range(T)]

    def weights(self, gram: torch.Tensor, step: int) -> torch.Tensor:
        if self.method == "pcgrad":
            return pcgrad_weights(gram, self.orders(step))
        if self.method == "cagrad":
            return cagrad_weights(gram, self.cagrad_c)
        weights, self.targets = gradvac_weights(gram, self.orders(step), self.targets, self.gradvac_beta)
        return weights

    @torch.no_grad()
    def apply(self, step: int, reduce: Callable[[torch.Tensor], None] | None = None) -> torch.Tensor:
        """Combine the accumulated task gradients into the shared parameters' `.grad`; returns the task weights."""
        if self._buffer is None or self._fresh:
            raise RuntimeError("GradientSurgery.apply() before any task's backward pass in this optimizer step")
        if reduce is not None:
            reduce(self._buffer)
            head_grads = [p.grad for p in self.heads if p.grad is not None]
            if head_grads:
                flat = torch.cat([g.reshape(-1) for g in head_grads])
                reduce(flat)
                for g, f in zip(head_grads, flat.split([g.numel() for g in head_grads]), strict=True):
                    g.copy_(f.view_as(g))
        gram = self._buffer @ self._buffer.T  # (T, T)
        weights = self.weights(gram.cpu(), step)
        torch.mv(self._buffer.T, weights.to(self._buffer), out=self._combined)
        for p, view in zip(self.shared, self._combined_views, strict=True):
            p.grad = view if id(p) in self._used else None
        self._fresh = True
        return weights

    def state_dict(self) -> dict:
        return {"method": self.method, "tasks": self.tasks, "gradvac_targets": self.targets.tolist()}

    def load_state_dict(self, state: dict) -> None:
        if state.get("tasks") != self.tasks:
            raise ValueError(f"the checkpoint's gradient surgery ran on tasks {state.get('tasks')}, not {self.tasks}")
        self.targets = torch.tensor(state["gradvac_targets"], dtype=torch.float64)

    def remove_hooks(self) -> None:
        for handle in self._hooks:
            handle.remove()
