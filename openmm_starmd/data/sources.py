"""Where training trajectories come from: a corpus index that holds no coordinates, and per-process readers.

Inputs, freely mixed:

- ATLAS-layout system folders ``NAME/NAME.pdb`` + ``NAME/NAME_R*.xtc`` (our ``starmd md`` output and the
  ATLAS distribution alike); an optional ``NAME_R*.json`` gives ``stride_ps`` (frame spacing) and
  ``temperature_k`` (or ``temperature_K``);
- mdCATH HDF5 files (:mod:`openmm_starmd.data.mdcath`), one per domain, several temperatures and replicas;
- folders holding any of the above (ATLAS sub-folders, and ``*.h5`` files at any depth).

:func:`find_systems` reads only headers and topologies, keeping a few numbers per replica, so the index of a
corpus of thousands of systems stays small. :class:`FrameReader` reads just the frames a training window
needs, through a bounded set of open files per process.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import mdtraj as md
import numpy as np
from mdtraj.formats import XTCTrajectoryFile

from openmm_starmd.data.mdcath import MDCATH_FRAME_PS, is_mdcath_file, mdcath_topology, read_mdcath_frames, scan_mdcath
from openmm_starmd.errors import StarMDError

__all__ = ["FrameReader", "Replica", "System", "check_unique_names", "find_atlas_folders", "find_systems",
           "load_topology"]


@dataclass(frozen=True)
class Replica:
    """One trajectory: ``n_frames`` frames ``spacing_ps`` apart at ``temperature_k`` (None: not recorded).

    ``path`` is the XTC file, or the mdCATH HDF5 file with ``group`` the replica's HDF5 path."""

    path: Path
    n_frames: int
    spacing_ps: float
    temperature_k: float | None
    group: str | None = None

    @property
    def label(self) -> str:
        return str(self.path) if self.group is None else f"{self.path}:{self.group}"


@dataclass(frozen=True)
class System:
    """One protein: its name, where its topology is (``NAME.pdb`` or the mdCATH file) and its replicas."""

    name: str
    topology_path: Path
    n_atoms: int
    replicas: tuple[Replica, ...]


def find_atlas_folders(root: str | Path) -> list[Path]:
    """Sub-folders ``NAME`` of ``root`` that hold ``NAME/NAME.pdb`` (sorted by name)."""
    root = Path(root)
    if not root.is_dir():
        raise StarMDError(f"data folder {root} does not exist: give a folder of NAME/NAME.pdb sub-folders")
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / f"{p.name}.pdb").is_file())


def _replica_meta(xtc: Path, default_spacing_ps: float) -> tuple[float, float | None]:
    meta = xtc.with_suffix(".json")
    if not meta.is_file():
        return float(default_spacing_ps), None
    try:
        info = json.loads(meta.read_text())
        spacing = info.get("stride_ps", default_spacing_ps)
        temperature = info.get("temperature_k", info.get("temperature_K"))
    except (json.JSONDecodeError, AttributeError) as exc:
        raise StarMDError(f"cannot read {meta}: {exc}; fix or delete the file") from exc
    if not isinstance(spacing, (int, float)) or spacing <= 0:
        raise StarMDError(f"{meta}: stride_ps must be a positive number of ps, got {spacing!r}")
    if temperature is not None and (not isinstance(temperature, (int, float)) or temperature <= 0):
        raise StarMDError(f"{meta}: temperature_k must be a positive number of K, got {temperature!r}")
    return float(spacing), None if temperature is None else float(temperature)


def atlas_system(folder: str | Path, default_spacing_ps: float = 10.0) -> System:
    """Index an ATLAS-layout folder ``NAME`` (checks that every replica matches ``NAME.pdb``)."""
    folder = Path(folder)
    name = folder.name
    pdb = folder / f"{name}.pdb"
    if not pdb.is_file():
        raise StarMDError(f"missing {pdb}: each data folder NAME needs NAME/NAME.pdb")
    xtcs = sorted(folder.glob(f"{name}_R*.xtc"))
    if not xtcs:
        raise StarMDError(f"no trajectory {folder / (name + '_R*.xtc')}: add at least one replica")
    n_atoms = load_topology(System(name, pdb, -1, ())).n_atoms
    replicas = []
    for xtc in xtcs:
        try:
            with XTCTrajectoryFile(str(xtc)) as handle:
                n_frames = len(handle)
                xyz = handle.read(n_frames=1)[0]
        except Exception as exc:
            raise StarMDError(f"cannot read {xtc}: {exc}") from exc
        if xyz.shape[1] != n_atoms:
            raise StarMDError(f"{xtc} has {xyz.shape[1]} atoms but {pdb} has {n_atoms}: the pair does not match")
        replicas.append(Replica(xtc, int(n_frames), *_replica_meta(xtc, default_spacing_ps)))
    return System(name, pdb, n_atoms, tuple(replicas))


