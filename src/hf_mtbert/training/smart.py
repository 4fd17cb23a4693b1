"""SMART (Jiang et al., ACL 2020): smoothness-inducing adversarial regularisation and Bregman proximal point steps.

For a batch x with clean outputs f(x), the regulariser is

    R(θ) = max_{‖δ‖_p ≤ ε} ℓ_s(f(x; θ), f(x + δ; θ))

where δ perturbs the output of the embedding layer (per token) and ℓ_s is the symmetric KL divergence for
classification and the squared error for regression. The max is approximated by K projected ascent steps from
Gaussian noise. The Bregman option adds μ · ℓ_s(f(x; θ), f(x; θ̃)), where θ̃ is an exponential moving average of
the weights (a momentum teacher), which keeps each update close to the previous iterates.

Defaults follow MT-DNN's released SMART code (σ = 1e-5, η = 1e-3, K = 1, ∞-norm, λ = 1) and the paper
(ε = 1e-5, μ = 1, teacher momentum 0.99 for the first 10% of updates, then 0.999). Two things differ from the
MT-DNN code on purpose: the perturbation is projected onto the ε-ball (MT-DNN only normalises the ascent step, so
δ is not bounded by ε) and the final perturbed pass keeps the gradient path into the embedding layer (MT-DNN
detaches it). The ascent direction is normalised without an additive constant: the gradient at a 1e-5 perturbation
is tiny, and `g / (max|g| + 1e-6)` would shrink the step by orders of magnitude instead of normalising it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

NORMS = ("inf", "l2")


def symmetric_kl(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """KL(p‖q) + KL(q‖p) between the softmax distributions of two (B, C) logit tensors, mean over the batch.

    Computed in fp32 as Σ_c (p_c − q_c)(log p_c − log q_c); gradients flow into both arguments.
    """
    log_p = F.log_softmax(logits_p.float(), dim=-1)
    log_q = F.log_softmax(logits_q.float(), dim=-1)
    return ((log_p.exp() - log_q.exp()) * (log_p - log_q)).sum(-1).mean()


def divergence(kind: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """ℓ_s: symmetric KL for classification logits, mean squared error for regression scores (both in fp32)."""
    if kind == "classification":
        return symmetric_kl(a, b)
    if kind == "regression":
        return F.mse_loss(a.float(), b.float())
    raise ValueError(f"SMART has no divergence for task kind {kind!r}; it supports classification and regression")


def normalize_direction(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """The steepest-ascent direction of unit p-norm per token (last dim): g / max|g| ('inf') or g / ‖g‖₂ ('l2').
    Tokens whose gradient is exactly zero get a zero direction."""
    if norm == "inf":
        scale = grad.abs().amax(dim=-1, keepdim=True)
    elif norm == "l2":
        scale = grad.norm(dim=-1, keepdim=True)
    else:
        raise ValueError(f"norm={norm!r}; use one of {list(NORMS)}")
    return grad / scale.clamp(min=torch.finfo(grad.dtype).tiny)


def project(delta: torch.Tensor, epsilon: float, norm: str) -> torch.Tensor:
    """Project each token's perturbation (last dim) onto the p-norm ball of radius epsilon."""
    if norm == "inf":
        return delta.clamp(-epsilon, epsilon)
    if norm == "l2":
        length = delta.norm(dim=-1, keepdim=True)
        return delta * (epsilon / length.clamp(min=epsilon)).clamp(max=1.0)
    raise ValueError(f"norm={norm!r}; use one of {list(NORMS)}")


class EmbeddingTap:
    """Records the output of an embedding module on the first (clean) forward pass, and on later passes replaces
    it with `replacement`. Used as a context manager around the clean pass and the perturbed passes."""

    def __init__(self, module: nn.Module):
        self.module = module
        self.recorded: torch.Tensor | None = None
        self.replacement: torch.Tensor | None = None
        self._calls = 0
        self._handle = None

    def __enter__(self) -> EmbeddingTap:
        self._handle = self.module.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()

    def _hook(self, module, args, output):
        self._calls += 1
        if self.replacement is not None:
            return self.replacement
        if self.recorded is not None:
            raise RuntimeError("SMART: the embedding layer ran twice in one forward pass; it perturbs a single "
                               "embedding output per pass")
        self.recorded = output
        return None


