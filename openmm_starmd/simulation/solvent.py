"""The protein and its solvent in one system: who the model moves, who stays, and who is in the way.

A jump moves the protein's residues (:mod:`.reconstruct`); water and ions (:func:`~openmm_starmd.data.
featurize.is_solvent_residue`) stay where they are. :class:`SolventLayout` splits one topology into the
protein (the atoms the model, the atom map and the guards see, through a protein-only Topology) and
solvent molecules, and puts a mapped protein back among the solvent: solvent molecules whose heavy atom
now sits inside the protein (minimum-image distance to a protein heavy atom below
``RelaxSettings.solvent_overlap_nm``) are moved, whole and rigidly, into the space the protein has just
left (:meth:`SolventLayout.merge`), so that the relaxation starts from a filled, non-overlapping box.

Positions are always the Context's unwrapped ones (``enforcePeriodicBox=False``): every molecule is
whole, the protein's frames are computed on an unsplit chain, and distances between the protein and the
solvent take the minimum image of the periodic box.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as u

from openmm_starmd.data.featurize import UNKNOWN_RESIDUE, has_water, is_solvent_residue, residue_type_index
from openmm_starmd.errors import StarMDError

CAP_NAMES = frozenset({"ACE", "NME", "NH2", "NMA"})
_CHUNK = 2048  # solvent atoms per distance block: bounds memory at chunk × protein heavy atoms


def minimum_image(delta: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Shortest periodic images of difference vectors, as OpenMM takes them for a reduced box.

    Parameters
    ----------
    delta
        ``[..., 3]`` differences, nm.
    box
        ``[3, 3]`` box vectors as rows (a, b, c), nm, in OpenMM's reduced form (a along x, b in xy).

    Returns
    -------
    numpy.ndarray
        ``[..., 3]`` nm.
    """
    d = np.array(delta, dtype=np.float64, copy=True)
    for axis in (2, 1, 0):
        d -= np.round(d[..., axis] / box[axis, axis])[..., None] * box[axis]
    return d


def closest_distances(points: np.ndarray, others: np.ndarray, box: np.ndarray | None) -> np.ndarray:
    """For every point, the minimum-image distance to the nearest of ``others``.

    Parameters
    ----------
    points
        ``[P, 3]`` nm.
    others
        ``[Q, 3]`` nm (Q >= 1).
    box
        ``[3, 3]`` periodic box (rows, nm), or None for plain distances.

    Returns
    -------
    numpy.ndarray
        ``[P]`` nm.
    """
    out = np.empty(len(points), dtype=np.float64)
    for start in range(0, len(points), _CHUNK):
        delta = points[start:start + _CHUNK, None, :] - others[None, :, :]
        if box is not None:
            delta = minimum_image(delta, box)
        out[start:start + _CHUNK] = np.sqrt((delta * delta).sum(-1)).min(axis=1)
    return out


def box_of(state: openmm.State) -> np.ndarray:
    """``[3, 3]`` periodic box of a State, rows a, b, c, nm."""
    return np.asarray(state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(u.nanometer), dtype=np.float64)


@dataclass
class MergeReport:
    """What :meth:`SolventLayout.merge` did (or many merges summed): solvent molecules found inside the
    protein, and moved."""

    overlapping: int = 0
    moved: int = 0

    def add(self, other: MergeReport) -> None:
        self.overlapping += other.overlapping
        self.moved += other.moved


