"""Per-residue features of a topology (sequence, numbering, chains), aligned with the residue frames.

One entry per residue of the topology, in topology order, exactly as in
:mod:`openmm_starmd.frames.protein` (residues without N, CA, C are present but masked). A solvated
system's model sees its protein only: the simulation featurizes a protein-only view
(:class:`~openmm_starmd.simulation.solvent.SolventLayout`, which uses :func:`is_solvent_residue`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from openmm_starmd.frames.protein import (
    RESIDUE_NAMES,
    backbone_atom_indices,
    canonical_residue_name,
    chain_breaks,
    residue_records,
)

__all__ = [
    "CHAIN_INDEX_GAP",
    "ION_NAMES",
    "NUM_RESIDUE_TYPES",
    "UNKNOWN_RESIDUE",
    "WATER_NAMES",
    "ProteinFeatures",
    "chain_break",
    "chain_index",
    "featurize_topology",
    "has_water",
    "is_solvent_residue",
    "residue_index",
    "residue_mask",
    "residue_type",
    "residue_type_index",
]

UNKNOWN_RESIDUE = len(RESIDUE_NAMES)  # 20: caps, ligands, water, non-standard residues
# Added to the residue index at every new chain: the network sees chain identity only through the residue
# index (rotary positions) and chain_break, so residues of different chains must look far apart in
# sequence, farther than any two residues of one chain it was trained on (the linker trick of AlphaFold
# users for complexes).
CHAIN_INDEX_GAP = 200
NUM_RESIDUE_TYPES = UNKNOWN_RESIDUE + 1
_TYPE_OF = {name: i for i, name in enumerate(RESIDUE_NAMES)}
WATER_NAMES = frozenset({"HOH", "WAT", "H2O", "TIP3", "TIP4", "TIP5", "SOL", "SPC"})
# Residue names of monatomic ions as OpenMM's Modeller, PDB entries and CHARMM files write them.
ION_NAMES = frozenset({"NA", "CL", "K", "LI", "RB", "CS", "MG", "CA", "ZN", "F", "BR", "I", "SOD", "CLA", "POT",
                       "CAL", "NA+", "CL-", "K+"})


def has_water(topology) -> bool:
    """Whether an OpenMM ``Topology`` holds a water residue (:data:`WATER_NAMES`)."""
    return any(res.name.strip().upper() in WATER_NAMES for res in topology.residues())


def is_solvent_residue(name: str, n_atoms: int) -> bool:
    """Whether a residue is solvent: a water, or a one-atom residue named like an ion."""
    name = name.strip().upper()
    return name in WATER_NAMES or (n_atoms == 1 and name in ION_NAMES)


def residue_type_index(name: str) -> int:
    """Index 0-19 of a standard residue name (variants such as HIE map to HIS), else 20."""
    return _TYPE_OF.get(canonical_residue_name(name), UNKNOWN_RESIDUE)


@dataclass(frozen=True)
class ProteinFeatures:
    """Sequence-level features of N residues.

    Attributes
    ----------
    residue_type
        LongTensor ``[N]``: 0-19 in the order of ``RESIDUE_NAMES``, 20 = unknown.
    residue_index
        LongTensor ``[N]``: sequence position counted from 0, numbering gaps kept (residues 1, 2, 5 give
        0, 1, 4); each new chain starts :data:`CHAIN_INDEX_GAP` after the last residue of the previous one.
    chain_index
        LongTensor ``[N]``: chain of each residue (0-based, topology order).
    chain_break
        BoolTensor ``[N]``: True where residue i does not continue residue i-1 (the first residue,
        a new chain or a gap in the numbering).
    residue_mask
        BoolTensor ``[N]``: True where the residue has N, CA and C (has a frame).
    """

    residue_type: torch.Tensor
    residue_index: torch.Tensor
    chain_index: torch.Tensor
    chain_break: torch.Tensor
    residue_mask: torch.Tensor

    @property
    def num_residues(self) -> int:
        return int(self.residue_type.shape[0])

    @property
    def sequence(self) -> str:
        """One-letter sequence, ``X`` for unknown residues."""
        letters = "ARNDCQEGHILKMFPSTWYVX"
        return "".join(letters[int(t)] for t in self.residue_type)

    def crop(self, start: int, stop: int) -> ProteinFeatures:
        """Residues ``start:stop``; the first kept residue is marked as a chain break."""
        values = {f.name: getattr(self, f.name)[start:stop].clone() for f in fields(self)}
        if stop > start:
            values["chain_break"][0] = True
        return ProteinFeatures(**values)

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def featurize_topology(topology) -> ProteinFeatures:
    """Features of every residue of an OpenMM ``Topology`` or an ``mdtraj.Topology``."""
    records = residue_records(topology)
    breaks = chain_breaks(records)
    index: list[int] = []
    for i, rec in enumerate(records):
        if i == 0:
            index.append(0)
        elif records[i - 1].chain_index != rec.chain_index:
            index.append(index[-1] + CHAIN_INDEX_GAP)
        elif rec.resseq is not None and records[i - 1].resseq is not None:
            index.append(index[-1] + max(rec.resseq - records[i - 1].resseq, 1))
        else:
            index.append(index[-1] + 1)
    _, residue_mask = backbone_atom_indices(topology)
    # Host tables: a Rollout or a data loader moves them to the model's device.
    return ProteinFeatures(
        residue_type=torch.tensor([residue_type_index(r.name) for r in records], dtype=torch.long, device="cpu"),
        residue_index=torch.tensor(index, dtype=torch.long, device="cpu"),
        chain_index=torch.tensor([r.chain_index for r in records], dtype=torch.long, device="cpu"),
        chain_break=breaks,
        residue_mask=residue_mask,
    )


def residue_type(topology) -> torch.Tensor:
    """LongTensor ``[N]`` of residue types (0-19, 20 = unknown); see :class:`ProteinFeatures`."""
    return featurize_topology(topology).residue_type


def residue_index(topology) -> torch.Tensor:
    """LongTensor ``[N]``: sequence position from 0 with numbering and chain gaps; see :class:`ProteinFeatures`."""
    return featurize_topology(topology).residue_index


def chain_index(topology) -> torch.Tensor:
    """LongTensor ``[N]``: 0-based chain of each residue."""
    return featurize_topology(topology).chain_index


def chain_break(topology) -> torch.Tensor:
    """BoolTensor ``[N]``: True where residue i does not continue residue i-1 (new chain or gap)."""
    return featurize_topology(topology).chain_break


def residue_mask(topology) -> torch.Tensor:
    """BoolTensor ``[N]``: True where the residue has N, CA and C (a frame)."""
    return featurize_topology(topology).residue_mask
