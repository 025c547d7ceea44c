"""mdCATH input: one HDF5 file per CATH domain (Mirarchi, Giorgino & De Fabritiis, Sci. Data 11, 1299, 2024).

Layout (file attribute ``layout = "mdcath-only-protein-v1.0"``)::

    /{domain}/                      one group, named by the domain id (e.g. 1r9lA02)
        pdbProteinAtoms             bytes: PDB text (ATOM lines) of the A protein atoms, in coordinate order
        pdb, psf                    bytes: the full simulated system (not read here)
        chain, element, resname     [A] strings;  resid, z  [A] integers
        .numProteinAtoms, .numResidues, .numChains   (attributes)
        {T}/                        one group per temperature in K: 320, 348, 379, 413, 450
            {r}/                    one group per replica: 0..4
                coords              [F, A, 3] float32, Å (dataset attribute unit = "Angstrom")
                forces              [F, A, 3] kcal/mol/Å; box [3, 3] nm; rmsd, gyrationRadius [F] nm;
                rmsf [R] nm; dssp [F, R]
                .numFrames          (attribute)

One frame is 1 ns of simulated time. Early files name temperature groups ``sims320K``; both are read.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import openmm.app as app

from openmm_starmd.errors import StarMDError
from openmm_starmd.units import NM_PER_ANGSTROM

__all__ = ["MDCATH_FRAME_PS", "MDCATH_SUFFIXES", "is_mdcath_file", "mdcath_topology", "read_mdcath_frames",
           "scan_mdcath"]

MDCATH_FRAME_PS = 1000.0  # time between saved frames (1 ns)
MDCATH_SUFFIXES = (".h5", ".hdf5")
_TEMPERATURE_GROUP = re.compile(r"^(?:sims)?(\d+(?:\.\d+)?)K?$")


def is_mdcath_file(path: str | Path) -> bool:
    """True for a file with an HDF5 suffix (the reader then checks the layout)."""
    path = Path(path)
    return path.is_file() and path.suffix.lower() in MDCATH_SUFFIXES


def _open(path: Path):
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise StarMDError(f"cannot read {path} as HDF5 ({exc}): give an mdCATH .h5 file") from None


def _domain(handle, path: Path) -> str:
    names = list(handle.keys())
    if len(names) != 1:
        raise StarMDError(f"{path} holds {len(names)} top-level groups ({', '.join(names[:4])}): an mdCATH file "
                          "has exactly one, named by its domain")
    return names[0]


def scan_mdcath(path: str | Path) -> tuple[str, int, list[tuple[str, float, int]]]:
    """What an mdCATH file holds, without reading coordinates.

    Returns
    -------
    domain, n_atoms, replicas
        The domain id, the number of protein atoms, and per replica ``(group, temperature_k, n_frames)``
        (``group`` is the HDF5 path of the replica, e.g. ``1r9lA02/320/0``), sorted by temperature then replica.
    """
    path = Path(path)
    with _open(path) as handle:
        domain = _domain(handle, path)
        group = handle[domain]
        if "pdbProteinAtoms" not in group:
            raise StarMDError(f"{path}: /{domain}/pdbProteinAtoms is missing: not an mdCATH file")
        n_atoms = int(group.attrs.get("numProteinAtoms", -1))
        replicas = []
        for name, sub in group.items():
            match = _TEMPERATURE_GROUP.match(name)
            if match is None or not hasattr(sub, "keys"):
                continue
            for rep_name, rep in sub.items():
                if "coords" not in rep:
                    continue
                coords = rep["coords"]
                if coords.ndim != 3 or coords.shape[2] != 3:
                    raise StarMDError(f"{path}: /{domain}/{name}/{rep_name}/coords has shape {coords.shape}, "
                                      "expected [frames, atoms, 3]")
                if n_atoms < 0:
                    n_atoms = int(coords.shape[1])
                if coords.shape[1] != n_atoms:
                    raise StarMDError(f"{path}: /{domain}/{name}/{rep_name}/coords has {coords.shape[1]} atoms but "
                                      f"numProteinAtoms is {n_atoms}: the file is inconsistent")
                frames = int(rep.attrs.get("numFrames", coords.shape[0]))
                replicas.append((f"{domain}/{name}/{rep_name}", float(match.group(1)), min(frames, coords.shape[0])))
    if not replicas:
        raise StarMDError(f"{path}: no /{domain}/TEMPERATURE/REPLICA/coords datasets: not an mdCATH trajectory file")
    replicas.sort(key=lambda r: (r[1], r[0]))
    return domain, n_atoms, replicas


def mdcath_topology(path: str | Path) -> app.Topology:
    """The protein-atom topology stored in the file (``pdbProteinAtoms``), as an OpenMM Topology."""
    path = Path(path)
    with _open(path) as handle:
        domain = _domain(handle, path)
        text = handle[domain]["pdbProteinAtoms"][()]
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    try:
        return app.PDBFile(io.StringIO(str(text))).topology
    except Exception as exc:  # OpenMM raises several types for malformed PDB text
        raise StarMDError(f"{path}: cannot parse /{domain}/pdbProteinAtoms ({exc})") from None


def read_mdcath_frames(handle, group: str, frames: np.ndarray) -> np.ndarray:
    """Positions ``[K, A, 3]`` nm (float32) of the increasing frame numbers ``frames`` of replica ``group``
    from an open ``h5py.File`` (only those frames are read)."""
    coords = handle[group]["coords"]
    return np.asarray(coords[np.asarray(frames, dtype=np.int64)], dtype=np.float32) * np.float32(NM_PER_ANGSTROM)