def mdcath_system(path: str | Path) -> System:
    """Index an mdCATH file: one system (the domain) with a replica per temperature and replica group."""
    path = Path(path)
    domain, n_atoms, replicas = scan_mdcath(path)
    return System(domain, path, n_atoms, tuple(Replica(path, n, MDCATH_FRAME_PS, t, group)
                                               for group, t, n in replicas))


def find_systems(paths: Sequence[str | Path] | str | Path, default_spacing_ps: float = 10.0) -> list[System]:
    """Index every system in ``paths`` (system folders, mdCATH files, or folders of either), in input order.

    System names must be unique across the corpus (they name held-out systems and appear in batches)."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not paths:
        raise StarMDError("no data given: pass NAME folders (NAME.pdb + NAME_R*.xtc), mdCATH .h5 files or "
                          "folders holding them")
    systems: list[System] = []
    for p in map(Path, paths):
        if is_mdcath_file(p):
            systems.append(mdcath_system(p))
        elif (p / f"{p.name}.pdb").is_file():
            systems.append(atlas_system(p, default_spacing_ps))
        elif p.is_dir():
            found = [atlas_system(f, default_spacing_ps) for f in find_atlas_folders(p)]
            found += [mdcath_system(f) for f in sorted(p.rglob("*")) if is_mdcath_file(f)]
            if not found:
                raise StarMDError(f"{p} is no system folder (it lacks {p / (p.name + '.pdb')}) and holds no "
                                  "NAME/NAME.pdb folders and no mdCATH .h5 files: check the data path")
            systems.extend(found)
        elif p.exists():
            raise StarMDError(f"{p} is neither a system folder, a folder of them, nor an mdCATH .h5 file")
        else:
            raise StarMDError(f"data path {p} does not exist: give NAME folders, mdCATH .h5 files or their folders")
    check_unique_names(systems)
    return systems


def check_unique_names(systems: Sequence[System]) -> None:
    """Raise :class:`StarMDError` if two systems share a name (names identify held-out systems)."""
    seen: dict[str, Path] = {}
    for system in systems:
        if system.name in seen:
            raise StarMDError(f"two systems are named {system.name} ({seen[system.name]} and "
                              f"{system.topology_path}): rename one; names identify held-out systems")
        seen[system.name] = system.topology_path


def load_topology(system: System):
    """The topology of ``system`` (mdtraj for a PDB file, OpenMM for an mdCATH file; both featurise alike)."""
    if is_mdcath_file(system.topology_path):
        return mdcath_topology(system.topology_path)
    try:
        return md.load_topology(str(system.topology_path))
    except Exception as exc:  # mdtraj raises many types for a broken PDB
        raise StarMDError(f"cannot read {system.topology_path}: {exc}") from exc


class FrameReader:
    """Reads chosen frames of replicas through at most ``max_open`` open files (least recently used closed
    first). Files are opened in the process that reads (each DataLoader worker has its own handles)."""

    def __init__(self, max_open: int = 16) -> None:
        self.max_open = max(1, int(max_open))
        self._handles: OrderedDict[Path, object] = OrderedDict()
        self._pid = os.getpid()

    def _handle(self, path: Path, hdf5: bool):
        if self._pid != os.getpid():  # a forked worker: the parent's handles are not ours to use
            self._handles = OrderedDict()
            self._pid = os.getpid()
        if path in self._handles:
            self._handles.move_to_end(path)
            return self._handles[path]
        if hdf5:
            import h5py

            handle = h5py.File(path, "r")
        else:
            handle = XTCTrajectoryFile(str(path))
        self._handles[path] = handle
        while len(self._handles) > self.max_open:
            self._handles.popitem(last=False)[1].close()
        return handle

    def positions(self, replica: Replica, frames: np.ndarray) -> np.ndarray:
        """Positions ``[K, A, 3]`` nm (float32) of the increasing frame numbers ``frames``."""
        frames = np.asarray(frames, dtype=np.int64)
        if replica.group is not None:
            return read_mdcath_frames(self._handle(replica.path, True), replica.group, frames)
        handle = self._handle(replica.path, False)
        if len(frames) > 1 and np.all(np.diff(frames) == 1):  # contiguous: one seek, one read
            handle.seek(int(frames[0]))
            return handle.read(n_frames=len(frames))[0]
        out = []
        for frame in frames:
            handle.seek(int(frame))
            out.append(handle.read(n_frames=1)[0][0])
        return np.stack(out)

    def close(self) -> None:
        while self._handles:
            self._handles.popitem()[1].close()

    def __getstate__(self) -> dict:  # open files never travel to another process
        return {"max_open": self.max_open, "_handles": OrderedDict(), "_pid": -1}
