"""Rotation diffusion: IGSO(3) noise applied in the body frame, ``R_τ = R_0 exp(ω)``, ω ~ IGSO(3)(σ(τ)).

Body-frame noise keeps everything invariant under a global rotation (``R → Q R`` leaves ω unchanged),
which is what makes the sampler SE(3)-equivariant for a fixed generator seed.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from openmm_starmd.diffusion.noise import Generators, igso3_sample, randn
from openmm_starmd.diffusion.schedule import LogSigmaSchedule
from openmm_starmd.frames.igso3 import IGSO3, SWITCH_SIGMA, angle_score
from openmm_starmd.frames.rigid import so3_exp, so3_log
from openmm_starmd.jit import frozen_trace

_IGSO3_CACHE: dict[tuple[float, float], IGSO3] = {}


def shared_igso3(sigma_min: float, sigma_max: float) -> IGSO3:
    """One IGSO3 table per σ range per process (building the tables takes ~0.2 s)."""
    key = (float(sigma_min), float(sigma_max))
    if key not in _IGSO3_CACHE:
        _IGSO3_CACHE[key] = IGSO3(sigma_min=min(1e-3, sigma_min), sigma_max=max(4.0, sigma_max))
    return _IGSO3_CACHE[key]


class _ReverseStep(nn.Module):
    """The arithmetic of one reverse step in the tensor-only form :func:`torch.jit.trace` records:
    ``(rot, rot0_hat[, z], σ, drift, noise) -> rot exp(score(σ) · drift [+ noise · z])``; σ, drift and noise
    are 0-d float64 tensors, so one trace serves every step on the same side of the score's σ switch."""

    def __init__(self, stochastic: bool) -> None:
        super().__init__()
        self.stochastic = stochastic

    def forward(self, rot: torch.Tensor, rot0_hat: torch.Tensor, *t: torch.Tensor) -> torch.Tensor:
        z, (sigma, drift, noise) = (t[0], t[1:]) if self.stochastic else (None, t)
        step = SO3Diffuser._score_at(so3_log(rot0_hat.transpose(-1, -2) @ rot), sigma) * drift
        return rot @ so3_exp(step if z is None else step + noise * z)


class SO3Diffuser:
    """Forward noising, score and reverse steps on SO(3).

    Parameters
    ----------
    sigma_min, sigma_max
        Range (rad) of the log-linear σ(τ) schedule.
    """

    def __init__(self, sigma_min: float, sigma_max: float) -> None:
        self.schedule = LogSigmaSchedule(sigma_min, sigma_max)
        self.igso3 = shared_igso3(sigma_min, sigma_max)
        # frozen traces of _ReverseStep per (shape, dtype, device, small σ, stochastic); None: tracing failed
        self._traced: dict[tuple, torch.jit.ScriptModule | None] = {}

    def add_noise(
        self, rot0: torch.Tensor, tau: torch.Tensor, generator: Generators
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Noisy rotations ``R0 exp(ω)`` ``[..., 3, 3]`` and the noise rotation vectors ω ``[..., 3]``.

        Parameters
        ----------
        rot0
            Clean rotations ``[..., 3, 3]``.
        tau
            ``[...]`` diffusion times.
        """
        omega = igso3_sample(self.igso3, self.schedule.sigma(tau).expand(rot0.shape[:-2]).contiguous(), generator)
        return rot0 @ so3_exp(omega), omega

    def score(self, rot_tau: torch.Tensor, rot0: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        """Body-frame score ``[..., 3]`` of IGSO(3) centred on ``rot0`` at ``rot_tau`` (both ``[..., 3, 3]``);
        differentiable everywhere, including ``rot_tau == rot0``."""
        return self.rotvec_score(so3_log(rot0.transpose(-1, -2) @ rot_tau), tau)

    def rotvec_score(self, rotvec: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        """Score ``(d log f/dω)/ω · rotvec`` ``[..., 3]`` with a smooth angle, so gradients stay finite at 0
        (:meth:`IGSO3.score` takes a plain square root there)."""
        return self._score_at(rotvec, self.schedule.sigma(tau))

    @staticmethod
    def _score_at(rotvec: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        v = rotvec.double()
        omega = torch.sqrt((v * v).sum(-1) + 1e-14)
        return ((angle_score(omega, sigma) / omega)[..., None] * v).to(rotvec.dtype)

    def noise_score(self, omega: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        """True score ``[..., 3]`` for noise ``omega`` ``[..., 3]`` drawn at ``tau`` ``[...]``."""
        return self.igso3.score(omega, self.schedule.sigma(tau))

    def score_norm(self, tau: torch.Tensor) -> torch.Tensor:
        """``E|score|²`` ``[...]`` at ``tau``, for loss normalisation."""
        return self.igso3.score_norm(self.schedule.sigma(tau))

    def prior(self, shape: tuple[int, ...], generator: Generators, device: torch.device | str) -> torch.Tensor:
        """Rotations ``[*shape, 3, 3]`` from IGSO(3)(σ_max): the τ = 1 distribution (one generator per
        ``shape[0]`` element or one for all)."""
        sigma = torch.full(shape, self.schedule.sigma_max, device=device)
        return so3_exp(igso3_sample(self.igso3, sigma, generator))

    def reverse_step(
        self,
        rot: torch.Tensor,
        rot0_hat: torch.Tensor,
        tau: float,
        d_tau: float,
        generator: Generators,
        deterministic: bool = False,
    ) -> torch.Tensor:
        """One geodesic Euler–Maruyama (or probability-flow) step from τ to τ − ``d_tau``.

        Without autograd (sampling) the step's arithmetic runs as a frozen TorchScript trace kept per shape and
        side of the score's σ switch: the same numbers, without Python's per-op overhead, which sets the cost
        of a step on small proteins.

        Parameters
        ----------
        rot, rot0_hat
            Current rotations and the network's clean prediction ``[..., 3, 3]``.
        """
        # host floats: a sampler step's schedule is scalar, and tensor arithmetic on it costs ops
        sigma, g2 = self.schedule.sigma_g2(tau)
        stochastic = not deterministic
        z = randn(tuple(rot.shape[:-1]), generator, rot.dtype, rot.device) if stochastic else None
        drift = g2 * d_tau if stochastic else 0.5 * g2 * d_tau
        scalars = [torch.tensor(v, dtype=torch.float64, device=rot.device)
                   for v in (sigma, drift, math.sqrt(g2 * d_tau))]
        args = [rot, rot0_hat, *([z] if stochastic else []), *scalars]
        step = _ReverseStep(stochastic)
        if not torch.is_grad_enabled():  # sampling: the same arithmetic without Python's per-op overhead
            key = (tuple(rot.shape), rot.dtype, rot.device, sigma < SWITCH_SIGMA, stochastic)
            if key not in self._traced:
                self._traced[key] = frozen_trace(step, args, "the rotation reverse step")
            if self._traced[key] is not None:
                step = self._traced[key]
        return step(*args)
