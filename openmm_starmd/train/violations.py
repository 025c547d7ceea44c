"""Structural-violation penalty on predicted backbones: stretched chain links and backbone overlaps.

The frame losses score each residue against its own target, so a prediction can be close residue by
residue and still stretch a CA–CA link past the break threshold or push two distant backbones into each
other — the ways raw proposals fail ``starmd validate``'s checks (:mod:`openmm_starmd.analysis.validity`).
A side chain that overlaps a backbone starts at a CB turned into it, so the ideal CB of every non-glycine
residue takes part too. Flat bottoms lie inside the validity thresholds and below what MD visits, so MD
structures are (almost) never penalised. Lengths are nm; the result is in nm² per residue.
"""

from __future__ import annotations

import torch

from openmm_starmd.analysis.validity import CA_BOND_BREAK_NM, CA_CLASH_NM, HEAVY_CLASH_NM
from openmm_starmd.units import ANGSTROM_PER_NM

# Flat-bottom edges, a margin inside the validity thresholds (break 0.42, CA clash 0.30, heavy clash 0.22):
# MD's consecutive CA–CA is 0.38 ± 0.01 nm (trans), its closest non-local backbone N···O (hydrogen bond)
# 0.27, its closest CB to a backbone atom or CB two or more residues away 0.31 (0.01st percentile).
LINK_MAX_NM = CA_BOND_BREAK_NM - 0.02
CA_MIN_NM = CA_CLASH_NM + 0.04
HEAVY_MIN_NM = HEAVY_CLASH_NM + 0.03
CB_MIN_NM = 0.32
# Neighbouring residues: the atom pairs (residue i's, residue i+1's) of the order N, CA, C, O, CB that are
# four or more bonds apart, the pairs starting at which validity counts an overlap. Their distances follow the
# φ/ψ between them: O(i)···C(i+1) and O(i)···O(i+1) close in at φ(i+1) near 0, which MD never visits (its
# closest such pair over the 24 systems of ../shared/data/md: 0.277 nm); they take HEAVY_MIN_NM.
_NEIGHBOUR_FAR = (
    (False, True, True, True, True),  # N(i): CA, C, O, CB of i+1 (N–N is three bonds)
    (False, False, True, True, True),  # CA(i): C, O, CB
    (False, False, False, True, False),  # C(i): O only (N, CA, C, CB within three bonds)
    (False, False, True, True, True),  # O(i): C, O, CB
    (False, True, True, True, True),  # CB(i): CA, C, O, CB
)
# CB from N, CA, C: CA + a (CA−N)×(C−CA) + b (CA−N) + c (C−CA) with the bond vectors in Å, ideal
# tetrahedral geometry (trRosetta's coefficients)
_CB_CROSS, _CB_N, _CB_C = -0.58273431, 0.56802827, -0.54067466


def ideal_cb(backbone: torch.Tensor) -> torch.Tensor:
    """Ideal CB ``[..., 3]`` nm of backbones ``[..., 4, 3]`` nm (N, CA, C, O)."""
    n, ca, c = backbone[..., 0, :], backbone[..., 1, :], backbone[..., 2, :]
    b, a = (ca - n) * ANGSTROM_PER_NM, (c - ca) * ANGSTROM_PER_NM
    return ca + (_CB_CROSS * torch.linalg.cross(b, a) + _CB_N * b + _CB_C * a) / ANGSTROM_PER_NM


def backbone_violation(
    backbone: torch.Tensor, residue_mask: torch.Tensor, chain_break: torch.Tensor,
    has_cb: torch.Tensor | None = None, neighbours: bool = False,
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
    has_cb
        Optional BoolTensor ``[B, N]``: residues with a CB (all but glycine); their ideal CB joins the
        overlap check with floor :data:`CB_MIN_NM`. None: backbone atoms only.
    neighbours
        Also score the pairs of consecutive residues four or more bonds apart (the O(i)···C(i+1) and
        O(i)···O(i+1) of a φ(i+1) near 0, among others) under :data:`HEAVY_MIN_NM`, except across a chain
        break.

    Returns
    -------
    Tensor
        ``[B]`` nm²: squared excess of every consecutive CA–CA distance over :data:`LINK_MAX_NM`, plus the
        squared shortfall of every pair of backbone atoms in residues at least two apart under
        :data:`HEAVY_MIN_NM` (CA–CA pairs: :data:`CA_MIN_NM`; pairs with a CB: :data:`CB_MIN_NM`) and, with
        ``neighbours``, of the neighbouring pairs, summed and divided by the residue count.
    """
    B, N = backbone.shape[:2]
    mask = residue_mask.to(backbone.dtype)
    ca = backbone[:, :, 1]
    link = (ca[:, 1:] - ca[:, :-1]).norm(dim=-1)  # [B, N-1]
    linked = mask[:, 1:] * mask[:, :-1] * (~chain_break[:, 1:]).to(backbone.dtype)
    stretch = (torch.relu(link - LINK_MAX_NM) ** 2 * linked).sum(-1)

    atoms, atom_mask = backbone, mask[:, :, None].expand(B, N, 4)
    if has_cb is not None:
        atoms = torch.cat([backbone, ideal_cb(backbone)[:, :, None]], 2)
        atom_mask = torch.cat([atom_mask, (mask * has_cb.to(backbone.dtype))[:, :, None]], 2)
    A = atoms.shape[2]
    atoms, atom_mask = atoms.reshape(B, N * A, 3), atom_mask.reshape(B, N * A)
    dist = torch.cdist(atoms, atoms)  # [B, AN, AN]
    residue = torch.arange(N, device=backbone.device).repeat_interleave(A)
    far = (residue[:, None] - residue[None, :]).abs() >= 2  # [AN, AN]; same-residue and neighbours excluded
    kind = torch.arange(A, device=backbone.device).repeat(N)  # 0 N, 1 CA, 2 C, 3 O, 4 CB
    is_ca, is_cb = kind == 1, kind == 4
    floor = torch.full((N * A, N * A), HEAVY_MIN_NM, dtype=backbone.dtype, device=backbone.device)
    floor = torch.where(is_cb[:, None] | is_cb[None, :], CB_MIN_NM, floor)
    floor = torch.where(is_ca[:, None] & is_ca[None, :], CA_MIN_NM, floor)
    pairs = far[None]  # [1 or B, AN, AN]
    if neighbours:
        table = torch.tensor(_NEIGHBOUR_FAR, device=backbone.device)[:A, :A]
        after = (residue[None, :] - residue[:, None]) == 1  # [AN, AN]: the column atom's residue is the next
        near = after & table[kind[:, None], kind[None, :]]
        linked_atom = (~chain_break)[:, residue]  # [B, AN]: the atom's residue continues the chain
        near = near[None] & linked_atom[:, None, :]
        near = near | near.transpose(1, 2)  # [B, AN, AN]
        floor = torch.where(near, HEAVY_MIN_NM, floor)
        pairs = pairs | near
    pair_mask = pairs * atom_mask[:, :, None] * atom_mask[:, None, :]
    # each unordered pair appears twice in the symmetric matrix: halve it
    overlap = 0.5 * (torch.relu(floor - dist) ** 2 * pair_mask).sum((-1, -2))
    return (stretch + overlap) / mask.sum(-1).clamp_min(1.0)
