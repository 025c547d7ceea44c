"""Protein backbone ⇄ residue frames, and backbone/side-chain torsions.

Every residue of the topology (OpenMM ``Topology`` or ``mdtraj.Topology``) is one position ``N``;
residues that lack any of N, CA, C (caps, ligands, water, ions) are kept but masked out
(``residue_mask`` False), so indices line up with :mod:`openmm_starmd.data.featurize`.

Torsion columns (rad, IUPAC sign, as ``mdtraj.compute_*``):

* 0 φ_i  = C_{i-1}, N_i, CA_i, C_i
* 1 ψ_i  = N_i, CA_i, C_i, N_{i+1}
* 2 ω_i  = CA_{i-1}, C_{i-1}, N_i, CA_i  (the peptide bond *before* residue i, AlphaFold's convention)
* 3–6 χ1–χ4 (standard side-chain atoms, table :data:`CHI_ATOMS`)

A torsion that needs a neighbour uses it only across a peptide link (same chain, no numbering gap,
see :func:`chain_breaks`); missing atoms give mask False and angle 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import openmm.unit as u
import torch

from openmm_starmd.errors import StarMDError
from openmm_starmd.frames.rigid import apply, frames_from_three_points, identity_rotations

__all__ = [
    "BACKBONE_ATOMS",
    "CHI_ATOMS",
    "IDEAL_LOCAL_BACKBONE",
    "RESIDUE_NAMES",
    "ResidueRecord",
    "as_positions",
    "backbone_atom_indices",
    "backbone_from_frames",
    "backbone_local_coordinates",
    "canonical_residue_name",
    "chain_breaks",
    "dihedral",
    "frames_from_positions",
    "residue_records",
    "torsion_atom_indices",
    "torsions",
]

BACKBONE_ATOMS = ("N", "CA", "C", "O")
# The 20 standard residues; index 20 means "unknown / not an amino acid".
RESIDUE_NAMES = (
    "ALA", "ARG", "ASN", "ASP", "CYS", "GLN", "GLU", "GLY", "HIS", "ILE",
    "LEU", "LYS", "MET", "PHE", "PRO", "SER", "THR", "TRP", "TYR", "VAL",
)  # fmt: skip
# Protonation / force-field variants of the standard residues.
_ALIASES = {
    "HID": "HIS", "HIE": "HIS", "HIP": "HIS", "HSD": "HIS", "HSE": "HIS", "HSP": "HIS",
    "CYX": "CYS", "CYM": "CYS", "ASH": "ASP", "GLH": "GLU", "LYN": "LYS",
}  # fmt: skip
# Side-chain dihedral atoms (IUPAC-IUB 1970 definitions).
# fmt: off
CHI_ATOMS: dict[str, tuple[tuple[str, str, str, str], ...]] = {
    "ALA": (),
    "ARG": (
        ("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD"), ("CB", "CG", "CD", "NE"), ("CG", "CD", "NE", "CZ"),
    ),
    "ASN": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "OD1")),
    "ASP": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "OD1")),
    "CYS": (("N", "CA", "CB", "SG"),),
    "GLN": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD"), ("CB", "CG", "CD", "OE1")),
    "GLU": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD"), ("CB", "CG", "CD", "OE1")),
    "GLY": (),
    "HIS": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "ND1")),
    "ILE": (("N", "CA", "CB", "CG1"), ("CA", "CB", "CG1", "CD1")),
    "LEU": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD1")),
    "LYS": (
        ("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD"), ("CB", "CG", "CD", "CE"), ("CG", "CD", "CE", "NZ"),
    ),
    "MET": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "SD"), ("CB", "CG", "SD", "CE")),
    "PHE": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD1")),
    "PRO": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD")),
    "SER": (("N", "CA", "CB", "OG"),),
    "THR": (("N", "CA", "CB", "OG1"),),
    "TRP": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD1")),
    "TYR": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD1")),
    "VAL": (("N", "CA", "CB", "CG1"),),
}
# fmt: on

# Ideal geometry (Engh & Huber 1991): N-CA 0.1458 nm, CA-C 0.1525 nm, N-CA-C 111.0°,
# C=O 0.1231 nm, CA-C-O 120.5°.
_N_CA, _CA_C, _N_CA_C = 0.1458, 0.1525, math.radians(111.0)
_C_O, _CA_C_O = 0.1231, math.radians(120.5)
# Local coordinates (nm) of N, CA, C in the residue frame (e1 along CA->C, N in the e1-e2 plane, e2 > 0).
IDEAL_LOCAL_BACKBONE = torch.tensor(
    [[_N_CA * math.cos(_N_CA_C), _N_CA * math.sin(_N_CA_C), 0.0], [0.0, 0.0, 0.0], [_CA_C, 0.0, 0.0]],
    dtype=torch.float32,
)


@dataclass(frozen=True)
class ResidueRecord:
    """What this module needs from one residue of either topology flavour."""

    name: str
    chain_index: int
    resseq: int | None
    atoms: dict[str, int]


def canonical_residue_name(name: str) -> str:
    """Standard three-letter name for force-field variants (HIE -> HIS, ...); other names unchanged."""
    name = name.strip().upper()
    return _ALIASES.get(name, name)


def residue_records(topology) -> list[ResidueRecord]:
    """Residues of an OpenMM ``Topology`` or an ``mdtraj.Topology``, in topology order."""
    records = []
    if hasattr(topology, "residues") and callable(topology.residues):  # OpenMM
        for res in topology.residues():
            try:
                resseq = int(res.id)
            except ValueError:
                resseq = None
            if getattr(res, "insertionCode", " ").strip():
                resseq = None  # an insertion code means the numbering is not a plain sequence
            atoms = {a.name: a.index for a in res.atoms()}
            records.append(ResidueRecord(res.name, res.chain.index, resseq, atoms))
    elif hasattr(topology, "residues"):  # mdtraj
        for res in topology.residues:
            atoms = {a.name: a.index for a in res.atoms}
            records.append(ResidueRecord(res.name, res.chain.index, int(res.resSeq), atoms))
    else:
        raise StarMDError(f"expected an OpenMM or mdtraj Topology, got {type(topology).__name__}")
    return records


def _n_atoms(topology) -> int:
    return topology.getNumAtoms() if hasattr(topology, "getNumAtoms") else topology.n_atoms


def chain_breaks(records: list[ResidueRecord]) -> torch.Tensor:
    """Bool ``[N]``: True where residue i does not continue residue i-1 (first residue, new chain,
    or a gap in residue numbering)."""
    out = torch.ones(len(records), dtype=torch.bool)
    for i in range(1, len(records)):
        prev, cur = records[i - 1], records[i]
        same_chain = prev.chain_index == cur.chain_index
        gap = prev.resseq is not None and cur.resseq is not None and cur.resseq - prev.resseq != 1
        out[i] = not same_chain or gap
    return out


def backbone_atom_indices(topology) -> tuple[torch.Tensor, torch.Tensor]:
    """Atom indices of N, CA, C, O per residue.

    Returns
    -------
    index
        LongTensor ``[N, 4]`` (N, CA, C, O), -1 where the atom is missing.
    residue_mask
        BoolTensor ``[N]``: True where N, CA and C are all present (O may be missing).
    """
    records = residue_records(topology)
    index = torch.tensor([[r.atoms.get(a, -1) for a in BACKBONE_ATOMS] for r in records], dtype=torch.long)
    index = index.reshape(len(records), 4)
    return index, (index[:, :3] >= 0).all(dim=1)


def torsion_atom_indices(topology) -> tuple[torch.Tensor, torch.Tensor]:
    """Atom indices of the 7 torsions (φ, ψ, ω, χ1–χ4) per residue.

    Returns
    -------
    index
        LongTensor ``[N, 7, 4]``, -1 where undefined.
    mask
        BoolTensor ``[N, 7]``: True where all four atoms exist.
    """
    records = residue_records(topology)
    breaks = chain_breaks(records)
    N = len(records)
    index = torch.full((N, 7, 4), -1, dtype=torch.long, device="cpu")  # a host table, built once
    for i, rec in enumerate(records):
        a = rec.atoms
        prev = records[i - 1].atoms if i > 0 and not breaks[i] else {}
        nxt = records[i + 1].atoms if i + 1 < N and not breaks[i + 1] else {}
        rows = [
            (prev.get("C"), a.get("N"), a.get("CA"), a.get("C")),
            (a.get("N"), a.get("CA"), a.get("C"), nxt.get("N")),
            (prev.get("CA"), prev.get("C"), a.get("N"), a.get("CA")),
        ]
        rows += [tuple(a.get(x) for x in chi) for chi in CHI_ATOMS.get(canonical_residue_name(rec.name), ())]
        for j, row in enumerate(rows):
            if all(x is not None for x in row):
                index[i, j] = torch.tensor(row, device="cpu")
    return index, (index >= 0).all(dim=-1)


def as_positions(positions, n_atoms: int | None = None) -> torch.Tensor:
    """Positions as a float32 tensor ``[T, n_atoms, 3]`` in nm.

    Accepts a torch tensor or numpy array ``[T, n_atoms, 3]`` or ``[n_atoms, 3]`` (taken as T = 1) in nm,
    an OpenMM ``Quantity``, or an ``mdtraj.Trajectory``.
    """
    if hasattr(positions, "xyz") and hasattr(positions, "topology"):  # mdtraj.Trajectory
        positions = positions.xyz
    if u.is_quantity(positions):
        positions = np.asarray(positions.value_in_unit(u.nanometer), dtype=np.float32)
    pos = torch.as_tensor(np.asarray(positions) if not torch.is_tensor(positions) else positions)
    pos = pos.to(torch.float32)
    if pos.ndim == 2:
        pos = pos[None]
    if pos.ndim != 3 or pos.shape[-1] != 3:
        raise StarMDError(f"positions must have shape [T, n_atoms, 3] (nm), got {tuple(pos.shape)}")
    if n_atoms is not None and pos.shape[1] != n_atoms:
        raise StarMDError(
            f"positions have {pos.shape[1]} atoms but the topology has {n_atoms}: use matching files"
        )
    return pos


def _gather(pos: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``pos[:, index]``, zeros where index is -1; ``pos`` ``[T, A, 3]``, result ``[T, *index.shape, 3]``."""
    picked = pos[:, index.clamp_min(0).reshape(-1)].reshape(pos.shape[0], *index.shape, 3)
    return picked * (index >= 0)[None, ..., None]


