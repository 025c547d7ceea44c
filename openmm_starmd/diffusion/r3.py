"""Translation diffusion: a VP SDE on displacements in diffusion units (see ModelConfig)."""

from __future__ import annotations

import torch

from openmm_starmd.diffusion.noise import Generators, randn
from openmm_starmd.diffusion.schedule import VPSchedule


class R3Diffuser:
    """Forward noising, score and reverse steps of the translation VP SDE.

    Parameters
    ----------
    beta_min, beta_max
        Linear β schedule (see :class:`VPSchedule`).
    """

    def __init__(self, beta_min: float, beta_max: float) -> None:
        self.schedule = VPSchedule(beta_min, beta_max)

    def add_noise(
        self, x0: torch.Tensor, tau: torch.Tensor, generator: Generators
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample ``x_τ = α x0 + σ ε``.

        Parameters
        ----------
        x0
            Clean coordinates ``[..., 3]`` (diffusion units).
        tau
            Diffusion times ``[...]`` broadcasting against ``x0[..., 0]``.

        Returns
        -------
        x_tau, eps
            Both ``[..., 3]``.
        """
        eps = randn(tuple(x0.shape), generator, x0.dtype, x0.device)
        alpha = self.schedule.alpha(tau)[..., None]
        sigma = self.schedule.sigma(tau)[..., None]
        return alpha * x0 + sigma * eps, eps

    def score(self, x_tau: torch.Tensor, x0: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        """Score ``-(x_τ - α x0) / σ²`` ``[..., 3]`` of the Gaussian around the (predicted) ``x0``."""
        alpha = self.schedule.alpha(tau)[..., None]
        sigma2 = self.schedule.sigma(tau)[..., None] ** 2
        return -(x_tau - alpha * x0) / sigma2

    def prior(self, shape: tuple[int, ...], generator: Generators, device: torch.device | str) -> torch.Tensor:
        """Standard normal ``[*shape, 3]``: the τ = 1 distribution (one generator per ``shape[0]`` element
        or one for all)."""
        return randn((*shape, 3), generator, torch.float32, device)

    def reverse_step(
        self,
        x: torch.Tensor,
        x0_hat: torch.Tensor,
        tau: float,
        d_tau: float,
        generator: Generators,
        deterministic: bool = False,
        method: str = "exponential",
    ) -> torch.Tensor:
        """One reverse step from τ to τ − ``d_tau``.

        Parameters
        ----------
        x, x0_hat
            Current state and the network's clean prediction, ``[..., 3]`` (diffusion units).
        tau, d_tau
            Current time and the (positive) step.
        deterministic
            Probability-flow ODE instead of the reverse SDE.
        method
            ``"euler"``: Euler–Maruyama (Euler for the ODE). ``"exponential"``: the same SDE/ODE solved
            exactly over the step with ``x0_hat`` held fixed (its drift is then linear in x); this is
            the DDPM posterior draw (DDIM for the ODE) and stays accurate with few steps, where
            Euler–Maruyama overshoots (β dτ reaches 1 at 20 steps).
        """
        if method == "exponential":
            return self._exponential_step(x, x0_hat, tau, d_tau, generator, deterministic)
        if method != "euler":
            raise ValueError(f"unknown sampler method {method!r}")
        t = torch.tensor(tau, dtype=x.dtype, device=x.device)
        beta = self.schedule.beta(t)
        score = self.score(x, x0_hat, t)
        if deterministic:
            return x + (0.5 * beta * x + 0.5 * beta * score) * d_tau
        z = randn(tuple(x.shape), generator, x.dtype, x.device)
        return x + (0.5 * beta * x + beta * score) * d_tau + torch.sqrt(beta * d_tau) * z

    def _exponential_step(
        self, x: torch.Tensor, x0_hat: torch.Tensor, tau: float, d_tau: float, generator: Generators,
        deterministic: bool,
    ) -> torch.Tensor:
        # Scalar schedule values as host floats (no device sync, no tensor ops)
        (a0, s0), (a1, s1) = self.schedule.alpha_sigma(tau), self.schedule.alpha_sigma(tau - d_tau)
        if deterministic:
            return a1 * x0_hat + s1 * (x - a0 * x0_hat) / s0
        a_step = a0 / a1
        var_step = s0**2 - a_step**2 * s1**2
        mean = (a_step * s1**2 * x + a1 * var_step * x0_hat) / s0**2
        z = randn(tuple(x.shape), generator, x.dtype, x.device)
        return mean + (var_step * s1**2 / s0**2) ** 0.5 * z
