"""``starmd train``: index the corpus (ATLAS folders, mdCATH files, our MD), split it (in time, and by
system), and train or fine-tune.

:func:`system_folders` and :func:`split_in_time` (which copies every replica's two parts to disk) predate the
streamed datasets and remain for the benchmarks that still call them; :func:`build_datasets` splits without
copying."""

from __future__ import annotations

import hashlib
import math
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mdtraj as md
import torch

from openmm_starmd.atomic import atomic_write_json
from openmm_starmd.data.dataset import TrajectoryWindows, collate_windows, find_atlas_folders, mixed_generator
from openmm_starmd.data.sources import find_systems
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
        What the user asked for, if anything: a preset that contradicts the checkpoint's config is an
        error; a window replaces the checkpoint's (the frames of history trained on and attended to).

    Returns
    -------
    config, weights, record
        The checkpoint's :class:`ModelConfig`, its (EMA) weights and ``{"path", "step", "sha256"}``.
    """
    from openmm_starmd.model.checkpoint import DEFAULT_MODEL, model_folder

    folder = model_folder(init)
    info = read_model_json(folder)
    config = ModelConfig.from_dict(info["config"])
    data_fields = {"temperature_condition": config.temperature_condition,
                   "temperature_range_k": config.temperature_range_k}
    if preset_name is not None and preset(preset_name, window=config.window, **data_fields) != config:
        raise StarMDError(f"--preset {preset_name} contradicts the model of --init {init}, whose config is used "
                          "as saved: drop --preset")
    if window is not None and window != config.window:
        # No weight depends on the window (time enters through rotary phases and the Δt embedding), so a
        # fine-tuned model may attend to a shorter or longer history than its parent.
        config = config.replace(window=window)
    weights = load_tensors(folder / WEIGHTS_NAME)
    record = {"path": str(init) if str(init) == DEFAULT_MODEL else str(folder.resolve()),
              "step": info.get("metadata", {}).get("step"),
              "sha256": hashlib.sha256((folder / WEIGHTS_NAME).read_bytes()).hexdigest()}
    return config, weights, record


def data_temperatures(data: TrajectoryWindows) -> tuple[float, float]:
    """(lowest, highest) temperature (K) of the replicas ``data`` draws from."""
    temps = [data.default_temperature_k if r.temperature_k is None else r.temperature_k
             for reps in data._replicas for r in reps]
    return min(temps), max(temps)


def fit_temperature(config: ModelConfig, temperatures: tuple[float, float], condition: bool, fine_tune: bool
                    ) -> ModelConfig:
    """The config with the temperature condition and the data's temperature range.

    Training from scratch takes both from the arguments. Fine-tuning may add the condition (the new
    temperature layers start at zero output, so the model starts as it was) and widens a conditioned model's
    range; a model without the condition cannot learn a second temperature, so other data is an error."""
    if not fine_tune:
        return config.replace(temperature_condition=condition, temperature_range_k=temperatures)
    if condition and not config.temperature_condition:
        config = config.replace(temperature_condition=True)
    low, high = config.temperature_range_k
    if config.temperature_condition:
        return config.replace(temperature_range_k=(min(low, temperatures[0]), max(high, temperatures[1])))
    if temperatures != (low, high):
        raise StarMDError(f"the --init model was trained at {low:g}-{high:g} K without a temperature condition and "
                          f"the data span {temperatures[0]:g}-{temperatures[1]:g} K: add --temperature-condition")
    return config


def build_datasets(
    data: Sequence[str | Path], window: int, val_fraction: float = 0.1, val_systems: Sequence[str] = (),
    val_system_fraction: float = 0.0, seed: int = 0, dt_range_ps: tuple[float, float] | None = None,
) -> tuple[TrajectoryWindows, TrajectoryWindows | None, TrajectoryWindows | None, list[str]]:
    """Training windows, in-time validation windows, unseen-system windows and the held-out names.

    Training uses the first ``1 - val_fraction`` of every replica of the systems not held out; the in-time
    split their last ``val_fraction``; the unseen split all frames of the held-out systems. ``dt_range_ps``
    (low, high) limits the training windows' frame spacing Δt (ps); the validation splits keep every Δt so
    their losses stay comparable between runs."""
    if not 0.0 <= val_fraction < 0.5:
        raise StarMDError(f"--val-fraction must be in [0, 0.5), got {val_fraction}")
    systems = find_systems(data)
    held = held_out_systems([s.name for s in systems], val_systems, val_system_fraction, seed)
    kept = [s for s in systems if s.name not in held]
    cut = 1.0 - val_fraction
    train = TrajectoryWindows(kept, window=window, seed=seed, time_range=(0.0, cut), dt_range_ps=dt_range_ps)
    val = TrajectoryWindows(kept, window=window, seed=seed + 1, time_range=(cut, 1.0)) if val_fraction > 0 else None
    unseen = TrajectoryWindows([s for s in systems if s.name in held], window=window, seed=seed + 2) if held else None
    return train, val, unseen, held


def train_from_folders(
    data: Sequence[str | Path], output: str | Path, preset_name: str | None = None, steps: int = 2000,
    batch_size: int = 4, lr: float = 3e-4, warmup_steps: int = 100, window: int | None = None,
    val_fraction: float = 0.1, val_every: int = 200, checkpoint_every: int = 500, seed: int = 0,
    device: str | None = None, resume: bool = False, overwrite: bool = False, progress: bool = True,
    workers: int = 0, init: str | Path | None = None, val_systems: Sequence[str] = (),
    val_system_fraction: float = 0.0, temperature_condition: bool = False, chi_head: bool = False,
    violation_weight: float | None = None, violation_neighbours: bool = False,
    dt_range_ps: tuple[float, float] | None = None,
) -> dict[str, Any] | None:
    """Train a model on trajectories; returns the summary on rank 0 (None on other DDP ranks).

    ``data``: ATLAS-layout system folders, mdCATH ``.h5`` files, or folders of either, mixed freely (see
    :func:`openmm_starmd.data.sources.find_systems`). Windows are read from disk item by item, so memory does
    not grow with the corpus. ``val_fraction`` of each replica (its last frames) is held out for the
    validation loss. ``workers`` DataLoader processes build batches ahead (the same batches as without them).
    ``preset_name`` None means ``small``. ``init`` fine-tunes: ``"default"`` or a model folder whose config
    and weights start the run (fresh optimiser and schedule); its path, step and weights' sha256 are saved in
    the new model's metadata as ``"init"``. ``val_systems`` (names) and ``val_system_fraction`` hold whole
    systems out of training: their loss is reported separately as ``unseen_loss`` and their names are saved
    as ``"held_out_systems"``. ``temperature_condition`` conditions the model on each replica's temperature
    (mdCATH groups, ``temperature_k`` in our JSON, else 300 K); the data's range is saved in the config.
    ``chi_head`` adds the side-chain torsion head (:mod:`openmm_starmd.model.chi`), also to an ``init`` model
    without one (the head starts uniform, the rest as saved). ``violation_weight`` sets the weight of the
    structural-violation penalty (:mod:`openmm_starmd.train.violations`; None keeps the preset's or the
    ``init`` model's); ``violation_neighbours`` adds neighbouring residues' backbone pairs to it.
    ``dt_range_ps`` (low, high) limits the training windows' Δt in ps (see :func:`build_datasets`); it is saved
    in the model's metadata.
    """
    if steps < 1 or batch_size < 1:
        raise StarMDError("--steps and --batch-size must be at least 1")
    if workers < 0:
        raise StarMDError(f"--workers must be 0 or more, got {workers}")
    if violation_weight is not None and not 0 <= violation_weight < math.inf:
        raise StarMDError(f"--violation-weight must be 0 or more (and finite), got {violation_weight}")
    init_weights, record = None, {}
    if init is not None:
        config, init_weights, record["init"] = initial_model(init, preset_name, window)
    else:
        name = preset_name or "small"
        config = preset(name) if window is None else preset(name, window=window)
    if chi_head:
        config = config.replace(chi_head=True)
    if violation_weight is not None:
        config = config.replace(violation_loss_weight=float(violation_weight))
    if violation_neighbours:
        if config.violation_loss_weight <= 0:
            raise StarMDError("--violation-neighbours extends the violation penalty, which is off: give "
                              "--violation-weight W as well")
        config = config.replace(violation_neighbours=True)
    if dt_range_ps is not None:
        low, high = (float(v) for v in dt_range_ps)
        if not 0.0 < low <= high:
            raise StarMDError(f"--dt-range needs 0 < LOW <= HIGH, got {low:g} ps and {high:g} ps")
        dt_range_ps = (low, high)
        record["dt_range_ps"] = list(dt_range_ps)
    train_data, val_data, unseen_data, record["held_out_systems"] = build_datasets(
        data, config.window, val_fraction, val_systems, val_system_fraction, seed, dt_range_ps)
    config = fit_temperature(config, data_temperatures(train_data), temperature_condition, init is not None)
    options = TrainOptions(steps=steps, batch_size=batch_size, lr=lr, warmup_steps=min(warmup_steps, steps),
                           val_every=val_every, checkpoint_every=checkpoint_every, seed=seed, progress=progress,
                           workers=workers)
    ddp.init_from_env()
    if train_data.skipped and ddp.rank_and_world()[0] == 0:
        shown = ", ".join(train_data.skipped[:3]) + (", ..." if len(train_data.skipped) > 3 else "")
        print(f"starmd: note: {len(train_data.skipped)} trajectories hold no training window of {config.window} "
              f"frames at this Δt range and are left out of training ({shown})", file=sys.stderr)
    trainer = Trainer(config, train_data, val_data, output, options, collate_windows, resume=resume,
                      overwrite=overwrite, device=device, init_weights=init_weights, record=record,
                      unseen_data=unseen_data)
    summary = trainer.fit()
    if trainer.rank == 0:
        atomic_write_json(Path(output) / "train" / "data.json", [str(p) for p in data])
        return summary
    return None
