"""Test helper: write small files in exactly mdCATH's HDF5 schema (layout "mdcath-only-protein-v1.0").

The schema, as the mdCATH builder writes it (compsciencelab/mdCATH, builder/generator.py and
molAnalyzer.py; dataset card table): a file attribute ``layout``; one group named by the domain with the
byte strings ``pdbProteinAtoms`` (ATOM/MODEL lines of the protein atoms), ``pdb`` and ``psf``, per-atom
``chain``, ``element``, ``resname``, ``resid``, ``z``, attributes ``numProteinAtoms``, ``numResidues``,
``numChains``; a group per temperature (``"320"``) holding a group per replica (``"0"``) with ``coords``
[F, A, 3] in Å (attribute unit "Angstrom"), ``forces`` (kcal/mol/Å), ``box`` [3, 3] nm, ``rmsd`` and
``gyrationRadius`` [F] nm, ``rmsf`` [R] nm, ``dssp`` [F, R], and the attribute ``numFrames``.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import mdtraj as md
import numpy as np


def charmm_atom_lines(pdb: Path) -> str:
    """The ATOM lines of ``pdb`` under a MODEL line, with CHARMM's amide hydrogen name HN (as mdCATH has)."""
    lines = ["MODEL        1\n"]
    for line in Path(pdb).read_text().splitlines(keepends=True):
        if line.startswith("ATOM"):
            lines.append(line[:12] + " HN " + line[16:] if line[12:16] == " H  " else line)
    return "".join(lines)


def write_mdcath(path: Path, domain: str, pdb: Path, replicas: dict[tuple[int, int], np.ndarray]) -> Path:
    """Write ``path`` for ``domain`` with the topology of ``pdb`` and ``replicas[(temperature, replica)]``
    = positions [F, A, 3] in nm (stored in Å, as mdCATH does)."""
    top = md.load_topology(str(pdb))
    atoms = list(top.atoms)
    n_res = top.n_residues
    with h5py.File(path, "w") as h5:
        h5.attrs["layout"] = "mdcath-only-protein-v1.0"
        group = h5.create_group(domain)
        group.create_dataset("pdbProteinAtoms", data=charmm_atom_lines(pdb).encode("utf-8"))
        group.create_dataset("pdb", data=Path(pdb).read_text().encode("utf-8"))
        group.create_dataset("psf", data=b"PSF\n\n       0 !NTITLE\n")
        group.create_dataset("chain", data=np.array([a.residue.chain.chain_id or "A" for a in atoms], dtype="S1"))
        group.create_dataset("element", data=np.array([a.element.symbol for a in atoms], dtype="S2"))
        group.create_dataset("resname", data=np.array([a.residue.name for a in atoms], dtype="S4"))
        group.create_dataset("resid", data=np.array([a.residue.resSeq for a in atoms], dtype=np.int64))
        group.create_dataset("z", data=np.array([a.element.number for a in atoms], dtype=np.int64))
        group.attrs["numProteinAtoms"] = len(atoms)
        group.attrs["numResidues"] = n_res
        group.attrs["numChains"] = top.n_chains
        for (temperature, replica), xyz in replicas.items():
            rep = group.require_group(str(temperature)).create_group(str(replica))
            frames = xyz.shape[0]
            rep.attrs["numFrames"] = frames
            rep.create_dataset("coords", data=(np.asarray(xyz) * 10.0).astype(np.float32))
            rep["coords"].attrs["unit"] = "Angstrom"
            rep.create_dataset("forces", data=np.zeros_like(xyz, dtype=np.float32))
            rep["forces"].attrs["unit"] = "kcal/mol/Angstrom"
            rep.create_dataset("box", data=np.eye(3, dtype=np.float32) * 5.0)
            for name, shape in (("rmsd", (frames,)), ("gyrationRadius", (frames,)), ("rmsf", (n_res,))):
                rep.create_dataset(name, data=np.zeros(shape, dtype=np.float32))
                rep[name].attrs["unit"] = "nm"
            rep.create_dataset("dssp", data=np.full((frames, n_res), b"C", dtype="S1"))
    return path
