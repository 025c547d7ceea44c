"""Side-chain torsions χ1–χ4 as a categorical distribution over angle bins.

Rotamers are multi-modal (g+, g−, t wells for χ1), so a regression of sin/cos would return the circular
mean of the wells, often an eclipsed angle no residue visits. The χ head instead gives logits over
``bins`` equal bins of (−π, π] per torsion; training uses cross-entropy against the bin of the true
angle (periodic by construction: the first and last bins are neighbours on the circle, and every bin
is one class), and sampling draws a bin and then an angle uniformly inside it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

NUM_CHI = 4
CHI_OFFSET = 3  # χ1 is torsion 3 of (φ, ψ, ω, χ1, χ2, χ3, χ4)


def chi_bin(angles: torch.Tensor, bins: int) -> torch.Tensor:
    """Bin index (long, 0..bins−1) of angles (rad, any range); bin b covers [−π + b w, −π + (b+1) w)."""
    width = 2.0 * math.pi / bins
    wrapped = torch.remainder(angles + math.pi, 2.0 * math.pi)
    return torch.clamp((wrapped / width).long(), 0, bins - 1)


def chi_loss(logits: torch.Tensor, angles: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked mean cross-entropy of the χ head.

    Parameters
    ----------
    logits
        ``[B, T, N, 4, bins]`` χ1–χ4 logits.
    angles
        ``[B, T, N, 4]`` true χ1–χ4 (rad).
    mask
        ``[B, T, N, 4]`` float or bool: torsion exists (residue has it and is present).

    Returns
    -------
    torch.Tensor
        Scalar loss (nats per defined torsion); 0 when no torsion is defined.
    """
    B, T, N, X, bins = logits.shape
    target = chi_bin(angles, bins)
    nll = F.cross_entropy(logits.reshape(-1, bins).float(), target.reshape(-1), reduction="none").reshape(B, T, N, X)
    weight = mask.to(nll.dtype)
    return (nll * weight).sum() / weight.sum().clamp_min(1.0)


def sample_chi(logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Draw χ1–χ4 from the head's logits: a bin, then a uniform angle inside it.

    Parameters
    ----------
    logits
        ``[..., 4, bins]``.
    generator
        On the logits' device.

    Returns
    -------
    torch.Tensor
        ``[..., 4]`` angles (rad) in [−π, π).
    """
    bins = logits.shape[-1]
    probs = torch.softmax(logits.float(), dim=-1).reshape(-1, bins)
    index = torch.multinomial(probs, 1, generator=generator).reshape(logits.shape[:-1])
    offset = torch.rand(index.shape, generator=generator, device=logits.device)
    width = 2.0 * math.pi / bins
    return -math.pi + (index.to(torch.float32) + offset) * width


def most_likely_chi(logits: torch.Tensor) -> torch.Tensor:
    """``[..., 4]`` centre (rad) of the most probable bin of each torsion."""
    bins = logits.shape[-1]
    width = 2.0 * math.pi / bins
    return -math.pi + (logits.argmax(dim=-1).to(torch.float32) + 0.5) * width


def draw_chi(
    logits: torch.Tensor | None, generators: list[torch.Generator], draws: int = 1, fallback_draws: int = 0,
    fallback_temperature: float = 1.0,
) -> torch.Tensor | None:
    """``draws`` χ draws per batch element, each element from its own generator (replica b of a batch then
    draws what a single run with ``generators[b]`` draws).

    Parameters
    ----------
    logits
        ``[B, N, 4, bins]`` or None (a model without a χ head).
    generators
        B generators on the logits' device.
    draws
        M, independent draws per element (the first is the draw; the others are alternatives a side-chain
        placement may turn to).
    fallback_draws
        K further draws per element from ``logits / fallback_temperature``, after the M (the last resort of
        a placement).
    fallback_temperature
        T ≥ 1 of those draws (T > 1 flattens the distribution).

    Returns
    -------
    torch.Tensor or None
        ``[B, M + K, N, 4]`` angles (rad), or None when ``logits`` is None.
    """
    if logits is None:
        return None
    out = []
    for b, g in enumerate(generators):
        chi = sample_chi(logits[b].expand(draws, *logits.shape[1:]), g)
        if fallback_draws > 0:
            flat = logits[b].float() / fallback_temperature
            chi = torch.cat([chi, sample_chi(flat.expand(fallback_draws, *logits.shape[1:]), g)])
        out.append(chi)
    return torch.stack(out)


__all__ = ["CHI_OFFSET", "NUM_CHI", "chi_bin", "chi_loss", "draw_chi", "most_likely_chi", "sample_chi"]
