"""Preparing frame groups for :class:`~openmm_starmd.model.network.StarMDNetwork`.

Shared by the training objective and the rollout so both build tokens the same way:
clean history groups are expressed relative to the residue's previous (possibly context-noised)
frame, noisy target groups are the diffusion state relative to the residue's last clean frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from openmm_starmd.diffusion.sampler import FrameDiffusion
from openmm_starmd.frames.rigid import apply, apply_inverse, so3_exp
from openmm_starmd.model.embeddings import bonded_to_next, token_features


@dataclass
class Residues:
    """Static per-residue inputs, batched: ``residue_type``, ``residue_index`` ``[B, N]`` long,
    ``residue_mask``, ``chain_break`` ``[B, N]`` bool (``chain_break[i]``: no bond between i−1 and i)."""

    residue_type: torch.Tensor
    residue_index: torch.Tensor
    residue_mask: torch.Tensor
    chain_break: torch.Tensor

    @property
    def bonded(self) -> torch.Tensor:
        return bonded_to_next(self.residue_mask, self.chain_break)


def relative(
    ref_rot: torch.Tensor, ref_trans: torch.Tensor, rot: torch.Tensor, trans: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame (``rot`` ``[..., 3, 3]``, ``trans`` ``[..., 3]`` nm) in the axes of ``ref``: ``(R_refᵀ R,
    R_refᵀ (t − t_ref) · scale)`` (diffusion units)."""
    return ref_rot.transpose(-1, -2) @ rot, apply_inverse(ref_rot, ref_trans, trans) * scale


def absolute(
    ref_rot: torch.Tensor, ref_trans: torch.Tensor, rel_rot: torch.Tensor, rel_x: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`relative`: global rotation ``[..., 3, 3]`` and translation ``[..., 3]`` nm."""
    return ref_rot @ rel_rot, apply(ref_rot, ref_trans, rel_x / scale)


def perturb_frames(
    diffusion: FrameDiffusion, rot: torch.Tensor, trans: torch.Tensor, tau: torch.Tensor,
    generator: torch.Generator, scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Context ("history") noise at level ``tau``: body-frame IGSO(3) rotation noise and a local-axes
    Gaussian displacement of VP standard deviation; frames with ``tau == 0`` come back unchanged.

    Parameters
    ----------
    rot, trans
        ``[B, F, N, 3, 3]`` and ``[B, F, N, 3]`` nm.
    tau
        ``[B, F]`` noise levels.
    """
    omega, local = frame_noise(diffusion, tau, trans.shape[2], generator, scale, trans.dtype)
    return apply_frame_noise(rot, trans, omega, local)


def frame_noise(
    diffusion: FrameDiffusion, tau: torch.Tensor, num_residues: int, generator: torch.Generator, scale: float,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The draws of :func:`perturb_frames` for ``tau`` ``[B, F]``: rotation vectors ``[B, F, N, 3]`` (rad) and
    local displacements ``[B, F, N, 3]`` nm, zero where ``tau == 0``. Drawn on ``tau``'s device."""
    B, F = tau.shape
    sig_rot, _, sig_tr = diffusion.sigmas(tau.clamp_min(1e-4))
    on = (tau > 0)[:, :, None]
    omega = diffusion.so3.igso3.sample(sig_rot[:, :, None].expand(B, F, num_residues).contiguous(), generator)
    eps = torch.randn(B, F, num_residues, 3, generator=generator, device=tau.device, dtype=dtype)
    return omega * on[..., None], eps * (sig_tr[:, :, None, None] * on[..., None] / scale)


def apply_frame_noise(
    rot: torch.Tensor, trans: torch.Tensor, omega: torch.Tensor, local: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames ``rot`` ``[..., N, 3, 3]``, ``trans`` ``[..., N, 3]`` nm moved by :func:`frame_noise` draws
    (``omega``, ``local`` ``[..., N, 3]``, broadcast against the frames)."""
    return rot @ so3_exp(omega), trans + torch.einsum("...ij,...j->...i", rot, local)


def clean_inputs(
    res: Residues, rot: torch.Tensor, trans: torch.Tensor, prev_rot: torch.Tensor, prev_trans: torch.Tensor,
    has_prev: torch.Tensor, scale: float,
) -> torch.Tensor:
    """Token features ``[B, F, N, NUM_TOKEN_FEATURES]`` of clean history groups.

    Parameters
    ----------
    rot, trans
        The (context-noised) history frames ``[B, F, N, 3, 3]``, ``[B, F, N, 3]`` nm.
    prev_rot, prev_trans
        The same residues' previous frames (same shapes); ignored where ``has_prev`` ``[B, F]`` is False.
    """
    rel_rot, rel_x = relative(prev_rot, prev_trans, rot, trans, scale)
    return token_features(rel_rot, rel_x, has_prev, rot, trans, res.bonded, scale)


def noisy_inputs(
    res: Residues, ref_rot: torch.Tensor, ref_trans: torch.Tensor, rel_rot: torch.Tensor, rel_x: torch.Tensor,
    scale: float, rot_sigma: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Features and global frames of noisy target groups.

    Parameters
    ----------
    ref_rot, ref_trans
        Each residue's last clean frame ``[B, F, N, 3, 3]``, ``[B, F, N, 3]`` nm.
    rel_rot, rel_x
        Diffusion state relative to it: ``[B, F, N, 3, 3]`` and ``[B, F, N, 3]`` (diffusion units).
    rot_sigma
        ``[B, F]`` IGSO(3) σ (rad) of each group's τ; the rotation vector input is divided by it.

    Returns
    -------
    features, rot, trans
        ``[B, F, N, NUM_TOKEN_FEATURES]`` and the global noisy frames.
    """
    B, F = rel_x.shape[:2]
    rot, trans = absolute(ref_rot, ref_trans, rel_rot, rel_x, scale)
    has_prev = torch.ones(B, F, dtype=torch.bool, device=rel_x.device)
    feats = token_features(rel_rot, rel_x, has_prev, rot, trans, res.bonded, scale, 1.0 / rot_sigma)
    return feats, rot, trans
