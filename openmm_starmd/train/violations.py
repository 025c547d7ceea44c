"""Structural-violation penalty on predicted backbones: stretched chain links and backbone overlaps.

The frame losses score each residue against its own target, so a prediction can be close residue by
residue and still stretch a CA–CA link past the break threshold or push two distant backbones into each
other — the two ways raw proposals fail ``starmd validate``'s checks (:mod:`openmm_starmd.analysis.validity`).
This penalty scores those directly, with flat bottoms set inside the validity thresholds so that MD
structures are (almost) never penalised. Lengths are nm; the result is in nm² per residue.
"""

from __future__ import annotations

import torch

from openmm_starmd.analysis.validity import CA_BOND_BREAK_NM, CA_CLASH_NM, HEAVY_CLASH_NM

# Flat-bottom edges, a margin inside the validity thresholds (break 0.42, CA clash 0.30, heavy clash 0.22):
# MD's consecutive CA–CA is 0.38 ± 0.01 nm (trans), its closest non-local backbone N···O (hydrogen bond) 0.27.
LINK_MAX_NM = CA_BOND_BREAK_NM - 0.02
CA_MIN_NM = CA_CLASH_NM + 0.04
HEAVY_MIN_NM = HEAVY_CLASH_NM + 0.03


def backbone_violation(
    backbone: torch.Tensor, residue_mask: torch.Tensor, chain_break: torch.Tensor,
) -> torch.Tensor:
    """Per-structure violation of backbones ``[B, N, 4, 3]`` nm (N, CA, C, O).

    Parameters
    ----------
    backbone
        Backbone atoms ``[B, N, 4, 3]`` nm.
    residue_mask
        BoolTensor ``[B, N]``: real residues (padding is ignored).
    chain_break
        BoolTensor ``[B, N]``: residue i does not follow residue i−1 (no link is scored there).

    Returns
    -------
    Tensor
        ``[B]`` nm²: squared excess of every consecutive CA–CA distance over :data:`LINK_MAX_NM`, plus the
        squared shortfall of every pair of backbone atoms in residues at least two apart under
        :data:`HEAVY_MIN_NM` (CA–CA pairs: :data:`CA_MIN_NM`), summed and divided by the residue count.
    """
    B, N = backbone.shape[:2]
    mask = residue_mask.to(backbone.dtype)
    ca = backbone[:, :, 1]
    link = (ca[:, 1:] - ca[:, :-1]).norm(dim=-1)  # [B, N-1]
    linked = mask[:, 1:] * mask[:, :-1] * (~chain_break[:, 1:]).to(backbone.dtype)
    stretch = (torch.relu(link - LINK_MAX_NM) ** 2 * linked).sum(-1)

    atoms = backbone.reshape(B, N * 4, 3)
    dist = torch.cdist(atoms, atoms)  # [B, 4N, 4N]
    residue = torch.arange(N, device=backbone.device).repeat_interleave(4)
    far = (residue[:, None] - residue[None, :]).abs() >= 2  # [4N, 4N]; same-residue and neighbours excluded
    is_ca = torch.arange(4, device=backbone.device).repeat(N) == 1
    floor = torch.where(is_ca[:, None] & is_ca[None, :], CA_MIN_NM, HEAVY_MIN_NM).to(backbone.dtype)
    atom_mask = mask.repeat_interleave(4, dim=1)
    pair_mask = far[None] * atom_mask[:, :, None] * atom_mask[:, None, :]
    # each unordered pair appears twice in the symmetric matrix: halve it
    overlap = 0.5 * (torch.relu(floor - dist) ** 2 * pair_mask).sum((-1, -2))
    return (stretch + overlap) / mask.sum(-1).clamp_min(1.0)
