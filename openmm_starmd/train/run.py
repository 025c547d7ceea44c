"""``starmd train``: build datasets from ATLAS-layout folders (with a held-out time split) and train."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mdtraj as md

from openmm_starmd.atomic import atomic_write_json
from openmm_starmd.data.dataset import TrajectoryWindows, collate_windows, find_atlas_folders
from openmm_starmd.errors import StarMDError
from openmm_starmd.model.config import preset
from openmm_starmd.train import ddp
from openmm_starmd.train.trainer import Trainer, TrainOptions


def system_folders(paths: Sequence[str | Path]) -> list[Path]:
    """``NAME`` folders from a mix of system folders (``NAME/NAME.pdb``) and roots of such folders."""
    out: list[Path] = []
    for p in map(Path, paths):
        if (p / f"{p.name}.pdb").is_file():
            out.append(p)
        else:
            found = find_atlas_folders(p)
            if not found:
                raise StarMDError(f"{p} holds no NAME/NAME.pdb system folders: check the data path")
            out.extend(found)
    return out


def split_in_time(folders: Sequence[Path], fraction: float, workdir: Path) -> tuple[list[Path], list[Path]]:
    """Copy every replica's first ``1 - fraction`` of frames to ``workdir/train`` and the rest to
    ``workdir/val`` (same ATLAS layout), so validation windows never overlap training frames."""
    train, val = [], []
    for folder in folders:
        name = folder.name
        for part in ("train", "val"):
            dest = workdir / part / name
            dest.mkdir(parents=True)
            shutil.copy(folder / f"{name}.pdb", dest / f"{name}.pdb")
        for xtc in sorted(folder.glob(f"{name}_R*.xtc")):
            traj = md.load(str(xtc), top=str(folder / f"{name}.pdb"))
            cut = round(traj.n_frames * (1.0 - fraction))
            meta = xtc.with_suffix(".json")
            for part, piece in (("train", traj[:cut]), ("val", traj[cut:])):
                piece.save_xtc(str(workdir / part / name / xtc.name))
                if meta.is_file():
                    shutil.copy(meta, workdir / part / name / meta.name)
        train.append(workdir / "train" / name)
        val.append(workdir / "val" / name)
    return train, val


def train_from_folders(
    data: Sequence[str | Path], output: str | Path, preset_name: str = "small", steps: int = 2000,
    batch_size: int = 4, lr: float = 3e-4, warmup_steps: int = 100, window: int | None = None,
    val_fraction: float = 0.1, val_every: int = 200, checkpoint_every: int = 500, seed: int = 0,
    device: str | None = None, resume: bool = False, overwrite: bool = False, progress: bool = True,
    workers: int = 0,
) -> dict[str, Any] | None:
    """Train a model on trajectories; returns the summary on rank 0 (None on other DDP ranks).

    ``val_fraction`` of each replica (its last frames) is held out for the validation loss. ``workers``
    DataLoader processes build batches ahead (the same batches as without them; useful on a GPU).
    """
    if steps < 1 or batch_size < 1:
        raise StarMDError("--steps and --batch-size must be at least 1")
    if workers < 0:
        raise StarMDError(f"--workers must be 0 or more, got {workers}")
    if not 0.0 <= val_fraction < 0.5:
        raise StarMDError(f"--val-fraction must be in [0, 0.5), got {val_fraction}")
    ddp.init_from_env()
    config = preset(preset_name) if window is None else preset(preset_name, window=window)
    folders = system_folders(data)
    options = TrainOptions(steps=steps, batch_size=batch_size, lr=lr, warmup_steps=min(warmup_steps, steps),
                           val_every=val_every, checkpoint_every=checkpoint_every, seed=seed, progress=progress,
                           workers=workers)
    with tempfile.TemporaryDirectory(prefix="starmd_split_") as tmp:
        val_data = None
        if val_fraction > 0:
            folders, val_folders = split_in_time(folders, val_fraction, Path(tmp))
            val_data = TrajectoryWindows(val_folders, window=config.window, seed=seed + 1)
        train_data = TrajectoryWindows(folders, window=config.window, seed=seed)
        trainer = Trainer(config, train_data, val_data, output, options, collate_windows, resume=resume,
                          overwrite=overwrite, device=device)
        summary = trainer.fit()
    if trainer.rank == 0:
        atomic_write_json(Path(output) / "train" / "data.json", [str(p) for p in data])
        return summary
    return None