@dataclass
class SmartRegularizer:
    """The adversarial smoothness term λ_task · R(θ) for one task batch.

    Args:
        weights: λ per task name (a task not listed gets 0, i.e. no regulariser).
        steps: K, projected ascent steps.
        step_size: η, length of each ascent step (in the p-norm, before projection).
        epsilon: ε, radius of the per-token p-norm ball.
        noise_std: σ, standard deviation of the initial Gaussian perturbation.
        norm: 'inf' or 'l2'.
        noise_fn: draws the initial perturbation given the embedding output; defaults to N(0, σ²).
    """

    weights: dict[str, float]
    steps: int = 1
    step_size: float = 1e-3
    epsilon: float = 1e-5
    noise_std: float = 1e-5
    norm: str = "inf"
    noise_fn: Callable[[torch.Tensor], torch.Tensor] | None = field(default=None, repr=False)

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"SMART needs at least one ascent step, got steps={self.steps}")
        if self.norm not in NORMS:
            raise ValueError(f"SMART norm={self.norm!r}; use one of {list(NORMS)}")
        for name, value in (("step_size", self.step_size), ("epsilon", self.epsilon), ("noise_std", self.noise_std)):
            if value < 0:
                raise ValueError(f"SMART {name} must be >= 0, got {value}")
        bad = {k: v for k, v in self.weights.items() if v < 0}
        if bad:
            raise ValueError(f"SMART weights must be >= 0, got {bad}")

    def weight(self, task: str) -> float:
        return self.weights.get(task, 0.0)

    def initial_noise(self, embedded: torch.Tensor) -> torch.Tensor:
        if self.noise_fn is not None:
            return self.noise_fn(embedded).to(torch.float32)
        return torch.randn(embedded.shape, device=embedded.device, dtype=torch.float32) * self.noise_std

    def __call__(self, forward: Callable[[], torch.Tensor], tap: EmbeddingTap, kind: str,
                 clean: torch.Tensor) -> torch.Tensor:
        """R for one batch (not yet multiplied by λ).

        Args:
            forward: runs the model on the batch (inside `tap`) and returns its logits.
            tap: the tap that recorded the clean embedding output; later passes go through it.
            kind: the task kind ('classification' or 'regression').
            clean: the clean pass's logits, still attached to the graph.
        """
        embedded = tap.recorded
        if embedded is None:
            raise RuntimeError("SMART: the clean forward pass did not go through the embedding tap")
        target = clean.detach()
        base = embedded.detach()
        delta = self.initial_noise(base)
        for _ in range(self.steps):
            delta.requires_grad_(True)
            tap.replacement = base + delta
            adv = forward()
            (grad,) = torch.autograd.grad(divergence(kind, target, adv), delta)
            delta = project(delta.detach() + self.step_size * normalize_direction(grad, self.norm),
                            self.epsilon, self.norm)
        # The last pass keeps the clean embedding output in the graph, so the embedding layer is trained too.
        tap.replacement = embedded + delta
        return divergence(kind, clean, forward())


class BregmanTeacher:
    """θ̃: an exponential moving average of the model's weights, for SMART's Bregman proximal point term.

    `update` after every optimizer step: θ̃ ← β θ̃ + (1 − β) θ, with β = `early_momentum` for the first
    `early_fraction` of the training steps and `momentum` afterwards. The teacher runs in eval mode (no dropout).
    """

    def __init__(self, model: nn.Module, momentum: float = 0.999, early_momentum: float = 0.99,
                 early_fraction: float = 0.1):
        for name, value in (("momentum", momentum), ("early_momentum", early_momentum)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"Bregman teacher {name} must be in [0, 1), got {value}")
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.momentum, self.early_momentum, self.early_fraction = momentum, early_momentum, early_fraction

    @torch.no_grad()
    def update(self, model: nn.Module, step: int, max_steps: int) -> None:
        beta = self.early_momentum if step < self.early_fraction * max_steps else self.momentum
        mine, theirs = self._float_tensors(self.model), self._float_tensors(model)
        torch._foreach_lerp_(mine, theirs, 1.0 - beta)

    @staticmethod
    def _float_tensors(model: nn.Module) -> list[torch.Tensor]:
        state = model.state_dict(keep_vars=True)
        return [t.data for t in state.values() if t.is_floating_point()]

    @torch.no_grad()
    def logits(self, task: str, inputs: dict) -> torch.Tensor:
        return self.model(task=task, **inputs).logits

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)
