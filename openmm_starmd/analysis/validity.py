"""Structural validity per frame: CA–CA bond breaks, CA clashes and heavy-atom clashes.

:func:`frame_validity` works on any trajectory (one frame is fine), so the hybrid simulator can
screen a proposed structure with the same thresholds used in validation. Distances are plain
Euclidean (periodic=False): implicit-solvent trajectories may carry a meaningless box.

Rates are reported two ways: absolute (share of frames with at least one event under the fixed
thresholds below) and relative to the reference (the STAR-MD convention): a frame fails when its
worst value is beyond the reference's own 99th percentile of that value (longest CA–CA bond, or
shortest non-bonded distance, i.e. the 1st percentile). The reference fails 1 % by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

import mdtraj as md
import numpy as np
from scipy import sparse

CA_BOND_BREAK_NM = 0.42     # consecutive CA–CA longer than this is a broken chain (ideal 0.38 nm)
CA_CLASH_NM = 0.30          # non-consecutive CA–CA closer than this is a clash
HEAVY_CLASH_NM = 0.22       # heavy atoms > 3 bonds apart closer than this overlap severely
REFERENCE_PERCENTILE = 99.0
_CHUNK_FRAMES = 500         # frames per distance batch, bounds memory for long trajectories


@dataclass
class FrameValidity:
    """Per-frame validity of a trajectory; every array has shape (T,).

    Attributes
    ----------
    ca_breaks, ca_clashes, heavy_clashes
        Counts of broken CA–CA bonds, CA clashes and heavy-atom clashes in each frame.
    max_ca_bond_nm
        Longest consecutive CA–CA distance (nm; 0 with fewer than 2 residues).
    min_ca_nonbonded_nm, min_heavy_nonbonded_nm
        Shortest non-consecutive CA–CA and non-excluded heavy-atom distance (nm; inf if none).
    """

    ca_breaks: np.ndarray
    ca_clashes: np.ndarray
    heavy_clashes: np.ndarray
    max_ca_bond_nm: np.ndarray
    min_ca_nonbonded_nm: np.ndarray
    min_heavy_nonbonded_nm: np.ndarray

    @property
    def valid(self) -> np.ndarray:
        """(T,) bool: no break and no clash of either kind."""
        return (self.ca_breaks == 0) & (self.ca_clashes == 0) & (self.heavy_clashes == 0)


def ca_pairs(top: md.Topology) -> tuple[np.ndarray, np.ndarray]:
    """(bonded, nonbonded) CA index pairs; bonded = consecutive residues of one chain, no numbering gap."""
    cas = [(res, atom.index) for res in top.residues for atom in res.atoms if atom.name == "CA"]
    bonded, nonbonded = [], []
    for i in range(len(cas)):
        for j in range(i + 1, len(cas)):
            (ri, ai), (rj, aj) = cas[i], cas[j]
            consecutive = (j == i + 1 and ri.chain.index == rj.chain.index
                           and rj.resSeq - ri.resSeq in (0, 1))
            (bonded if consecutive else nonbonded).append((ai, aj))
    return np.array(bonded, dtype=int).reshape(-1, 2), np.array(nonbonded, dtype=int).reshape(-1, 2)


def within_three_bonds(n_atoms: int, bonds: np.ndarray) -> sparse.csr_matrix:
    """``[n_atoms, n_atoms]`` sparse boolean matrix: atoms i and j are at most three bonds apart (1-2, 1-3,
    1-4 neighbours, and i itself), from ``bonds`` ``[n_bonds, 2]`` atom index pairs."""
    bonds = np.asarray(bonds, dtype=np.int64).reshape(-1, 2)
    adjacency = sparse.coo_matrix((np.ones(len(bonds)), (bonds[:, 0], bonds[:, 1])),
                                  shape=(n_atoms, n_atoms)).tocsr()
    step = sparse.identity(n_atoms, format="csr") + adjacency + adjacency.T
    return (step @ step @ step) > 0


def heavy_pairs(top: md.Topology) -> np.ndarray:
    """Heavy-atom pairs more than three bonds apart (or in residues two apart if there are no bonds)."""
    heavy = np.array([a.index for a in top.atoms if a.element is not None and a.element.symbol != "H"])
    n = top.n_atoms
    if top.n_bonds == 0:
        resid = np.array([a.residue.index for a in top.atoms])
        i, j = np.triu_indices(len(heavy), k=1)
        keep = np.abs(resid[heavy[i]] - resid[heavy[j]]) > 1
        return np.column_stack([heavy[i][keep], heavy[j][keep]])
    bonds = np.array([(b.atom1.index, b.atom2.index) for b in top.bonds])
    within_three = within_three_bonds(n, bonds)[heavy][:, heavy].toarray()
    i, j = np.triu_indices(len(heavy), k=1)
    keep = ~within_three[i, j]
    return np.column_stack([heavy[i][keep], heavy[j][keep]])


def _chunked_distances(traj: md.Trajectory, pairs: np.ndarray) -> list[np.ndarray]:
    return [md.compute_distances(traj[s:s + _CHUNK_FRAMES], pairs, periodic=False)
            for s in range(0, traj.n_frames, _CHUNK_FRAMES)]


def frame_validity(traj: md.Trajectory) -> FrameValidity:
    """Count bond breaks and clashes in every frame of ``traj``.

    Parameters
    ----------
    traj
        Any protein trajectory (nm); backbone-only or all-atom, one frame or many.

    Returns
    -------
    FrameValidity
        Per-frame counts and extreme distances; ``.valid`` gives (T,) booleans.
    """
    T = traj.n_frames
    bonded, nonbonded = ca_pairs(traj.topology)
    heavy = heavy_pairs(traj.topology)
    out = {}
    for name, pairs, limit, longest in (("bond", bonded, CA_BOND_BREAK_NM, True),
                                        ("ca", nonbonded, CA_CLASH_NM, False),
                                        ("heavy", heavy, HEAVY_CLASH_NM, False)):
        if len(pairs) == 0:
            out[name] = (np.zeros(T, dtype=int), np.full(T, 0.0 if longest else np.inf))
            continue
        counts, extreme = [], []
        for d in _chunked_distances(traj, pairs):
            counts.append(((d > limit) if longest else (d < limit)).sum(axis=1))
            extreme.append(d.max(axis=1) if longest else d.min(axis=1))
        out[name] = (np.concatenate(counts), np.concatenate(extreme).astype(np.float64))
    # A frame with NaN/inf coordinates compares False everywhere; it must count as broken, not valid.
    broken = ~np.isfinite(traj.xyz).all(axis=(1, 2))
    if broken.any():
        out["bond"][0][broken] = np.maximum(out["bond"][0][broken], 1)
        out["bond"][1][broken] = np.inf
    return FrameValidity(ca_breaks=out["bond"][0], ca_clashes=out["ca"][0], heavy_clashes=out["heavy"][0],
                         max_ca_bond_nm=out["bond"][1], min_ca_nonbonded_nm=out["ca"][1],
                         min_heavy_nonbonded_nm=out["heavy"][1])


@dataclass
class ValidityReference:
    """Reference percentiles for relative validity rates (nm): the longest CA–CA bond's 99th
    percentile and the shortest non-bonded CA and heavy-atom distances' 1st percentile, plus the
    reference's own absolute rates."""

    bond_limit_nm: float
    ca_limit_nm: float
    heavy_limit_nm: float
    absolute: dict[str, float]


