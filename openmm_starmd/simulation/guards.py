"""Guards: decide whether a proposed or relaxed structure may enter the trajectory.

Two checkpoints per jump. Before OpenMM sees anything, :meth:`Guard.check_proposal` screens the
model output (finite, proper rotations) and the mapped all-atom target (finite, chain not torn far
beyond what a restrained minimisation can heal). After relaxation, :meth:`Guard.check_relaxed`
applies the validation thresholds of :mod:`openmm_starmd.analysis.validity` (CA–CA breaks, CA and
heavy-atom clashes) plus a finite energy and no CA chirality flip, all on the protein alone (its chain is
whole, so its own distances take no periodic image); in a solvated system :meth:`Guard.check_solvent`
then asks that no water or ion heavy atom sits closer than the heavy-atom clash distance to a protein
heavy atom, by minimum-image distance. Each check returns ``None`` when the structure passes, else the
name of the failed check (the rejection counters' keys).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import mdtraj as md
import numpy as np
import openmm.app as app
import torch

from openmm_starmd.analysis import validity
from openmm_starmd.errors import StarMDError

# Rejection reasons (keys of the rejection counters).
NONFINITE_PROPOSAL = "nonfinite_proposal"
BAD_ROTATION = "bad_rotation"
TORN_TARGET = "torn_target"
OPENMM_ERROR = "openmm_error"
NONFINITE_ENERGY = "nonfinite_energy"
CA_BREAK = "ca_break"
CA_CLASH = "ca_clash"
HEAVY_CLASH = "heavy_clash"
CHIRALITY_FLIP = "chirality_flip"
SOLVENT_CLASH = "solvent_clash"
REASONS = (NONFINITE_PROPOSAL, BAD_ROTATION, TORN_TARGET, OPENMM_ERROR, NONFINITE_ENERGY, CA_BREAK,
           CA_CLASH, HEAVY_CLASH, CHIRALITY_FLIP, SOLVENT_CLASH)


@dataclass(frozen=True)
class GuardSettings:
    """Limits of the guards and of the retries.

    Attributes
    ----------
    max_resamples
        Failed proposals re-sampled (new random numbers) per time step before Δt is halved.
    max_halvings
        How often Δt may be halved (each half jump guarded on its own) before the cycle fails.
    target_break_nm
        Longest bonded CA–CA distance of the mapped target that relaxation is asked to heal, nm.
    rotation_tolerance
        Largest ``|RᵀR - I|`` entry accepted from the model.
    """

    max_resamples: int = 3
    max_halvings: int = 2
    target_break_nm: float = 0.6
    rotation_tolerance: float = 1e-3

    def __post_init__(self) -> None:
        if self.max_resamples < 0 or self.max_halvings < 0:
            raise StarMDError("max_resamples and max_halvings must be >= 0")

    def describe(self) -> dict:
        """The settings, and the validity thresholds used after relaxation, as a JSON-ready dict."""
        return {**asdict(self), "ca_break_nm": validity.CA_BOND_BREAK_NM, "ca_clash_nm": validity.CA_CLASH_NM,
                "heavy_clash_nm": validity.HEAVY_CLASH_NM}


def chirality_signs(positions: np.ndarray, chiral: np.ndarray) -> np.ndarray:
    """Handedness of each CA: sign of the volume ``(N - CA) · ((C - CA) × (CB - CA))``.

    Parameters
    ----------
    positions
        ``[n_atoms, 3]`` nm.
    chiral
        ``[K, 4]`` atom indices (N, CA, C, CB).

    Returns
    -------
    numpy.ndarray
        ``[K]`` of +1 / -1 (L residues share one sign).
    """
    if len(chiral) == 0:
        return np.zeros(0, dtype=np.int8)
    n, ca, c, cb = (positions[chiral[:, k]] for k in range(4))
    volume = np.einsum("ki,ki->k", n - ca, np.cross(c - ca, cb - ca))
    return np.where(volume >= 0.0, 1, -1).astype(np.int8)


def chiral_centres(topology: app.Topology, backbone: np.ndarray) -> np.ndarray:
    """``[K, 4]`` (N, CA, C, CB) atom indices of every residue that has all four (i.e. not glycine)."""
    rows = []
    for residue, (n, ca, c, _o) in zip(topology.residues(), backbone, strict=True):
        cb = [atom.index for atom in residue.atoms() if atom.name == "CB"]
        if cb and min(n, ca, c) >= 0:
            rows.append((n, ca, c, cb[0]))
    return np.array(rows, dtype=np.int64).reshape(-1, 4)


class ValidityScorer:
    """:func:`openmm_starmd.analysis.validity.frame_validity`'s verdict for one structure, with the atom pairs
    of the topology found once (finding them costs ~100 ms for 2,000 atoms; scoring a frame ~2 ms).

    Same pairs, thresholds and comparisons as ``frame_validity`` (tests check they agree).
    """

    def __init__(self, md_topology: md.Topology) -> None:
        self.bonded, self.nonbonded = validity.ca_pairs(md_topology)
        self.heavy = validity.heavy_pairs(md_topology)

    @staticmethod
    def _distances(positions: np.ndarray, pairs: np.ndarray) -> np.ndarray:
        if len(pairs) == 0:
            return np.zeros(0, dtype=np.float32)
        x = np.asarray(positions, dtype=np.float32)  # frame_validity sees float32 trajectories
        return np.linalg.norm(x[pairs[:, 0]] - x[pairs[:, 1]], axis=-1)

    def failure(self, positions: np.ndarray) -> str | None:
        """``None`` when ``positions`` ``[n_atoms, 3]`` nm is valid, else the first failed check."""
        if not np.isfinite(positions).all():
            return CA_BREAK  # frame_validity counts a non-finite frame as broken
        if (self._distances(positions, self.bonded) > validity.CA_BOND_BREAK_NM).any():
            return CA_BREAK
        if (self._distances(positions, self.nonbonded) < validity.CA_CLASH_NM).any():
            return CA_CLASH
        if (self._distances(positions, self.heavy) < validity.HEAVY_CLASH_NM).any():
            return HEAVY_CLASH
        return None


class Guard:
    """The checks of one topology.

    Parameters
    ----------
    topology
        The simulated topology.
    backbone
        ``[N, 4]`` backbone atom indices (N, CA, C, O; -1 missing), from the atom map.
    settings
        Limits.
    """

    def __init__(self, topology: app.Topology, backbone: np.ndarray, settings: GuardSettings) -> None:
        self.settings = settings
        self.md_topology = md.Topology.from_openmm(topology)
        self.chiral = chiral_centres(topology, backbone)
        self.scorer = ValidityScorer(self.md_topology)
        # Consecutive residues of one chain only: a chain break is never a bond.
        self.bonded_ca = self.scorer.bonded
        self.reference_chirality: np.ndarray | None = None

    def set_reference(self, positions: np.ndarray) -> None:
        """Record the CA handedness of the starting structure ``[n_atoms, 3]`` nm."""
        self.reference_chirality = chirality_signs(positions, self.chiral)

    def check_proposal(self, rotations: torch.Tensor, translations: torch.Tensor) -> str | None:
        """Screen model output ``[N, 3, 3]``, ``[N, 3]`` (nm), on whatever device it is, before it is used."""
        if not (torch.isfinite(rotations).all() and torch.isfinite(translations).all()):
            return NONFINITE_PROPOSAL
        if rotations.numel() == 0:
            return None
        rot = rotations.double()
        eye = torch.eye(3, dtype=rot.dtype, device=rot.device)
        error = float((rot.transpose(-1, -2) @ rot - eye).abs().amax())
        det_ok = bool((torch.linalg.det(rot) > 0).all())
        if error > self.settings.rotation_tolerance or not det_ok:
            return BAD_ROTATION
        return None

    def raw_failure(self, positions: np.ndarray) -> str | None:
        """``None`` when a mapped proposal ``[n_atoms, 3]`` nm is valid by ``starmd validate``'s criteria, else
        the first failed check (:data:`CA_BREAK`, :data:`CA_CLASH` or :data:`HEAVY_CLASH`)."""
        return self.scorer.failure(positions)

    def check_target(self, positions: np.ndarray) -> str | None:
        """Screen the mapped all-atom target ``[n_atoms, 3]`` nm before OpenMM sees it."""
        if not np.isfinite(positions).all():
            return NONFINITE_PROPOSAL
        if len(self.bonded_ca):
            d = np.linalg.norm(positions[self.bonded_ca[:, 0]] - positions[self.bonded_ca[:, 1]], axis=-1)
            if d.max() > self.settings.target_break_nm:
                return TORN_TARGET
        return None

    @staticmethod
    def check_solvent(closest_nm: np.ndarray) -> str | None:
        """Check the minimum-image distances ``[n_molecules]`` (nm) from each solvent molecule's heavy atom to
        the nearest protein heavy atom of a relaxed structure."""
        if len(closest_nm) and float(np.min(closest_nm)) < validity.HEAVY_CLASH_NM:
            return SOLVENT_CLASH
        return None

    def check_relaxed(self, positions: np.ndarray, energy_kj_per_mol: float) -> str | None:
        """Check a relaxed structure ``[n_atoms, 3]`` nm and its potential energy (kJ/mol)."""
        if not (math.isfinite(energy_kj_per_mol) and np.isfinite(positions).all()):
            return NONFINITE_ENERGY
        failure = self.scorer.failure(positions)
        if failure is not None:
            return failure
        if self.reference_chirality is not None and len(self.chiral):
            if (chirality_signs(positions, self.chiral) != self.reference_chirality).any():
                return CHIRALITY_FLIP
        return None
