"""Loading trajectories and matching two atom sets by residue and atom name.

A generated trajectory may carry fewer atoms than the reference (a backbone-only model against an
all-atom MD run) or name residues differently (HIE vs HIS). Every metric compares like with like, so
both trajectories are cut down to the atoms they share, in the reference's order, and given one
common topology. Alignment (superposition) uses mdtraj's own routine on the CA atoms; no rotation
maths is written here.
"""

from __future__ import annotations

import os
from pathlib import Path

import mdtraj as md
import numpy as np

from openmm_starmd.errors import StarMDError

# Protonation / disulfide variants that name the same amino acid.
_RESIDUE_ALIASES = {
    "HID": "HIS", "HIE": "HIS", "HIP": "HIS", "HSD": "HIS", "HSE": "HIS", "HSP": "HIS",
    "CYX": "CYS", "CYM": "CYS", "ASH": "ASP", "GLH": "GLU", "LYN": "LYS",
}


def load_trajectory(path: str | os.PathLike, top: str | os.PathLike) -> md.Trajectory:
    """Load a trajectory file with its topology, turning every failure into a one-line StarMDError.

    Parameters
    ----------
    path
        Trajectory (xtc, dcd, pdb, ...). A PDB may be given with ``top`` equal to itself.
    top
        Topology file (PDB) whose atoms match the trajectory's, in order.

    Returns
    -------
    mdtraj.Trajectory
        Coordinates in nm. Any unit cell is dropped: these are implicit-solvent runs and a bogus box
        (e.g. a CRYST1 record) must never create minimum-image contacts.
    """
    for what, file in (("trajectory", path), ("topology", top)):
        if not Path(file).is_file():
            raise StarMDError(f"{what} file {file} not found: check the path")
    try:
        traj = md.load(str(path), top=str(top))
    except Exception as exc:  # mdtraj raises many types (ValueError, IOError, RuntimeError)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StarMDError(f"cannot read {path} with topology {top} ({first}): "
                          "check the files, or pass --gen-top if the generated trajectory has its own "
                          "topology") from None
    if traj.n_frames == 0:
        raise StarMDError(f"trajectory {path} has no frames: give a non-empty trajectory")
    bad = int(np.count_nonzero(~np.isfinite(traj.xyz).all(axis=(1, 2))))
    if bad:
        raise StarMDError(f"trajectory {path} has non-finite coordinates in {bad} frames: remove those frames")
    traj.unitcell_vectors = None
    return traj


def _residue_key(residue: md.core.topology.Residue) -> str:
    return _RESIDUE_ALIASES.get(residue.name, residue.name)


def _amino_acids(top: md.Topology) -> list:
    """Residues with a CA atom, in topology order (caps, water and ions have none)."""
    return [res for res in top.residues if any(atom.name == "CA" for atom in res.atoms)]


def match_atoms(sample_top: md.Topology, reference_top: md.Topology) -> tuple[np.ndarray, np.ndarray]:
    """Atom indices that pair up the two topologies by residue (in order) and atom name.

    Parameters
    ----------
    sample_top, reference_top
        Topologies of the generated and the reference trajectory.

    Returns
    -------
    (sample_idx, reference_idx)
        Two int arrays of equal length A; ``reference_idx`` is increasing and atom ``sample_idx[k]``
        of the sample is atom ``reference_idx[k]`` of the reference.

    Raises
    ------
    StarMDError
        If the amino-acid sequences differ or a residue shares no atom.
    """
    sample_res, ref_res = _amino_acids(sample_top), _amino_acids(reference_top)
    if len(sample_res) != len(ref_res):
        raise StarMDError(f"atom sets cannot be matched: generated topology has {len(sample_res)} residues "
                          f"with a CA, reference has {len(ref_res)}: give the matching topology (--gen-top)")
    sample_idx, ref_idx = [], []
    for s_res, r_res in zip(sample_res, ref_res, strict=True):
        if _residue_key(s_res) != _residue_key(r_res):
            raise StarMDError(f"atom sets cannot be matched: residue {s_res} of the generated topology "
                              f"faces {r_res} of the reference: give the matching topology (--gen-top)")
        by_name = {atom.name: atom.index for atom in s_res.atoms}
        for atom in r_res.atoms:
            if atom.name in by_name:
                ref_idx.append(atom.index)
                sample_idx.append(by_name[atom.name])
    if not ref_idx:
        raise StarMDError("atom sets cannot be matched: no atom name is shared: check the topologies")
    order = np.argsort(ref_idx)
    return np.asarray(sample_idx)[order], np.asarray(ref_idx)[order]


def matched_pair(sample: md.Trajectory, reference: md.Trajectory,
                 sample_idx: np.ndarray, reference_idx: np.ndarray) -> tuple[md.Trajectory, md.Trajectory]:
    """Cut both trajectories to the matched atoms and give them the reference's (sliced) topology.

    Returns
    -------
    (sample, reference)
        New trajectories with identical topologies (A atoms each), frames unchanged.
    """
    ref_cut = reference.atom_slice(reference_idx)
    # atom_slice would sort the sample's indices; build the sample directly in reference order.
    sample_cut = md.Trajectory(sample.xyz[:, sample_idx], ref_cut.topology, time=sample.time)
    return sample_cut, ref_cut


def ca_indices(top: md.Topology) -> np.ndarray:
    """Indices of the CA atoms of amino-acid residues, in order."""
    idx = top.select("name CA")
    if len(idx) < 3:
        raise StarMDError(f"the topology has {len(idx)} CA atoms: metrics need a protein of at least "
                          "3 residues")
    return idx


def mean_structure(trajs: list[md.Trajectory], atoms: np.ndarray | None,
                   iterations: int = 2) -> md.Trajectory:
    """Average structure of the given trajectories after superposition on ``atoms``.

    Starts from the first frame, superposes every frame, averages, and repeats ``iterations`` times
    so the result does not depend on the frame chosen first. ``atoms=None`` fits on all atoms.

    Returns
    -------
    mdtraj.Trajectory
        One frame with the topology of the inputs (all their atoms; nm).
    """
    target = trajs[0][0]
    for _ in range(iterations):
        total = np.zeros_like(target.xyz[0], dtype=np.float64)
        count = 0
        for traj in trajs:
            fitted = align(traj, target, atoms)
            total += fitted.xyz.sum(axis=0, dtype=np.float64)
            count += fitted.n_frames
        target = md.Trajectory((total / count)[None].astype(np.float32), trajs[0].topology)
    return target


def align(traj: md.Trajectory, target: md.Trajectory, atoms: np.ndarray | None) -> md.Trajectory:
    """A copy of ``traj`` superposed on frame 0 of ``target`` using ``atoms`` (None: all; mdtraj's fit)."""
    fitted = md.Trajectory(traj.xyz.copy(), traj.topology, time=traj.time)
    return fitted.superpose(target, 0, atom_indices=atoms, ref_atom_indices=atoms)
