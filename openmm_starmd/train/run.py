"""``starmd train``: build datasets from ATLAS-layout folders (with a held-out time split) and train."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mdtraj as md
import torch

from openmm_starmd.atomic import atomic_write_json
from openmm_starmd.data.dataset import TrajectoryWindows, collate_windows, find_atlas_folders, mixed_generator
from openmm_starmd.errors import StarMDError
from openmm_starmd.model.checkpoint import WEIGHTS_NAME, load_tensors, read_model_json
from openmm_starmd.model.config import ModelConfig, preset
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


def held_out_systems(names: Sequence[str], named: Sequence[str] = (), fraction: float = 0.0, seed: int = 0
                     ) -> list[str]:
    """Systems kept out of training entirely (sorted): those ``named`` plus a ``fraction`` of the others,
    drawn reproducibly from ``seed`` (at least one when ``fraction`` > 0). At least one system stays in
    training."""
    if not 0.0 <= fraction < 1.0:
        raise StarMDError(f"--val-system-fraction must be in [0, 1), got {fraction}")
    known = set(names)
    unknown = sorted(set(named) - known)
    if unknown:
        raise StarMDError(f"--val-systems names unknown system(s) {', '.join(unknown)}: the data holds "
                          f"{', '.join(sorted(known)[:8])}{' ...' if len(known) > 8 else ''}")
    held = set(named)
    if fraction > 0:
        rest = sorted(known - held)
        count = max(1, round(fraction * len(names)))
        order = torch.randperm(len(rest), generator=mixed_generator(seed, 0x5EED))
        held |= {rest[int(i)] for i in order[:count]}
    if len(held) >= len(known):
        raise StarMDError(f"holding out {len(held)} of {len(known)} systems leaves none to train on: "
                          "name fewer --val-systems or lower --val-system-fraction")
    return sorted(held)


def initial_model(init: str | Path, preset_name: str | None, window: int | None
                  ) -> tuple[ModelConfig, dict[str, torch.Tensor], dict[str, Any]]:
    """Config, weights and provenance record of the checkpoint a fine-tuning run starts from.

    Parameters
    ----------
    init
        ``"default"`` (the model shipped with the package) or a model folder written by ``starmd train``.
    preset_name, window
        What the user asked for, if anything: an error when it contradicts the checkpoint's config.

    Returns
    -------
    config, weights, record
        The checkpoint's :class:`ModelConfig`, its (EMA) weights and ``{"path", "step", "sha256"}``.
    """
    from openmm_starmd.simulation.proposer import DEFAULT_MODEL, default_model_path

    folder = default_model_path() if str(init) == DEFAULT_MODEL else Path(init)
    if not folder.is_dir():
        raise StarMDError(f"--init {init}: no such model folder; give `default` or a folder written by `starmd train`")
    info = read_model_json(folder)
    config = ModelConfig.from_dict(info["config"])
    if preset_name is not None and preset(preset_name, window=config.window) != config:
        raise StarMDError(f"--preset {preset_name} contradicts the model of --init {init}, whose config is used "
                          "as saved: drop --preset")
    if window is not None and window != config.window:
        raise StarMDError(f"--window {window} contradicts the model of --init {init} (window {config.window}): "
                          "drop --window")
    weights = load_tensors(folder / WEIGHTS_NAME)
    record = {"path": str(init) if str(init) == DEFAULT_MODEL else str(folder.resolve()),
              "step": info.get("metadata", {}).get("step"),
              "sha256": hashlib.sha256((folder / WEIGHTS_NAME).read_bytes()).hexdigest()}
    return config, weights, record


def train_from_folders(
    data: Sequence[str | Path], output: str | Path, preset_name: str | None = None, steps: int = 2000,
    batch_size: int = 4, lr: float = 3e-4, warmup_steps: int = 100, window: int | None = None,
    val_fraction: float = 0.1, val_every: int = 200, checkpoint_every: int = 500, seed: int = 0,
    device: str | None = None, resume: bool = False, overwrite: bool = False, progress: bool = True,
    workers: int = 0, init: str | Path | None = None, val_systems: Sequence[str] = (),
    val_system_fraction: float = 0.0,
) -> dict[str, Any] | None:
    """Train a model on trajectories; returns the summary on rank 0 (None on other DDP ranks).

    ``val_fraction`` of each replica (its last frames) is held out for the validation loss. ``workers``
    DataLoader processes build batches ahead (the same batches as without them; useful on a GPU).
    ``preset_name`` None means ``small``. ``init`` fine-tunes: ``"default"`` or a model folder whose config
    and weights start the run (fresh optimiser and schedule); its path, step and weights' sha256 are saved in
    the new model's metadata as ``"init"``. ``val_systems`` (names) and ``val_system_fraction`` hold whole
    systems out of training: their loss is reported separately as ``unseen_loss`` and their names are saved
    as ``"held_out_systems"``.
    """
    if steps < 1 or batch_size < 1:
        raise StarMDError("--steps and --batch-size must be at least 1")
    if workers < 0:
        raise StarMDError(f"--workers must be 0 or more, got {workers}")
    if not 0.0 <= val_fraction < 0.5:
        raise StarMDError(f"--val-fraction must be in [0, 0.5), got {val_fraction}")
    init_weights, record = None, {}
    if init is not None:
        config, init_weights, record["init"] = initial_model(init, preset_name, window)
    else:
        name = preset_name or "small"
        config = preset(name) if window is None else preset(name, window=window)
    ddp.init_from_env()
    folders = system_folders(data)
    record["held_out_systems"] = held_out_systems([f.name for f in folders], val_systems, val_system_fraction, seed)
    unseen = [f for f in folders if f.name in record["held_out_systems"]]
    folders = [f for f in folders if f.name not in record["held_out_systems"]]
    options = TrainOptions(steps=steps, batch_size=batch_size, lr=lr, warmup_steps=min(warmup_steps, steps),
                           val_every=val_every, checkpoint_every=checkpoint_every, seed=seed, progress=progress,
                           workers=workers)
    with tempfile.TemporaryDirectory(prefix="starmd_split_") as tmp:
        val_data = None
        if val_fraction > 0:
            folders, val_folders = split_in_time(folders, val_fraction, Path(tmp))
            val_data = TrajectoryWindows(val_folders, window=config.window, seed=seed + 1)
        train_data = TrajectoryWindows(folders, window=config.window, seed=seed)
        unseen_data = TrajectoryWindows(unseen, window=config.window, seed=seed + 2) if unseen else None
        trainer = Trainer(config, train_data, val_data, output, options, collate_windows, resume=resume,
                          overwrite=overwrite, device=device, init_weights=init_weights, record=record,
                          unseen_data=unseen_data)
        summary = trainer.fit()
    if trainer.rank == 0:
        atomic_write_json(Path(output) / "train" / "data.json", [str(p) for p in data])
        return summary
    return None
