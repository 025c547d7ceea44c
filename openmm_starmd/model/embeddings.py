"""Input embeddings: Fourier features of scalars and 2-D rotary position embeddings.

Rotary angles over the frame index use integer periods and ``t mod period``, so the angles stay
exact however long a rollout runs (float32 ``θ·t`` would lose digits after ~10⁵ frames) while the
relative phases of frames less than ``max_period`` apart are unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class FourierFeatures(nn.Module):
    """Fixed sin/cos features of a scalar at geometric frequencies.

    Parameters
    ----------
    num
        Number of frequencies; the output has ``2 * num`` channels.
    max_frequency
        Highest angular frequency (rad per input unit); the lowest is 1.
    """

    def __init__(self, num: int, max_frequency: float = 100.0) -> None:
        super().__init__()
        freqs = torch.exp(torch.linspace(0.0, math.log(max_frequency), num))
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` of any shape ``[...]`` → features ``[..., 2 * num]``."""
        angles = x[..., None] * self.freqs
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


class Rotary2D(nn.Module):
    """Rotary embedding over (residue index, frame index) for attention heads of size ``head_dim``.

    Channel pairs ``(j, j + head_dim/2)`` rotate by angle ``a_j``; the first ``head_dim/4`` angles follow
    the residue index, the rest the frame index.
    """

    def __init__(self, head_dim: int, residue_base: float, time_max_period: int) -> None:
        super().__init__()
        if head_dim % 4 != 0:
            raise ValueError("head_dim must be a multiple of 4")
        quarter = head_dim // 4
        res_freqs = residue_base ** (-torch.arange(quarter, dtype=torch.float64) / quarter)
        periods = torch.exp(torch.linspace(math.log(2.0), math.log(time_max_period), quarter)).round()
        self.register_buffer("residue_freqs", res_freqs.float(), persistent=False)
        self.register_buffer("time_periods", periods.long(), persistent=False)

    def angles(self, residue_index: torch.Tensor, frame_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cos and sin ``[B, 1, L, head_dim/2]`` for tokens with ``residue_index`` ``[B, L]`` and
        ``frame_index`` ``[B, L]`` (both integer)."""
        res = residue_index.to(torch.float32)[..., None] * self.residue_freqs
        phase = torch.remainder(frame_index.long()[..., None], self.time_periods)
        time = (2.0 * math.pi) * phase.to(torch.float32) / self.time_periods.to(torch.float32)
        angle = torch.cat([res, time], dim=-1)[:, None]
        return torch.cos(angle), torch.sin(angle)

    @staticmethod
    def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Apply the rotation to ``x`` ``[B, H, L, head_dim]`` with ``cos``/``sin`` ``[B, 1, L, head_dim/2]``."""
        half = x.shape[-1] // 2
        x1, x2 = x[..., :half], x[..., half:]
        return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


NUM_TOKEN_FEATURES = 13 + 3 + 1 + 6 + 4 + 4


def _dihedral(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """sin and cos of the dihedral a-b-c-d for points ``[..., 3]`` (nm); outputs ``[...]``."""
    b0, b1, b2 = a - b, c - b, d - c
    b1n = b1 / torch.sqrt((b1 * b1).sum(-1, keepdim=True) + 1e-12)
    v = b0 - (b0 * b1n).sum(-1, keepdim=True) * b1n
    w = b2 - (b2 * b1n).sum(-1, keepdim=True) * b1n
    x = (v * w).sum(-1)
    y = (torch.linalg.cross(b1n, v, dim=-1) * w).sum(-1)
    r = torch.sqrt(x * x + y * y + 1e-12)
    return y / r, x / r


def bonded_to_next(residue_mask: torch.Tensor, chain_break: torch.Tensor) -> torch.Tensor:
    """``[B, N]`` bool: residue i is chain-bonded to residue i+1 (both real, no break before i+1).

    ``chain_break[i]`` True means residue i starts a new chain segment (no bond to i−1).
    """
    nxt = torch.zeros_like(residue_mask)
    nxt[:, :-1] = residue_mask[:, :-1] & residue_mask[:, 1:] & ~chain_break[:, 1:]
    return nxt


def token_features(
    rel_rot: torch.Tensor,
    rel_trans: torch.Tensor,
    has_prev: torch.Tensor,
    rot: torch.Tensor,
    trans: torch.Tensor,
    bonded: torch.Tensor,
    scale: float,
    rot_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """SE(3)-invariant per-token input features ``[B, F, N, NUM_TOKEN_FEATURES]``.

    Parameters
    ----------
    rel_rot, rel_trans
        The token's frame relative to the same residue's previous frame: ``[B, F, N, 3, 3]`` and
        ``[B, F, N, 3]`` (diffusion units, in the previous frame's axes). Ignored where not ``has_prev``.
    has_prev
        ``[B, F]`` bool: a previous frame exists.
    rot, trans
        Global frames ``[B, F, N, 3, 3]``, ``[B, F, N, 3]`` (nm) for torsions and neighbour distances.
    bonded
        ``[B, N]`` bool from :func:`bonded_to_next`.
    scale
        nm → diffusion units.
    rot_scale
        ``[B, F]`` factor for the relative rotation vector (1/σ of the rotation noise for noisy groups,
        so the network sees the noise at unit scale); default 1.
    """
    from openmm_starmd.frames.protein import IDEAL_LOCAL_BACKBONE
    from openmm_starmd.frames.rigid import apply, so3_log

    B, F, N = rot.shape[:3]
    hp = has_prev[:, :, None, None].to(rot.dtype)
    rel = torch.cat([rel_rot.reshape(B, F, N, 9), rel_trans, torch.linalg.norm(rel_trans, dim=-1, keepdim=True)], -1)
    rotvec = so3_log(rel_rot)
    if rot_scale is not None:
        rotvec = rotvec * rot_scale[:, :, None, None]
    rel = torch.cat([rel, rotvec], -1) * hp
    # N, CA, C of every residue in chain order; the dihedral over atoms j..j+3 of that chain is ψ_i (j = 3i),
    # ω_i (3i + 1) and φ_{i+1} (3i + 2): one call for all three.
    local = IDEAL_LOCAL_BACKBONE.to(trans.device, trans.dtype)
    chain = apply(rot[..., None, :, :], trans[..., None, :], local).reshape(B, F, 3 * N, 3)
    sin, cos = _dihedral(chain[:, :, :-3], chain[:, :, 1:-2], chain[:, :, 2:-1], chain[:, :, 3:])
    zero = torch.zeros_like(rot[..., 0, 0])
    pad = sin.new_zeros(B, F, 3)
    sin, cos = torch.cat([sin, pad], 2).view(B, F, N, 3), torch.cat([cos, pad], 2).view(B, F, N, 3)
    bond = bonded[:, None, :].expand(B, F, N)

    def pad_next(x: torch.Tensor) -> torch.Tensor:  # value for pair (i, i+1) stored at i
        return torch.cat([x, zero[:, :, :1]], dim=2)

    def pad_prev(x: torch.Tensor) -> torch.Tensor:  # value for pair (i-1, i) stored at i
        return torch.cat([zero[:, :, :1], x], dim=2)

    m_next = bond.to(rot.dtype)
    m_prev = torch.cat([zero[:, :, :1], m_next[:, :, :-1]], dim=2)
    # φ_i, then ψ_i and ω_i (pairs (i, i+1) stored at i)
    phi = torch.stack([pad_prev(sin[:, :, :-1, 2]), pad_prev(cos[:, :, :-1, 2])], -1) * m_prev[..., None]
    psi_omega = torch.stack([sin[..., 0], cos[..., 0], sin[..., 1], cos[..., 1]], -1) * m_next[..., None]
    tors = torch.cat([phi, psi_omega], -1)
    # CA distances to sequence neighbours at offsets ±1, ±2 (masked across breaks and ends)
    d1 = torch.linalg.norm(trans[:, :, 1:] - trans[:, :, :-1], dim=-1) * scale
    d2 = torch.linalg.norm(trans[:, :, 2:] - trans[:, :, :-2], dim=-1) * scale
    m2_next = torch.cat([m_next[:, :, :-1] * m_next[:, :, 1:], zero[:, :, :1]], dim=2)
    m2_prev = torch.cat([zero[:, :, :2], m2_next[:, :, :-2]], dim=2)
    d2_next = torch.cat([d2, zero[:, :, :2]], dim=2)
    d2_prev = torch.cat([zero[:, :, :2], d2], dim=2)
    dists = torch.stack([pad_prev(d1) * m_prev, pad_next(d1) * m_next, d2_prev * m2_prev, d2_next * m2_next], -1)
    masks = torch.stack([m_prev, m_next, m2_prev, m2_next], dim=-1)
    return torch.cat([rel, hp.expand(B, F, N, 1), tors, dists, masks], dim=-1)
