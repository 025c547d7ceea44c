"""Noise schedules of the two diffusion processes, as functions of the diffusion time τ ∈ [0, 1].

Translations follow a variance-preserving SDE ``dx = -½β(τ) x dτ + √β(τ) dW`` with linear β;
rotations follow IGSO(3) noise with ``log σ(τ)`` linear between ``sigma_min`` and ``sigma_max``.
"""

from __future__ import annotations

import math

import torch


class VPSchedule:
    """Variance-preserving schedule with β(τ) = β_min + τ (β_max − β_min) (1/unit diffusion time)."""

    def __init__(self, beta_min: float, beta_max: float) -> None:
        self.beta_min = float(beta_min)
        self.beta_max = float(beta_max)

    def beta(self, tau: torch.Tensor) -> torch.Tensor:
        """β(τ) for ``tau`` of any shape."""
        return self.beta_min + tau * (self.beta_max - self.beta_min)

    def _integral(self, tau: torch.Tensor | float) -> torch.Tensor | float:
        """``∫₀^τ β``, for a tensor or a float alike (plain arithmetic)."""
        return self.beta_min * tau + 0.5 * (self.beta_max - self.beta_min) * tau * tau

    def alpha(self, tau: torch.Tensor) -> torch.Tensor:
        """Signal factor ``exp(-½ ∫β)`` for ``tau`` of any shape."""
        return torch.exp(-0.5 * self._integral(tau))

    def sigma(self, tau: torch.Tensor) -> torch.Tensor:
        """Noise standard deviation ``sqrt(1 - α²)`` (diffusion units) for ``tau`` of any shape."""
        return torch.sqrt((1.0 - self.alpha(tau) ** 2).clamp_min(1e-12))

    def alpha_sigma(self, tau: float) -> tuple[float, float]:
        """α and σ at one ``tau`` as host floats (the same formulas as :meth:`alpha` and :meth:`sigma`)."""
        alpha = math.exp(-0.5 * self._integral(tau))
        return alpha, math.sqrt(max(1.0 - alpha * alpha, 1e-12))


class LogSigmaSchedule:
    """IGSO(3) scale σ(τ) = σ_min (σ_max/σ_min)^τ (rad) and its squared diffusion coefficient."""

    def __init__(self, sigma_min: float, sigma_max: float) -> None:
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)
        self.log_ratio = math.log(self.sigma_max / self.sigma_min)

    def sigma(self, tau: torch.Tensor) -> torch.Tensor:
        """σ(τ) in rad for ``tau`` of any shape."""
        return self.sigma_min * torch.exp(tau * self.log_ratio)

    def sigma_g2(self, tau: float) -> tuple[float, float]:
        """σ(τ) (rad) and the squared diffusion coefficient ``g² = dσ²/dτ`` at one ``tau``, as host floats."""
        sigma = self.sigma_min * math.exp(tau * self.log_ratio)
        return sigma, 2.0 * sigma * sigma * self.log_ratio
