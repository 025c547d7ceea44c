"""Training windows of K frames from MD trajectories (ATLAS-layout folders and mdCATH files, mixed).

Sources are indexed by :mod:`openmm_starmd.data.sources` (no coordinates kept). Each item reads only its
K frames from disk and featurises them into backbone frames and torsions, with per-system atom indices
computed once per process (a bounded cache), so memory does not grow with the corpus and DataLoader
workers stream windows independently.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import mdtraj as md
import numpy as np
import torch
from torch.utils.data import Dataset

from openmm_starmd.data.featurize import UNKNOWN_RESIDUE, ProteinFeatures, featurize_topology
from openmm_starmd.data.sources import (
    FrameReader,
    Replica,
    System,
    check_unique_names,
    find_atlas_folders,
    find_systems,
    load_topology,
)
from openmm_starmd.errors import StarMDError
from openmm_starmd.frames.protein import (
    backbone_atom_indices,
    dihedral,
    frames_from_positions,
    torsion_atom_indices,
    torsions,
)
from openmm_starmd.frames.rigid import (
    frames_from_three_points,
    identity_rotations,
    matrix_to_quaternion,
    random_rotations,
)

__all__ = ["TrajectoryWindows", "collate_windows", "find_atlas_folders", "load_backbone_trajectory",
           "mixed_generator", "mixed_seed"]

_CHUNK_FRAMES = 500


def mixed_seed(*keys: int) -> int:
    """A 64-bit seed from a well-mixed hash of ``keys`` (numpy's SeedSequence): neighbouring keys give
    unrelated seeds."""
    state = np.random.SeedSequence(list(keys)).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 32 | int(state[1])


def mixed_generator(*keys: int) -> torch.Generator:
    """A CPU generator seeded by :func:`mixed_seed` of ``keys``, so draws can be a pure function of
    (seed, epoch, index) and the like."""
    return torch.Generator().manual_seed(mixed_seed(*keys))


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


@dataclass(frozen=True)
class _Tables:
    """Per-system residue features and the atom indices of frames and torsions (computing the torsion
    indices walks the topology in Python, about 10 ms per 200 residues, hence once per system)."""

    features: ProteinFeatures
    backbone: torch.Tensor  # [N, 3] long: N, CA, C (-1 missing)
    torsion_index: torch.Tensor  # [N, 7, 4] long (-1 missing)
    torsion_mask: torch.Tensor  # [N, 7] bool

    @classmethod
    def of(cls, topology) -> _Tables:
        index, _ = backbone_atom_indices(topology)
        tindex, tmask = torsion_atom_indices(topology)
        return cls(featurize_topology(topology), index[:, :3].clone(), tindex, tmask)

    def featurise(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Frames and torsions of ``positions`` ``[K, A, 3]`` nm: rotations ``[K, N, 3, 3]``, CA translations
        ``[K, N, 3]`` nm and torsions ``[K, N, 7]`` rad, as :func:`frames_from_positions` and :func:`torsions`."""
        K = positions.shape[0]
        mask = self.features.residue_mask
        atoms = _pick(positions, self.backbone)  # [K, N, 3, 3]
        rot, trans = frames_from_three_points(atoms[..., 0, :], atoms[..., 1, :], atoms[..., 2, :])
        rot = torch.where(mask[None, :, None, None], rot, identity_rotations((K, mask.shape[0])))
        trans = trans * mask[None, :, None]
        quad = _pick(positions, self.torsion_index)  # [K, N, 7, 4, 3]
        angles = dihedral(quad[..., 0, :], quad[..., 1, :], quad[..., 2, :], quad[..., 3, :])
        return rot, trans, (angles * self.torsion_mask[None]).to(torch.float32)


def _pick(positions: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``positions[:, index]`` ``[K, *index.shape, 3]``, zeros where ``index`` is -1."""
    picked = positions[:, index.clamp_min(0).reshape(-1)].reshape(positions.shape[0], *index.shape, 3)
    return picked * (index >= 0)[None, ..., None]


class TrajectoryWindows(Dataset):
    """Windows of ``window`` frames, ``stride`` frames apart, from ATLAS-layout folders and mdCATH files.

    Parameters
    ----------
    sources
        System folders ``NAME`` (``NAME.pdb`` + ``NAME_R*.xtc``), mdCATH ``.h5`` files, folders of either, or
        :class:`~openmm_starmd.data.sources.System` objects from :func:`~openmm_starmd.data.sources.find_systems`.
    window
        Frames per window, K.
    min_stride, max_stride
        Range of the stride s in frames, drawn log-uniformly per item (``max_stride`` None: as long as
        the trajectory allows). Δt = s × frame spacing.
    dt_range_ps
        Alternative to the stride range: (Δt_min, Δt_max) in ps, turned into a stride range per replica.
    frame_spacing_ps
        Frame spacing of XTC replicas without ``"stride_ps"`` in their JSON (ps).
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
    generator
        Alternative to ``seed``: its ``initial_seed()`` is used as the seed (its state is not consumed,
        so items stay a pure function of the index, also in DataLoader workers).
    time_range
        ``(a, b)``: only frames ``round(a n)`` to ``round(b n) - 1`` of each n-frame replica are used (the
        training part ``(0, 0.9)`` and the held-out part ``(0.9, 1)`` of an in-time split never overlap).
    default_temperature_k
        Temperature (K) of replicas that do not record one (ATLAS ran at 300 K).
    max_cached_systems, max_open_files
        Per process: residue tables of at most this many systems, and at most this many open trajectory
        files, are kept (least recently used dropped first); memory is bounded whatever the corpus size.

    Notes
    -----
    Replicas too short for a window (or whose Δt range is out of reach) are skipped and listed in
    ``skipped``; it is an error if nothing remains. Translations are centred on the mean CA (over present
    residues of the crop) of the window's FIRST frame; later frames keep their motion relative to it. Items
    are dicts of ``rotations`` ``[K, N, 3, 3]``, ``translations`` ``[K, N, 3]`` nm, ``torsions`` ``[K, N, 7]``
    rad, ``torsion_mask`` ``[N, 7]``, ``residue_type``, ``residue_index``, ``chain_index``, ``chain_break``,
    ``residue_mask`` ``[N]``, ``dt_ps`` and ``temperature_k`` (float32 scalars), ``stride``, ``start_frame``,
    ``replica`` (long scalars) and ``name`` (str, the system's).
    """

    def __init__(
        self,
        sources: Sequence[str | Path | System] | str | Path,
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
        generator: torch.Generator | None = None,
        time_range: tuple[float, float] = (0.0, 1.0),
        default_temperature_k: float = 300.0,
        max_cached_systems: int = 64,
        max_open_files: int = 16,
    ) -> None:
        sources = [sources] if isinstance(sources, (str, Path, System)) else list(sources)
        if not sources:
            raise StarMDError("no data given: pass NAME folders (NAME.pdb + NAME_R*.xtc) or mdCATH .h5 files")
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
        if not 0.0 <= time_range[0] < time_range[1] <= 1.0:
            raise StarMDError(f"time_range must be (a, b) with 0 <= a < b <= 1, got {time_range}")
        self.window = int(window)
        self.min_stride, self.max_stride, self.dt_range_ps = min_stride, max_stride, dt_range_ps
        self.max_residues = max_residues
        self.random_rigid = bool(random_rigid)
        self.random_translation_nm = float(random_translation_nm)
        self.seed = int(generator.initial_seed()) if generator is not None else int(seed)
        self.epoch = 0
        self.time_range = (float(time_range[0]), float(time_range[1]))
        self.default_temperature_k = float(default_temperature_k)
        self.max_cached_systems = max(1, int(max_cached_systems))
        systems: list[System] = []
        for source in sources:
            systems.extend([source] if isinstance(source, System) else find_systems([source], frame_spacing_ps))
        check_unique_names(systems)
        self.systems: list[System] = []
        self._replicas: list[tuple[Replica, ...]] = []  # the usable replicas of each kept system
        self.skipped: list[str] = []
        for system in systems:
            usable = []
            for rep in system.replicas:
                lo, hi = self._frame_range(rep)
                if hi - lo >= self.window and self._stride_range(rep, hi - lo) is not None:
                    usable.append(rep)
                else:
                    self.skipped.append(f"{rep.label}: {hi - lo} frames of {rep.spacing_ps:g} ps")
            if usable:
                self.systems.append(system)
                self._replicas.append(tuple(usable))
        if not self.systems:
            example = f" (e.g. {self.skipped[0]})" if self.skipped else ""
            raise StarMDError(f"no replica can hold windows of {self.window} frames at the asked stride / Δt"
                              f"{example}: give longer trajectories or lower the window / Δt range")
        total = sum(self._frame_range(r)[1] - self._frame_range(r)[0] for reps in self._replicas for r in reps)
        self.items_per_epoch = int(items_per_epoch) if items_per_epoch else max(1, total // self.window)
        self._tables: OrderedDict[int, _Tables] = OrderedDict()
        self.reader = FrameReader(max_open_files)

    def __len__(self) -> int:
        return self.items_per_epoch

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch; items of different epochs differ, items of one epoch are fixed."""
        self.epoch = int(epoch)

    @property
    def names(self) -> list[str]:
        """Names of the systems windows are drawn from."""
        return [s.name for s in self.systems]

    def _frame_range(self, rep: Replica) -> tuple[int, int]:
        return round(self.time_range[0] * rep.n_frames), round(self.time_range[1] * rep.n_frames)

    def _stride_range(self, rep: Replica, n_frames: int) -> tuple[int, int] | None:
        longest = (n_frames - 1) // max(self.window - 1, 1) if self.window > 1 else n_frames
        if self.dt_range_ps is not None:
            low = max(1, math.ceil(self.dt_range_ps[0] / rep.spacing_ps - 1e-9))
            high = math.floor(self.dt_range_ps[1] / rep.spacing_ps + 1e-9)
        else:
            low, high = self.min_stride, self.max_stride if self.max_stride is not None else longest
        high = min(high, longest)
        return None if high < low else (low, high)

    def _system_tables(self, system: int) -> _Tables:
        if system in self._tables:
            self._tables.move_to_end(system)
            return self._tables[system]
        tables = _Tables.of(load_topology(self.systems[system]))
        self._tables[system] = tables
        while len(self._tables) > self.max_cached_systems:
            self._tables.popitem(last=False)
        return tables

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
        first, stop = self._frame_range(rep)
        low, high = self._stride_range(rep, stop - first)
        # Log-uniform integer stride: floor of a log-uniform draw on [low, high + 1).
        u = float(torch.rand((), generator=g))
        stride = min(high, int(math.exp(math.log(low) + u * (math.log(high + 1) - math.log(low)))))
        span = (self.window - 1) * stride
        start = first + int(torch.randint(stop - first - span, (), generator=g))
        tables = self._system_tables(system)
        features = tables.features
        n_res = features.num_residues
        lo, hi = 0, n_res
        if self.max_residues is not None and n_res > self.max_residues:
            lo = int(torch.randint(n_res - self.max_residues + 1, (), generator=g))
            hi = lo + self.max_residues
            features = features.crop(lo, hi)
        positions = torch.from_numpy(self.reader.positions(rep, np.arange(start, start + span + 1, stride)))
        rot, trans, angles = tables.featurise(positions)
        rot, trans, angles = rot[:, lo:hi], trans[:, lo:hi], angles[:, lo:hi]
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
        temperature = self.default_temperature_k if rep.temperature_k is None else rep.temperature_k
        return {
            "rotations": rot.contiguous(),
            "translations": trans.contiguous(),
            "torsions": angles.contiguous(),
            "torsion_mask": tables.torsion_mask[lo:hi].clone(),
            "residue_type": features.residue_type,
            "residue_index": features.residue_index,
            "chain_index": features.chain_index,
            "chain_break": features.chain_break,
            "residue_mask": mask,
            "dt_ps": torch.tensor(stride * rep.spacing_ps, dtype=torch.float32),
            "temperature_k": torch.tensor(temperature, dtype=torch.float32),
            "stride": torch.tensor(stride),
            "start_frame": torch.tensor(start),
            "replica": torch.tensor(replica),
            "name": self.systems[system].name,
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
