"""Training windows of K frames from MD trajectories in the ATLAS layout.

Layout: one folder per system, ``NAME/NAME.pdb`` plus replicas ``NAME/NAME_R*.xtc``; an optional
``NAME/NAME_R*.json`` next to each replica gives its frame spacing as ``"stride_ps"``.

Each replica is featurised once, on first use, into backbone frames (stored as quaternions and CA
positions) and torsions; all-atom coordinates are streamed in chunks and never kept.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import mdtraj as md
import numpy as np
import torch
from mdtraj.formats import XTCTrajectoryFile
from torch.utils.data import Dataset

from openmm_starmd.data.featurize import UNKNOWN_RESIDUE, ProteinFeatures, featurize_topology
from openmm_starmd.errors import StarMDError
from openmm_starmd.frames.protein import frames_from_positions, torsions
from openmm_starmd.frames.rigid import matrix_to_quaternion, quaternion_to_matrix, random_rotations

__all__ = ["TrajectoryWindows", "collate_windows", "find_atlas_folders", "load_backbone_trajectory",
           "mixed_generator"]

_CHUNK_FRAMES = 500


@dataclass(frozen=True)
class _Replica:
    name: str
    pdb: Path
    xtc: Path
    n_frames: int
    spacing_ps: float


def mixed_generator(*keys: int) -> torch.Generator:
    """A CPU generator seeded by a well-mixed hash of ``keys`` (numpy's SeedSequence): neighbouring keys
    give unrelated streams, so draws can be a pure function of (seed, epoch, index) and the like."""
    state = np.random.SeedSequence(list(keys)).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def find_atlas_folders(root: str | Path) -> list[Path]:
    """Sub-folders ``NAME`` of ``root`` that hold ``NAME/NAME.pdb`` (sorted by name)."""
    root = Path(root)
    if not root.is_dir():
        raise StarMDError(f"data folder {root} does not exist: give a folder of NAME/NAME.pdb sub-folders")
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / f"{p.name}.pdb").is_file())


def _spacing_ps(xtc: Path, default_ps: float) -> float:
    meta = xtc.with_suffix(".json")
    if not meta.is_file():
        return float(default_ps)
    try:
        value = json.loads(meta.read_text()).get("stride_ps", default_ps)
    except (json.JSONDecodeError, AttributeError) as exc:
        raise StarMDError(f"cannot read {meta}: {exc}; fix or delete the file") from exc
    if not isinstance(value, (int, float)) or value <= 0:
        raise StarMDError(f"{meta}: stride_ps must be a positive number of ps, got {value!r}")
    return float(value)


def _check_replica(folder: Path, default_spacing_ps: float) -> tuple[md.Topology, list[_Replica]]:
    name = folder.name
    pdb = folder / f"{name}.pdb"
    if not pdb.is_file():
        raise StarMDError(f"missing {pdb}: each data folder NAME needs NAME/NAME.pdb")
    xtcs = sorted(folder.glob(f"{name}_R*.xtc"))
    if not xtcs:
        raise StarMDError(f"no trajectory {folder / (name + '_R*.xtc')}: add at least one replica")
    try:
        topology = md.load_topology(str(pdb))
    except Exception as exc:  # mdtraj raises many types for a broken PDB
        raise StarMDError(f"cannot read {pdb}: {exc}") from exc
    replicas = []
    for xtc in xtcs:
        try:
            with XTCTrajectoryFile(str(xtc)) as handle:
                n_frames = len(handle)
                xyz = handle.read(n_frames=1)[0]
        except Exception as exc:
            raise StarMDError(f"cannot read {xtc}: {exc}") from exc
        if xyz.shape[1] != topology.n_atoms:
            raise StarMDError(
                f"{xtc} has {xyz.shape[1]} atoms but {pdb} has {topology.n_atoms}: the pair does not match"
            )
        replicas.append(_Replica(name, pdb, xtc, int(n_frames), _spacing_ps(xtc, default_spacing_ps)))
    return topology, replicas


def load_backbone_trajectory(xtc: str | Path, topology: md.Topology) -> dict[str, torch.Tensor]:
    """Frames and torsions of every frame of ``xtc``, streamed in chunks.

    Returns
    -------
    dict
        ``"quaternions"`` ``[T, N, 4]``, ``"translations"`` ``[T, N, 3]`` nm, ``"torsions"`` ``[T, N, 7]``
        rad (float32) and ``"torsion_mask"`` ``[N, 7]`` bool.
    """
    quats, trans, tors, tmask = [], [], [], None
    for chunk in md.iterload(str(xtc), top=topology, chunk=_CHUNK_FRAMES):
        rot, t, _ = frames_from_positions(chunk.xyz, topology)
        angles, tmask = torsions(chunk.xyz, topology)
        quats.append(matrix_to_quaternion(rot))
        trans.append(t)
        tors.append(angles)
    return {
        "quaternions": torch.cat(quats),
        "translations": torch.cat(trans),
        "torsions": torch.cat(tors),
        "torsion_mask": tmask,
    }


class TrajectoryWindows(Dataset):
    """Windows of ``window`` frames, ``stride`` frames apart, from ATLAS-layout folders.

    Parameters
    ----------
    folders
        ``NAME`` folders (each with ``NAME.pdb`` and ``NAME_R*.xtc``); see :func:`find_atlas_folders`.
    window
        Frames per window, K.
    min_stride, max_stride
        Range of the stride s in frames, drawn log-uniformly per item (``max_stride`` None: as long as
        the trajectory allows). Δt = s × frame spacing.
    dt_range_ps
        Alternative to the stride range: (Δt_min, Δt_max) in ps, turned into a stride range per replica.
    frame_spacing_ps
        Frame spacing of replicas without ``"stride_ps"`` in their JSON (ps).
    max_residues
        Crop proteins longer than this to a random contiguous stretch.
    random_rigid
        Apply a uniform random rotation to each window (after centring).
    random_translation_nm
        Standard deviation (nm) of a random global translation added after centring (default 0: keep
        the window centred).
    seed
        Items are a pure function of (seed, epoch, index).
    items_per_epoch
        ``len(self)``; default: the number of non-overlapping windows at stride 1 over all replicas.
    max_cached_replicas
        Keep the featurised frames of at most this many replicas (least recently used first out);
        None keeps all.
    generator
        Alternative to ``seed``: its ``initial_seed()`` is used as the seed (its state is not consumed,
        so items stay a pure function of the index, also in DataLoader workers).

    Notes
    -----
    Translations are centred on the mean CA (over present residues of the crop) of the window's
    FIRST frame; later frames keep their motion relative to it. Items are dicts of ``rotations``
    ``[K, N, 3, 3]``, ``translations`` ``[K, N, 3]`` nm, ``torsions`` ``[K, N, 7]`` rad,
    ``torsion_mask`` ``[N, 7]``, ``residue_type``, ``residue_index``, ``chain_index``, ``chain_break``,
    ``residue_mask`` ``[N]``, ``dt_ps`` (float32 scalar), ``stride``, ``start_frame``, ``replica``
    (long scalars) and ``name`` (str).
    """

    def __init__(
        self,
        folders: Sequence[str | Path] | str | Path,
        window: int = 8,
        min_stride: int = 1,
        max_stride: int | None = None,
        dt_range_ps: tuple[float, float] | None = None,
        frame_spacing_ps: float = 10.0,
        max_residues: int | None = None,
        random_rigid: bool = False,
        random_translation_nm: float = 0.0,
        seed: int = 0,
        items_per_epoch: int | None = None,
        max_cached_replicas: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        folders = [folders] if isinstance(folders, (str, Path)) else list(folders)
        if not folders:
            raise StarMDError("no data folders given: pass NAME folders holding NAME.pdb and NAME_R*.xtc")
        if window < 1:
            raise StarMDError(f"window must be >= 1 frame, got {window}")
        if dt_range_ps is not None and (min_stride != 1 or max_stride is not None):
            raise StarMDError("give either a stride range in frames or dt_range_ps, not both")
        if min_stride < 1 or (max_stride is not None and max_stride < min_stride):
            raise StarMDError(f"need 1 <= min_stride <= max_stride, got {min_stride}, {max_stride}")
        if dt_range_ps is not None and not 0 < dt_range_ps[0] <= dt_range_ps[1]:
            raise StarMDError(f"dt_range_ps must be (low, high) with 0 < low <= high, got {dt_range_ps}")
        if max_residues is not None and max_residues < 1:
            raise StarMDError(f"max_residues must be >= 1, got {max_residues}")
        self.window = int(window)
        self.min_stride, self.max_stride, self.dt_range_ps = min_stride, max_stride, dt_range_ps
        self.max_residues = max_residues
        self.random_rigid = bool(random_rigid)
        self.random_translation_nm = float(random_translation_nm)
        self.seed = int(generator.initial_seed()) if generator is not None else int(seed)
        self.epoch = 0
        self.max_cached_replicas = max_cached_replicas
        self._topologies: list[md.Topology] = []
        self._features: list[ProteinFeatures] = []
        self._replicas: list[list[_Replica]] = []
        for folder in folders:
            topology, replicas = _check_replica(Path(folder), frame_spacing_ps)
            for rep in replicas:
                if rep.n_frames < self.window:
                    raise StarMDError(f"{rep.xtc} has {rep.n_frames} frames, fewer than the window {self.window}")
                self._stride_range(rep)  # fail now, not in a worker, if Δt is out of reach
            self._topologies.append(topology)
            self._features.append(featurize_topology(topology))
            self._replicas.append(replicas)
        total = sum(rep.n_frames for reps in self._replicas for rep in reps)
        self.items_per_epoch = int(items_per_epoch) if items_per_epoch else max(1, total // self.window)
        self._cache: OrderedDict[tuple[int, int], dict[str, torch.Tensor]] = OrderedDict()

    def __len__(self) -> int:
        return self.items_per_epoch

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch; items of different epochs differ, items of one epoch are fixed."""
        self.epoch = int(epoch)

    def _stride_range(self, rep: _Replica) -> tuple[int, int]:
        longest = (rep.n_frames - 1) // max(self.window - 1, 1) if self.window > 1 else rep.n_frames
        if self.dt_range_ps is not None:
            low = max(1, math.ceil(self.dt_range_ps[0] / rep.spacing_ps - 1e-9))
            high = math.floor(self.dt_range_ps[1] / rep.spacing_ps + 1e-9)
        else:
            low, high = self.min_stride, self.max_stride if self.max_stride is not None else longest
        high = min(high, longest)
        if high < low:
            raise StarMDError(
                f"{rep.xtc}: {rep.n_frames} frames of {rep.spacing_ps:g} ps cannot hold {self.window} frames "
                f"at stride {low}; lower the stride / Δt range or the window"
            )
        return low, high

    def _frames(self, system: int, replica: int) -> dict[str, torch.Tensor]:
        key = (system, replica)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        data = load_backbone_trajectory(self._replicas[system][replica].xtc, self._topologies[system])
        self._cache[key] = data
        if self.max_cached_replicas is not None:
            while len(self._cache) > self.max_cached_replicas:
                self._cache.popitem(last=False)
        return data

    def generator_for(self, index: int) -> torch.Generator:
        """The generator of item ``index`` in the current epoch (well-mixed seed of seed, epoch, index)."""
        return mixed_generator(self.seed, self.epoch, int(index))

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(index)
        g = self.generator_for(index)
        system = int(torch.randint(len(self._replicas), (), generator=g))
        replica = int(torch.randint(len(self._replicas[system]), (), generator=g))
        rep = self._replicas[system][replica]
        low, high = self._stride_range(rep)
        # Log-uniform integer stride: floor of a log-uniform draw on [low, high + 1).
        u = float(torch.rand((), generator=g))
        stride = min(high, int(math.exp(math.log(low) + u * (math.log(high + 1) - math.log(low)))))
        span = (self.window - 1) * stride
        start = int(torch.randint(rep.n_frames - span, (), generator=g))
        features = self._features[system]
        n_res = features.num_residues
        lo, hi = 0, n_res
        if self.max_residues is not None and n_res > self.max_residues:
            lo = int(torch.randint(n_res - self.max_residues + 1, (), generator=g))
            hi = lo + self.max_residues
            features = features.crop(lo, hi)
        data = self._frames(system, replica)
        frames = torch.arange(start, start + span + 1, stride)
        rot = quaternion_to_matrix(data["quaternions"][frames, lo:hi])
        trans = data["translations"][frames, lo:hi].clone()
        mask = features.residue_mask
        # Centre on the mean CA of the first frame (present residues only).
        centre = trans[0][mask].mean(0) if bool(mask.any()) else torch.zeros(3)
        trans = (trans - centre) * mask[None, :, None]
        if self.random_rigid:
            spin = random_rotations((), g)
            rot = torch.where(mask[None, :, None, None], spin @ rot, rot)
            trans = trans @ spin.T
        if self.random_translation_nm > 0:
            trans = trans + self.random_translation_nm * torch.randn(3, generator=g) * mask[None, :, None]
        return {
            "rotations": rot,
            "translations": trans,
            "torsions": data["torsions"][frames, lo:hi].clone(),
            "torsion_mask": data["torsion_mask"][lo:hi].clone(),
            "residue_type": features.residue_type,
            "residue_index": features.residue_index,
            "chain_index": features.chain_index,
            "chain_break": features.chain_break,
            "residue_mask": mask,
            "dt_ps": torch.tensor(stride * rep.spacing_ps, dtype=torch.float32),
            "stride": torch.tensor(stride),
            "start_frame": torch.tensor(start),
            "replica": torch.tensor(replica),
            "name": rep.name,
        }


# Padding value per per-residue key (the masks pad with False: padding is never a residue).
_PAD = {
    "residue_type": UNKNOWN_RESIDUE,
    "residue_index": 0,
    "chain_index": 0,
    "chain_break": True,
    "residue_mask": False,
    "torsion_mask": False,
    "translations": 0.0,
    "torsions": 0.0,
}


def collate_windows(items: Sequence[dict]) -> dict:
    """Stack items into a batch, padding the residue axis N to the batch maximum.

    Per-residue tensors become ``[B, N, ...]`` / ``[B, K, N, ...]``; padding has ``residue_mask`` False,
    identity rotations and zeros elsewhere. Scalars stack to ``[B]``; ``name`` becomes a list of str.
    """
    if not items:
        raise StarMDError("collate_windows needs at least one item")
    windows = {int(item["rotations"].shape[0]) for item in items}
    if len(windows) != 1:
        raise StarMDError(f"items have different window lengths {sorted(windows)}: use one window per batch")
    N = max(int(item["residue_mask"].shape[0]) for item in items)
    batch: dict = {"name": [item["name"] for item in items]}
    for key, value in items[0].items():
        if key == "name":
            continue
        if value.ndim == 0:
            batch[key] = torch.stack([item[key] for item in items])
            continue
        residue_axis = 1 if key in ("rotations", "translations", "torsions") else 0
        padded = []
        for item in items:
            x = item[key]
            missing = N - x.shape[residue_axis]
            if missing:
                shape = list(x.shape)
                shape[residue_axis] = missing
                if key == "rotations":
                    pad = torch.eye(3, dtype=x.dtype).expand(*shape)
                else:
                    pad = torch.full(shape, _PAD[key], dtype=x.dtype)
                x = torch.cat([x, pad], dim=residue_axis)
            padded.append(x)
        batch[key] = torch.stack(padded)
    return batch