def frames_from_positions(positions, topology) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Residue frames of a trajectory.

    Parameters
    ----------
    positions
        ``[T, n_atoms, 3]`` nm (numpy, torch, Quantity or mdtraj.Trajectory; see :func:`as_positions`).
    topology
        OpenMM or mdtraj topology of those atoms.

    Returns
    -------
    rot, trans, residue_mask
        Rotations ``[T, N, 3, 3]`` float32, translations (CA) ``[T, N, 3]`` nm, BoolTensor ``[N]``.
        Masked residues get the identity and a zero translation.
    """
    pos = as_positions(positions, _n_atoms(topology))
    index, residue_mask = backbone_atom_indices(topology)
    atoms = _gather(pos, index[:, :3])  # [T, N, 3, 3]
    rot, trans = frames_from_three_points(atoms[..., 0, :], atoms[..., 1, :], atoms[..., 2, :])
    T, N = trans.shape[:2]
    rot = torch.where(residue_mask[None, :, None, None], rot, identity_rotations((T, N)))
    trans = trans * residue_mask[None, :, None]
    return rot, trans, residue_mask


def backbone_local_coordinates(positions, topology) -> torch.Tensor:
    """Exact N, CA, C coordinates in each residue's own frame, ``[T, N, 3, 3]`` nm.

    Feeding these to :func:`backbone_from_frames` (``local=``) reproduces the input backbone; the
    default there is the ideal geometry :data:`IDEAL_LOCAL_BACKBONE`.
    """
    pos = as_positions(positions, _n_atoms(topology))
    index, residue_mask = backbone_atom_indices(topology)
    atoms = _gather(pos, index[:, :3])
    rot, trans, _ = frames_from_positions(pos, topology)
    local = torch.einsum("tnji,tnaj->tnai", rot, atoms - trans[:, :, None, :])
    return local * residue_mask[None, :, None, None]


def dihedral(p0: torch.Tensor, p1: torch.Tensor, p2: torch.Tensor, p3: torch.Tensor) -> torch.Tensor:
    """Dihedral angle ``[...]`` (rad, in (-π, π], IUPAC sign) of points ``[..., 3]``; float64 inside."""
    p0, p1, p2, p3 = (p.double() for p in (p0, p1, p2, p3))
    b1, b2, b3 = p1 - p0, p2 - p1, p3 - p2
    n1 = torch.linalg.cross(b1, b2, dim=-1)
    n2 = torch.linalg.cross(b2, b3, dim=-1)
    y = torch.linalg.norm(b2, dim=-1) * (b1 * n2).sum(-1)
    x = (n1 * n2).sum(-1)
    return torch.atan2(y, x)


def torsions(positions, topology) -> tuple[torch.Tensor, torch.Tensor]:
    """Backbone and side-chain torsions.

    Parameters
    ----------
    positions
        ``[T, n_atoms, 3]`` nm (see :func:`as_positions`).
    topology
        OpenMM or mdtraj topology.

    Returns
    -------
    angles, mask
        ``[T, N, 7]`` float32 rad (φ, ψ, ω, χ1–χ4; 0 where undefined) and BoolTensor ``[N, 7]``.
    """
    pos = as_positions(positions, _n_atoms(topology))
    index, mask = torsion_atom_indices(topology)
    atoms = _gather(pos, index)  # [T, N, 7, 4, 3]
    angles = dihedral(atoms[..., 0, :], atoms[..., 1, :], atoms[..., 2, :], atoms[..., 3, :])
    return (angles * mask[None]).to(torch.float32), mask


def _oxygen_from_dihedral(rot: torch.Tensor, trans: torch.Tensor, c: torch.Tensor, delta: torch.Tensor):
    """O at bond C=O, angle CA-C-O and dihedral N-CA-C-O = ``delta`` [T, N] (rad); result [T, N, 3] nm."""
    # In the frame, CA->C is e1 and N lies at +e2: a dihedral δ about e1 points along cos δ e2 + sin δ e3.
    local_dir = torch.stack(
        [
            torch.full_like(delta, -math.cos(_CA_C_O)),
            math.sin(math.pi - _CA_C_O) * torch.cos(delta),
            math.sin(math.pi - _CA_C_O) * torch.sin(delta),
        ],
        dim=-1,
    )
    return c + _C_O * torch.einsum("...ij,...j->...i", rot, local_dir)


def backbone_from_frames(
    rot: torch.Tensor,
    trans: torch.Tensor,
    psi: torch.Tensor | None = None,
    residue_mask: torch.Tensor | None = None,
    chain_break: torch.Tensor | None = None,
    local: torch.Tensor | None = None,
) -> torch.Tensor:
    """Backbone N, CA, C, O positions from residue frames.

    Parameters
    ----------
    rot, trans
        Frames ``[T, N, 3, 3]`` and ``[T, N, 3]`` nm.
    psi
        Optional ψ ``[T, N]`` rad; if given, O is placed at dihedral N-CA-C-O = ψ + π.
    residue_mask
        Optional BoolTensor ``[N]``; masked residues get all-zero atoms and are not used as neighbours.
    chain_break
        Optional BoolTensor ``[N]`` (True: residue i does not follow i-1); without it consecutive
        residues are taken to be bonded.
    local
        Optional N, CA, C coordinates in the frames, ``[N, 3, 3]`` or ``[T, N, 3, 3]`` nm (e.g. from
        :func:`backbone_local_coordinates`); default the ideal geometry.

    Returns
    -------
    Tensor
        ``[T, N, 4, 3]`` nm (N, CA, C, O). Without ``psi``, O lies in the plane CA_i, C_i, N_{i+1}
        bisecting the external angle at C; a residue with no bonded successor (C-terminus, chain
        break) gets the ideal fallback: right C=O length and CA-C-O angle, dihedral N-CA-C-O = 180°
        (its position is then only a guess: the terminal carboxylate rotates freely).

    Notes
    -----
    A frame carries no bond lengths or angles: with the default ideal geometry N and C deviate from
    an MD structure by ~0.01 nm (bond-angle fluctuations); with ``local`` they are exact.
    """
    T, N = trans.shape[:2]
    if local is None:
        local = IDEAL_LOCAL_BACKBONE.to(trans.device, trans.dtype)
    local = local.to(trans.dtype).expand(T, N, 3, 3)
    ncac = apply(rot[:, :, None], trans[:, :, None], local)  # [T, N, 3, 3]
    mask = torch.ones(N, dtype=torch.bool, device=trans.device) if residue_mask is None else residue_mask
    if psi is not None:
        oxygen = _oxygen_from_dihedral(rot, trans, ncac[..., 2, :], psi + math.pi)
    else:
        has_next = torch.zeros(N, dtype=torch.bool, device=trans.device)
        if N > 1:
            has_next[:-1] = mask[1:] & mask[:-1]
            if chain_break is not None:
                has_next[:-1] &= ~chain_break[1:].to(trans.device)
        c, ca = ncac[..., 2, :], ncac[..., 1, :]
        n_next = torch.cat([ncac[:, 1:, 0, :], ncac[:, -1:, 0, :]], dim=1)
        to_ca = torch.nn.functional.normalize(ca - c, dim=-1)
        to_n = torch.nn.functional.normalize(n_next - c, dim=-1)
        bisect = -torch.nn.functional.normalize(to_ca + to_n, dim=-1)
        from_next = c + _C_O * bisect
        trans_psi = torch.full((T, N), math.pi, dtype=trans.dtype, device=trans.device)
        fallback = _oxygen_from_dihedral(rot, trans, c, trans_psi)
        oxygen = torch.where(has_next[None, :, None], from_next, fallback)
    out = torch.cat([ncac, oxygen[:, :, None, :]], dim=2)
    return out * mask[None, :, None, None]
