"""Side chains placed from drawn torsions: turn each χ bond so the dihedral takes the model's value.

The all-atom mapping (:mod:`.reconstruct`) moves every residue rigidly with its frame, which keeps each
side chain in the rotamer it started in. A model with a χ head (:mod:`openmm_starmd.model.chi`) draws
χ1–χ4 with every proposal; :class:`SideChains` then rotates, for χ1 → χ4 in turn, the atoms beyond the
bond atom2–atom3 of the torsion (hydrogens included) about that bond until the dihedral equals the draw.
Bond lengths and angles do not change, and turning χ1 carries the atoms of χ2–χ4 with it.

Torsions whose far side is not a tree hanging off atom3 inside its own residue are left rigid: proline
(the ring closes onto N), and any side chain bonded to another residue (a disulfide, a cross-link).

χ is drawn per residue, blind to the neighbours' draws, so two packed side chains (chignolin's Tyr2 and
Trp9) can be turned into each other. The model therefore gives M independent draws per proposal, and
:meth:`SideChains.place` sets the first, then turns every residue whose side chain overlaps a heavy atom
(closer than ``clash_nm``, more than three bonds apart) to its next draw, and so on through the M draws:
each residue ends on the first of its draws that fits among the others, a draw from the model's own χ
distribution. With ``chi_fallback_draws`` the M draws are followed by K more from the same head flattened
to a temperature T (:func:`~openmm_starmd.model.chi.draw_chi`): where the head is sure of a rotamer that the
drawn backbone leaves no room for, the M draws are all the same rotamer, and only the flattened ones reach
the others. A residue that still adds an overlap the rigidly moved structure did not have keeps its
rigidly moved side chain; the K fallback draws are tried after that, and only for side chains that then
still overlap, so wherever the M draws or the rigid side chain fit the placement is the same as without them.

A C-terminal carboxylate (O and OXT hanging off the last residue's C) is set by no frame: its turn about
CA–C is the last residue's ψ, which needs the next residue to be fixed. The mapping carries it rigidly from
the previous structure; where it then overlaps a heavy atom, :meth:`SideChains.place` turns it about CA–C to
the nearest of 15° steps where it overlaps nothing (before and after the side chains).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import openmm.app as app
import torch
from scipy.spatial import cKDTree

from openmm_starmd.analysis.validity import HEAVY_CLASH_NM, within_three_bonds
from openmm_starmd.errors import StarMDError
from openmm_starmd.frames.protein import backbone_atom_indices, dihedral, torsion_atom_indices
from openmm_starmd.frames.rigid import rotate_about_axis
from openmm_starmd.model.chi import CHI_OFFSET, NUM_CHI

__all__ = ["SideChains", "side_chains_for"]

# Turns (rad) tried for an overlapping C-terminal carboxylate, nearest first: ±15°, ±30°, ..., 180°.
_TERMINUS_TURNS = [float(np.deg2rad(sign * step)) for step in range(15, 181, 15) for sign in (1, -1)][:-1]


def _far_side(neighbours: list[set[int]], atom2: int, atom3: int) -> set[int]:
    """Atoms reachable from ``atom3`` without passing through ``atom2`` (``atom3`` itself left out)."""
    seen, stack = {atom2, atom3}, [atom3]
    while stack:
        for other in neighbours[stack.pop()]:
            if other not in seen:
                seen.add(other)
                stack.append(other)
    return seen - {atom2, atom3}


class SideChains:
    """Which atoms turn with each χ of each residue of one topology, and how to set the χ.

    Parameters
    ----------
    topology
        All-atom OpenMM topology with bonds (as :class:`openmm.app.PDBFile` and the force-field
        builders make them).

    Attributes
    ----------
    mask
        ``[N, 4]`` bool: χ1–χ4 of residue i can be set (defined, framed residue, far side a tree inside the
        residue).
    """

    def __init__(self, topology: app.Topology) -> None:
        quads, defined = torsion_atom_indices(topology)
        index, framed = backbone_atom_indices(topology)
        residue_of = [atom.residue.index for atom in topology.atoms()]
        neighbours: list[set[int]] = [set() for _ in residue_of]
        for a, b in topology.bonds():
            neighbours[a.index].add(b.index)
            neighbours[b.index].add(a.index)
        N = len(framed)
        self.num_atoms = len(residue_of)
        self._heavy = np.array([a.element is None or a.element.symbol != "H" for a in topology.atoms()])
        bonds = np.array([(a.index, b.index) for a, b in topology.bonds()], dtype=np.int64).reshape(-1, 2)
        self._near = within_three_bonds(self.num_atoms, bonds)  # pairs a clash check leaves out
        self._owner_residue = np.full(self.num_atoms, -1, dtype=np.int64)  # residue whose χ turns the atom
        self.mask = np.zeros((N, NUM_CHI), dtype=bool)
        # Per χk: residues (rows), their atom quadruples, and the moving atoms with the row they belong to.
        self._rows: list[torch.Tensor] = []
        self._quads: list[torch.Tensor] = []
        self._atoms: list[torch.Tensor] = []
        self._owner: list[torch.Tensor] = []
        # C-terminal groups turning about CA–C: (CA, C, heavy atoms that turn, all atoms that turn).
        self._termini: list[tuple[int, int, list[int], list[int]]] = []
        for i in range(N):
            if not framed[i]:
                continue
            ca, c = int(index[i, 1]), int(index[i, 2])
            moving = sorted(_far_side(neighbours, ca, c))
            heavy = [x for x in moving if self._heavy[x]]
            if heavy and ca not in moving and all(residue_of[x] == i for x in moving):
                self._termini.append((ca, c, heavy, moving))
        for k in range(NUM_CHI):
            rows, quad_rows, atoms, owner = [], [], [], []
            for i in range(N):
                if not (framed[i] and defined[i, CHI_OFFSET + k]):
                    continue
                a1, a2, a3, a4 = (int(x) for x in quads[i, CHI_OFFSET + k])
                moving = _far_side(neighbours, a2, a3)
                if a4 not in moving or a1 in moving or any(residue_of[x] != i for x in moving):
                    continue  # a ring through the backbone (proline), a cross-link, or missing bonds
                self.mask[i, k] = True
                self._owner_residue[sorted(moving)] = i
                atoms += sorted(moving)
                owner += [len(rows)] * len(moving)
                rows.append(i)
                quad_rows.append((a1, a2, a3, a4))
            self._rows.append(torch.tensor(rows, dtype=torch.long, device="cpu"))
            self._quads.append(torch.tensor(quad_rows, dtype=torch.long, device="cpu").reshape(-1, 4))
            self._atoms.append(torch.tensor(atoms, dtype=torch.long, device="cpu"))
            self._owner.append(torch.tensor(owner, dtype=torch.long, device="cpu"))

    @property
    def num_residues(self) -> int:
        return len(self.mask)

    def moving_atoms(self, residue: int, k: int) -> list[int]:
        """Atom indices that turn with χ(k+1) of ``residue`` (empty where that χ is left rigid)."""
        row = (self._rows[k] == residue).nonzero()
        if len(row) == 0:
            return []
        return self._atoms[k][self._owner[k] == int(row[0, 0])].tolist()

    def set_chi(self, positions: Any, chi: torch.Tensor | None, mask: Any = None) -> np.ndarray:
        """Positions with χ1–χ4 turned to ``chi``, in order χ1 → χ4.

        Parameters
        ----------
        positions
            ``[n_atoms, 3]`` nm (numpy or torch).
        chi
            ``[N, 4]`` target χ1–χ4, rad (any device; only entries where the mask holds are used); None
            leaves every side chain as it is.
        mask
            Optional ``[N, 4]`` bool: torsions to set (intersected with :attr:`mask`); default all settable.

        Returns
        -------
        numpy.ndarray
            ``[n_atoms, 3]`` nm, float64; atoms outside the moving sets are unchanged.
        """
        x = torch.as_tensor(np.asarray(positions, dtype=np.float64), device="cpu").clone()
        if chi is None:
            return x.numpy()
        target = torch.as_tensor(chi, device="cpu").to(torch.float64)
        if x.shape != (self.num_atoms, 3) or target.shape != (self.num_residues, NUM_CHI):
            raise StarMDError(f"set_chi expects positions [{self.num_atoms}, 3] nm and chi [{self.num_residues}, "
                              f"{NUM_CHI}] rad, got {tuple(x.shape)} and {tuple(target.shape)}")
        use = torch.as_tensor(self.mask, device="cpu")
        if mask is not None:
            use = use & torch.as_tensor(np.asarray(mask, dtype=bool), device="cpu")
        for k in range(NUM_CHI):
            rows, quad, atoms, owner = self._rows[k], self._quads[k], self._atoms[k], self._owner[k]
            if len(rows) == 0:
                continue
            p = x[quad]  # [M, 4, 3]
            current = dihedral(p[:, 0], p[:, 1], p[:, 2], p[:, 3])
            # Turning the far side by δ about atom2→atom3 (right-handed) adds δ to the dihedral.
            delta = torch.remainder(target[rows, k] - current + torch.pi, 2 * torch.pi) - torch.pi
            delta = torch.where(use[rows, k], delta, torch.zeros_like(delta))
            origin, axis = p[owner, 2], p[owner, 2] - p[owner, 1]
            x[atoms] = rotate_about_axis(x[atoms], origin, axis, delta[owner])
        return x.numpy()

    def _overlap_pairs(self, x: np.ndarray, clash_nm: float,
                       before: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Atom index pairs ``([P], [P])`` of heavy atoms closer than ``clash_nm`` in ``x`` ``[n_atoms, 3]`` nm and
        more than three bonds apart; with ``before``, only pairs that were not that close in ``before``."""
        heavy = np.flatnonzero(self._heavy)
        pairs = cKDTree(x[heavy]).query_pairs(clash_nm, output_type="ndarray")
        a, b = heavy[pairs[:, 0]], heavy[pairs[:, 1]]
        if before is not None:
            # bonded neighbours were as close before, so this cheap test drops them before the bond lookup
            new = np.linalg.norm(before[a] - before[b], axis=-1) >= clash_nm
            a, b = a[new], b[new]
        if len(a):
            far = ~np.asarray(self._near[a, b]).ravel()
            a, b = a[far], b[far]
        return a, b

    def _clashes(self, x: np.ndarray, clash_nm: float, before: np.ndarray | None = None) -> np.ndarray:
        """Residues (sorted, unique) whose turned heavy atoms overlap another heavy atom in ``x`` ``[n_atoms, 3]``
        nm (closer than ``clash_nm``, more than three bonds apart); with ``before``, only overlaps that
        ``before`` did not have."""
        a, b = self._overlap_pairs(x, clash_nm, before)
        residues = np.unique(np.concatenate([self._owner_residue[a], self._owner_residue[b]]))
        return residues[residues >= 0]

    def _overlapping(self, x: np.ndarray, atoms: list[int], clash_nm: float) -> bool:
        """Whether any of the heavy ``atoms`` in ``x`` ``[n_atoms, 3]`` nm is closer than ``clash_nm`` to a heavy
        atom more than three bonds away."""
        a, b = self._overlap_pairs(x, clash_nm)
        return bool(np.isin(a, atoms).any() or np.isin(b, atoms).any())

    def _fit_termini(self, x: np.ndarray, clash_nm: float) -> np.ndarray:
        """``x`` ``[n_atoms, 3]`` nm with every overlapping C-terminal carboxylate turned about CA–C to the
        nearest of :data:`_TERMINUS_TURNS` where it overlaps nothing (left as it is when none does)."""
        for ca, c, heavy, moving in self._termini:
            if not self._overlapping(x, heavy, clash_nm):
                continue
            points = torch.as_tensor(x[moving], device="cpu")
            origin = torch.as_tensor(x[c], device="cpu").expand_as(points)
            axis = torch.as_tensor(x[c] - x[ca], device="cpu").expand_as(points)
            for turn in _TERMINUS_TURNS:
                y = x.copy()
                angle = torch.full((len(moving),), turn, dtype=points.dtype, device="cpu")
                y[moving] = rotate_about_axis(points, origin, axis, angle).numpy()
                if not self._overlapping(y, heavy, clash_nm):
                    x = y
                    break
        return x

    def _first_fit(self, base: np.ndarray, draws: torch.Tensor, clash_nm: float,
                   residues: np.ndarray | None = None) -> np.ndarray:
        """``base`` with each residue's side chain on the first of ``draws`` ``[M, N, 4]`` rad that fits.

        Without ``residues`` every side chain is set and a residue that still adds an overlap ``base`` did not
        have gets its side chain from ``base`` back; with ``residues`` only those are set, and each that still
        overlaps anything gets its side chain from ``base`` back."""
        select = None
        if residues is not None:
            select = np.zeros(self.mask.shape, dtype=bool)
            select[residues] = True
        after = self.set_chi(base, draws[0], select)
        for m in range(1, len(draws)):
            clashing = self._clashes(after, clash_nm)
            if residues is not None:
                clashing = np.intersect1d(clashing, residues)
            if len(clashing) == 0:
                break
            redraw = np.zeros(self.mask.shape, dtype=bool)
            redraw[clashing] = True
            after = self.set_chi(after, draws[m], redraw)
        while True:  # undoing one residue can expose another's draw to the old side chain: repeat until clean
            clashing = self._clashes(after, clash_nm, None if residues is not None else base)
            moved = np.isin(self._owner_residue, clashing) & np.any(after != base, axis=-1)
            if not moved.any():
                return after
            after[moved] = base[moved]

    def place(self, positions: Any, chi: torch.Tensor | None, clash_nm: float = HEAVY_CLASH_NM,
              draws: int | None = None) -> np.ndarray:
        """Side chains set to the first of the χ draws that fits, and C-terminal carboxylates turned clear.

        :meth:`set_chi` with draw 0, then every residue whose turned heavy atoms overlap another heavy atom
        (closer than ``clash_nm`` nm, more than three bonds apart) is turned to its next draw, through draw
        ``draws`` − 1; every residue that still adds an overlap the rigidly moved ``positions`` did not have
        gets its rigidly moved side chain back. Residues whose side chain then still overlaps try the draws
        after the first ``draws`` (fallback draws) the same way, and keep the first that overlaps nothing.
        Overlapping C-terminal carboxylates are turned about CA–C before and after the side chains.

        Parameters
        ----------
        positions
            ``[n_atoms, 3]`` nm, the rigidly moved structure.
        chi
            ``[M + K, N, 4]`` rad (draws in order of preference) or ``[N, 4]`` (one draw), or None (side chains
            stay as they are; only the carboxylates are turned).
        clash_nm
            Overlap distance, nm (default: ``starmd validate``'s heavy-atom clash).
        draws
            M, the draws tried before a side chain stays rigid; the other K are fallback draws (default: all
            draws are tried first, none is a fallback).

        Returns
        -------
        numpy.ndarray
            ``[n_atoms, 3]`` nm, float64.
        """
        before = self._fit_termini(np.array(positions, dtype=np.float64), clash_nm)
        if chi is None:
            return before
        chi = torch.as_tensor(chi, device="cpu")
        chi = chi[None] if chi.ndim == 2 else chi
        first = len(chi) if draws is None else min(max(int(draws), 1), len(chi))
        after = self._first_fit(before, chi[:first], clash_nm)
        if first < len(chi):
            stuck = self._clashes(after, clash_nm)
            if len(stuck):
                after = self._first_fit(after, chi[first:], clash_nm, stuck)
        return self._fit_termini(after, clash_nm)


def side_chains_for(topology: app.Topology, proposer: Any) -> SideChains | None:
    """A :class:`SideChains` for ``topology`` when ``proposer`` draws χ (``draws_chi``), else None."""
    return SideChains(topology) if getattr(proposer, "draws_chi", False) else None