class SolventLayout:
    """Protein and solvent atoms of one topology and System.

    Parameters
    ----------
    topology
        The simulated topology: protein (standard residues and caps), optionally water and monatomic ions.
    system
        Its System: water needs a periodic one (PME or another cutoff method with a box).

    Attributes
    ----------
    protein_atoms
        ``[n_protein]`` indices of the protein's atoms in the full system, in topology order.
    protein_topology
        A Topology of those atoms only (what the model, the atom map and the guards see).
    solvated
        Whether there is any solvent (water or ions); without it the layout is the identity.
    periodic
        Whether the System uses periodic boundary conditions.

    Raises
    ------
    StarMDError
        Water in a non-periodic System; or, in a solvated or periodic system, a residue that is neither
        protein nor solvent (a ligand), which the jump could not move.
    """

    def __init__(self, topology: app.Topology, system: openmm.System) -> None:
        if topology.getNumAtoms() != system.getNumParticles():
            raise StarMDError(f"the topology has {topology.getNumAtoms()} atoms, the System "
                              f"{system.getNumParticles()} particles: build the System from this topology")
        self.periodic = bool(system.usesPeriodicBoundaryConditions())
        residues = list(topology.residues())
        solvent = [is_solvent_residue(res.name, len(list(res.atoms()))) for res in residues]
        if has_water(topology) and not self.periodic:
            raise StarMDError("the topology holds water but the System has no periodic box: build it with PME "
                              "(--forcefield explicit) or remove the water (starmd prepare) for implicit solvent")
        if self.periodic or any(solvent):
            ligands = sorted({res.name for res, s in zip(residues, solvent, strict=True) if not s
                              and residue_type_index(res.name) == UNKNOWN_RESIDUE and res.name not in CAP_NAMES})
            if ligands:
                raise StarMDError(f"non-protein residues {', '.join(ligands)} in a solvated/periodic system: the "
                                  "jump cannot move them; remove them (starmd prepare drops ligands)")
        self.solvated = any(solvent)
        self.num_atoms = topology.getNumAtoms()
        keep = [a.index for res, s in zip(residues, solvent, strict=True) if not s for a in res.atoms()]
        self.protein_atoms = np.asarray(keep, dtype=np.int64)
        if not self.solvated:
            self.protein_topology = topology
        else:
            modeller = app.Modeller(topology, np.zeros((self.num_atoms, 3)) * u.nanometer)
            modeller.delete([res for res, s in zip(residues, solvent, strict=True) if s])
            self.protein_topology = modeller.topology
            self.protein_topology.setPeriodicBoxVectors(None)
        heavy = np.array([a.element is not None and a.element.symbol != "H" for a in topology.atoms()])
        self.protein_heavy = self.protein_atoms[heavy[self.protein_atoms]]
        # Solvent molecules: their atoms, and the heavy atom (water O, the ion) that stands for each.
        self.molecules = [np.array([a.index for a in res.atoms()], dtype=np.int64)
                          for res, s in zip(residues, solvent, strict=True) if s]
        self.molecule_heavy = np.array([m[heavy[m]][0] if heavy[m].any() else m[0] for m in self.molecules],
                                       dtype=np.int64)

    def protein(self, positions: np.ndarray) -> np.ndarray:
        """The protein's atoms of full positions ``[n_atoms, 3]`` → ``[n_protein, 3]`` (the same array
        when there is no solvent)."""
        return positions if not self.solvated else positions[self.protein_atoms]

    def solvent_distances(self, positions: np.ndarray, box: np.ndarray | None) -> np.ndarray:
        """``[n_molecules]`` minimum-image distance of each solvent molecule's heavy atom to the nearest
        protein heavy atom, nm (``box`` None: plain distances)."""
        if not len(self.molecules):
            return np.zeros(0)
        return closest_distances(positions[self.molecule_heavy], positions[self.protein_heavy],
                                 box if self.periodic else None)

    def merge(self, positions: np.ndarray, protein_target: np.ndarray, box: np.ndarray | None,
              overlap_nm: float, relocate: bool = True) -> tuple[np.ndarray, MergeReport]:
        """Full positions with the protein at ``protein_target`` and the solvent where it was, except that
        solvent molecules now inside the protein are moved into the space the protein left.

        Parameters
        ----------
        positions
            ``[n_atoms, 3]`` nm before the jump (unwrapped, molecules whole).
        protein_target
            ``[n_protein, 3]`` nm, the mapped jump target.
        box
            ``[3, 3]`` periodic box (rows, nm), or None.
        overlap_nm
            A solvent molecule whose heavy atom is closer than this to a protein heavy atom is in the way.
        relocate
            Move those molecules (else only count them).

        Returns
        -------
        target, report
            ``[n_atoms, 3]`` nm, and what was found and moved.
        """
        if not self.solvated:
            return protein_target, MergeReport()
        target = np.array(positions, dtype=np.float64, copy=True)
        target[self.protein_atoms] = protein_target
        box = box if self.periodic else None
        distance = self.solvent_distances(target, box)
        inside = np.flatnonzero(distance < overlap_nm)
        report = MergeReport(overlapping=len(inside))
        if not (relocate and len(inside)):
            return target, report
        # Sites: where the protein's heavy atoms were, if the protein has left them and no solvent is there.
        sites = np.asarray(positions, dtype=np.float64)[self.protein_heavy]
        protein_now = target[self.protein_heavy]
        clearance = closest_distances(sites, protein_now, box)
        open_sites = clearance >= overlap_nm + 0.05
        staying = np.setdiff1d(np.arange(len(self.molecules)), inside)
        if len(staying):
            open_sites &= closest_distances(sites, target[self.molecule_heavy[staying]], box) >= overlap_nm + 0.03
        for k in inside[np.argsort(distance[inside])]:  # deepest inside first
            candidates = np.flatnonzero(open_sites)
            if not len(candidates):
                break
            site = sites[candidates[np.argmax(clearance[candidates])]]
            atoms = self.molecules[k]
            target[atoms] += site - target[self.molecule_heavy[k]]
            report.moved += 1
            open_sites &= closest_distances(sites, site[None], box) >= overlap_nm + 0.03
        return target, report
