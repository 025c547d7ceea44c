"""Reverse-time integration of the joint (rotation, translation) diffusion.

The state is one residue frame per residue *relative to a reference frame* (the residue's last clean
frame): a rotation ``[..., N, 3, 3]`` and a displacement ``[..., N, 3]`` in diffusion units, both in the
reference's local axes. Because all noise is drawn in those local axes, a global rigid motion of the
reference leaves the sampled relative state unchanged for a fixed generator seed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from openmm_starmd.diffusion.noise import Generators
from openmm_starmd.diffusion.r3 import R3Diffuser
from openmm_starmd.diffusion.so3 import SO3Diffuser
from openmm_starmd.model.config import ModelConfig

Denoiser = Callable[[torch.Tensor, torch.Tensor, float], tuple[torch.Tensor, torch.Tensor]]


class FrameDiffusion:
    """The two diffusion processes of a :class:`ModelConfig`: ``.so3`` and ``.r3``."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self.so3 = SO3Diffuser(config.rot_sigma_min, config.rot_sigma_max)
        self.r3 = R3Diffuser(config.vp_beta_min, config.vp_beta_max)

    def sigmas(self, tau: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """IGSO(3) σ, VP α and VP σ, each shaped like ``tau``."""
        return self.so3.schedule.sigma(tau), self.r3.schedule.alpha(tau), self.r3.schedule.sigma(tau)


def sample_relative(
    denoise: Denoiser,
    shape: tuple[int, ...],
    diffusion: FrameDiffusion,
    generator: Generators,
    device: torch.device | str = "cpu",
    num_steps: int | None = None,
    deterministic: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw relative frames by integrating the reverse process from τ = 1 to ``tau_min``.

    Parameters
    ----------
    denoise
        ``denoise(rel_rot [*shape, 3, 3], x [*shape, 3], tau) -> (rel_rot0_hat, x0_hat)``.
    shape
        Batch shape of the frames, e.g. ``(B, N)``.
    diffusion
        The processes and their configuration.
    generator
        Source of all randomness (prior and Euler–Maruyama noise): one generator, or one per element of
        ``shape[0]`` (element b then draws exactly what a run of shape ``(1, *shape[1:])`` with
        ``generator[b]`` would).
    num_steps
        Network evaluations (default ``config.num_sampler_steps``); the last one's clean prediction is
        returned.
    deterministic
        Probability-flow ODE instead of the SDE (default ``config.deterministic_sampler``); the prior
        draw still uses ``generator``.

    Returns
    -------
    rel_rot, x
        ``[*shape, 3, 3]`` and ``[*shape, 3]`` (diffusion units) in the reference's local axes.
    """
    cfg = diffusion.config
    steps = cfg.num_sampler_steps if num_steps is None else int(num_steps)
    det = cfg.deterministic_sampler if deterministic is None else bool(deterministic)
    u = torch.linspace(0.0, 1.0, steps, dtype=torch.float64, device="cpu")  # host floats on purpose
    taus = (cfg.tau_min + (1.0 - cfg.tau_min) * (1.0 - u) ** cfg.sampler_time_power).tolist()
    rot = diffusion.so3.prior(shape, generator, device)
    x = diffusion.r3.prior(shape, generator, device)
    for i, tau in enumerate(taus):
        rot0, x0 = denoise(rot, x, tau)
        if i == steps - 1:
            return rot0, x0
        d_tau = tau - taus[i + 1]
        rot = diffusion.so3.reverse_step(rot, rot0, tau, d_tau, generator, det)
        x = diffusion.r3.reverse_step(x, x0, tau, d_tau, generator, det, cfg.sampler_method)
    raise AssertionError("unreachable")
