"""From residue frames back to all atoms: move every atom rigidly with its residue's frame change.

A jump changes each residue's frame from ``(R_old, t_old)`` to ``(R_new, t_new)``. Every atom of the
residue (side chain, hydrogens, terminal groups) keeps its local coordinates, so the all-atom target
is ``x_new = R_new R_oldᵀ (x - t_old) + t_new``. Only the carbonyl O is then re-placed: it belongs to
the peptide plane shared with the next residue, whose frame moved differently, so it is put where
:func:`~openmm_starmd.frames.protein.backbone_from_frames` puts it (outer bisector of CA–C–N).
Relaxation therefore starts close to a valid structure.
Residues without a backbone frame (caps, ligands of an implicit-solvent system) follow the nearest framed
residue. Solvent (water, ions) is not part of the atom map at all: the simulation maps a protein-only view
and :class:`~openmm_starmd.simulation.solvent.SolventLayout` leaves the solvent where it is.
"""

from __future__ import annotations

import numpy as np
import openmm
import openmm.app as app
import torch

from openmm_starmd.data.featurize import has_water
from openmm_starmd.errors import StarMDError
from openmm_starmd.frames import rigid
from openmm_starmd.frames.protein import backbone_atom_indices, backbone_from_frames, chain_breaks, residue_records


def require_implicit_solvent(topology: app.Topology, system: openmm.System) -> None:
    """Refuse explicit-water or periodic systems where only implicit solvent is supported (the learned-prior
    force, which featurizes the whole topology).

    Raises
    ------
    StarMDError
        If the topology holds water or the System is periodic.
    """
    if has_water(topology) or system.usesPeriodicBoundaryConditions():
        raise StarMDError("explicit-water / periodic systems are not supported by the learned-prior force "
                          "(RelaxSettings.starmd_force_weight): set it to 0, or use an implicit-solvent preset")


class AtomMap:
    """Which frame moves which atom, and where the backbone atoms are, for one topology.

    Parameters
    ----------
    topology
        All-atom protein topology.

    Attributes
    ----------
    backbone
        ``[N, 4]`` atom indices of N, CA, C, O per residue (-1 where missing).
    residue_mask
        ``[N]`` bool: residue has a frame (N, CA and C present).
    atom_frame
        ``[n_atoms]`` index of the residue whose frame moves each atom.
    restrained_atoms
        ``[M]`` backbone heavy atoms (N, CA, C, O) of framed residues, restrained during relaxation.
    carbonyl
        ``[P, 2]`` (residue, O atom) of peptide bonds whose O is re-placed.
    """

    def __init__(self, topology: app.Topology) -> None:
        index, mask = backbone_atom_indices(topology)
        self.backbone = np.asarray(index, dtype=np.int64)
        self.residue_mask = np.asarray(mask, dtype=bool)
        if not self.residue_mask.any():
            raise StarMDError("the topology has no residue with N, CA and C atoms: give a protein")
        framed = np.flatnonzero(self.residue_mask)
        residue_of_atom = np.array([atom.residue.index for atom in topology.atoms()], dtype=np.int64)
        # Nearest framed residue for every residue (itself when framed).
        nearest = framed[np.abs(np.arange(len(self.residue_mask))[:, None] - framed[None, :]).argmin(axis=1)]
        self.atom_frame = nearest[residue_of_atom]
        bb = self.backbone[framed]
        self.restrained_atoms = np.sort(bb[bb >= 0])
        self.mask_tensor = torch.as_tensor(self.residue_mask)
        self.chain_break = chain_breaks(residue_records(topology))
        # Only an O whose C is really bonded to the next residue's N is re-placed (C-termini stay rigid).
        bonds = {frozenset((a.index, b.index)) for a, b in topology.bonds()}
        carbonyl = []
        for i in range(len(self.residue_mask) - 1):
            c, o, n_next = self.backbone[i, 2], self.backbone[i, 3], self.backbone[i + 1, 0]
            if (self.residue_mask[i] and self.residue_mask[i + 1] and o >= 0 and not self.chain_break[i + 1]
                    and frozenset((int(c), int(n_next))) in bonds):
                carbonyl.append((i, o))
        self.carbonyl = np.array(carbonyl, dtype=np.int64).reshape(-1, 2)

    @property
    def num_residues(self) -> int:
        return len(self.residue_mask)

    def frames(self, positions: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Residue frames of one structure.

        Parameters
        ----------
        positions
            ``[n_atoms, 3]`` nm.

        Returns
        -------
        rotations, translations
            ``[N, 3, 3]`` and ``[N, 3]`` (nm), float64; identity at the origin for unframed residues.
        """
        x = torch.as_tensor(np.asarray(positions, dtype=np.float64))
        idx = torch.as_tensor(np.where(self.backbone[:, :3] >= 0, self.backbone[:, :3], 0))
        rot, trans = rigid.frames_from_three_points(x[idx[:, 0]], x[idx[:, 1]], x[idx[:, 2]])
        mask = torch.as_tensor(self.residue_mask)
        rot = torch.where(mask[:, None, None], rot, torch.eye(3, dtype=rot.dtype))
        trans = torch.where(mask[:, None], trans, torch.zeros_like(trans))
        return rot, trans

    def move_atoms(
        self,
        positions: np.ndarray,
        old: tuple[torch.Tensor, torch.Tensor],
        new: tuple[torch.Tensor, torch.Tensor],
    ) -> np.ndarray:
        """All-atom positions after every residue moves from frame ``old`` to frame ``new``.

        Parameters
        ----------
        positions
            ``[n_atoms, 3]`` nm, consistent with ``old``.
        old, new
            ``(rotations [N, 3, 3], translations [N, 3] nm)``.

        Returns
        -------
        numpy.ndarray
            ``[n_atoms, 3]`` nm, float64, carbonyl O re-placed on the new peptide geometry.
        """
        x = torch.as_tensor(np.asarray(positions, dtype=np.float64))
        frame = torch.as_tensor(self.atom_frame)
        rot_old, trans_old = (t.double() for t in old)
        rot_new, trans_new = (t.double() for t in new)
        local = rigid.apply_inverse(rot_old[frame], trans_old[frame], x)
        moved = rigid.apply(rot_new[frame], trans_new[frame], local)
        if len(self.carbonyl):
            # N, CA, C in their own frames, so that backbone_from_frames rebuilds them exactly.
            ncac = torch.as_tensor(np.where(self.backbone[:, :3] >= 0, self.backbone[:, :3], 0))
            # float32: the frames module's working precision (O only; 1e-7 nm is far below relaxation noise).
            backbone = backbone_from_frames(rot_new[None].float(), trans_new[None].float(),
                                            residue_mask=self.mask_tensor, chain_break=self.chain_break,
                                            local=local[ncac][None].float())
            residue, oxygen = (torch.as_tensor(col) for col in self.carbonyl.T)
            moved[oxygen] = backbone[0, residue, 3].double()
        return moved.numpy()