def _absolute_rates(v: FrameValidity) -> dict[str, float]:
    return {
        "break_rate": float(np.mean(v.ca_breaks > 0)),
        "ca_clash_rate": float(np.mean(v.ca_clashes > 0)),
        "heavy_clash_rate": float(np.mean(v.heavy_clashes > 0)),
        "invalid_rate": float(np.mean(~v.valid)),
    }


def fit_validity_reference(v: FrameValidity) -> ValidityReference:
    """Percentile limits from the reference's per-frame validity (see module docstring)."""
    low = 100.0 - REFERENCE_PERCENTILE
    finite = {k: x[np.isfinite(x)] for k, x in (("ca", v.min_ca_nonbonded_nm),
                                                 ("heavy", v.min_heavy_nonbonded_nm))}
    return ValidityReference(
        bond_limit_nm=float(np.percentile(v.max_ca_bond_nm, REFERENCE_PERCENTILE)),
        ca_limit_nm=float(np.percentile(finite["ca"], low)) if len(finite["ca"]) else 0.0,
        heavy_limit_nm=float(np.percentile(finite["heavy"], low)) if len(finite["heavy"]) else 0.0,
        absolute=_absolute_rates(v),
    )


def validity_rates(v: FrameValidity, ref: ValidityReference | None = None) -> dict[str, float]:
    """Share of frames with at least one event, absolute and (with ``ref``) reference-relative.

    Returns
    -------
    dict
        ``break_rate``, ``ca_clash_rate``, ``heavy_clash_rate``, ``invalid_rate`` (fixed thresholds)
        and, with ``ref``, ``break_rate_rel``, ``ca_clash_rate_rel``, ``heavy_clash_rate_rel``
        (frames beyond the reference's 99th-percentile extremes).
    """
    out = _absolute_rates(v)
    if ref is not None:
        out["break_rate_rel"] = float(np.mean(v.max_ca_bond_nm > ref.bond_limit_nm))
        out["ca_clash_rate_rel"] = float(np.mean(v.min_ca_nonbonded_nm < ref.ca_limit_nm))
        out["heavy_clash_rate_rel"] = float(np.mean(v.min_heavy_nonbonded_nm < ref.heavy_limit_nm))
    return out
