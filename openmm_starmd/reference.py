"""Plain OpenMM reference MD written in the ATLAS layout (``starmd md``).

Each replica starts from the prepared input structure: energy minimisation, velocities drawn at
the bath temperature, ``equilibration_ps`` of Langevin dynamics, then one frame every ``stride_ps``
for ``time_ps``. The folder ``OUTPUT/NAME/`` holds

* ``NAME.pdb``: the topology, with the first saved frame of replica 1 as coordinates, no box;
* ``NAME_R{k}.xtc``: frames of replica ``k``, time stamps ``stride, 2 stride, ...`` ps counted from
  the end of equilibration (the convention of the shared reference data), no box;
* ``NAME_R{k}.json``: every setting that decides the physics, with the same keys as the shared
  reference data, plus the measured speed.

Replica ``k`` (1-based) seeds its velocities and its Langevin integrator with ``seed + k``.

Restart design (the simplest one we found that survives SIGKILL at any instant):
everything is built in a hidden sibling folder ``OUTPUT/.NAME.work`` and renamed to ``OUTPUT/NAME``
only when every replica is complete, so ``OUTPUT/NAME`` is never half-written. Frames go to
per-chunk XTC files ``R{k}/chunk_*.xtc``; after each chunk (every ``checkpoint_interval_s`` of wall
time, and at the end) ``R{k}/progress.json`` is replaced atomically. It names the chunks written
so far, the frame count, and the simulation state (an OpenMM checkpoint, base64, plus a portable
XML ``State``). A chunk that is not listed in ``progress.json`` does not exist for the run, so a
kill between writing a chunk and recording it only loses that chunk, which is recomputed. On
``--resume`` the OpenMM checkpoint is loaded (exact continuation, random stream included); if the
platform changed and it cannot be, the XML state is used with a fresh integrator seed. A finished
replica concatenates its chunks into ``NAME_R{k}.xtc`` and then writes ``NAME_R{k}.json``, which
marks it done.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

import mdtraj
import numpy as np
import openmm
import openmm.app as app
import openmm.unit as u
from tqdm import tqdm

from openmm_starmd.atomic import atomic_write, atomic_write_json, check_output_dir, temporary_path
from openmm_starmd.errors import StarMDError
from openmm_starmd.forcefields import (
    DEFAULT_PRESET,
    ForceFieldPreset,
    build_system,
    fastest_platform,
    get_preset,
    make_integrator,
    openmm_seed,
)
from openmm_starmd.prep import load_pdb
from openmm_starmd.units import PS_PER_NS, ns_per_day

INTEGRATOR = "LangevinMiddleIntegrator"
# Fresh integrator seeds after a platform change must not replay the stream of the first session.
_RESEED_OFFSET = 1_000_003
# Settings that must match for a run to be resumed.
_RUN_KEYS = ("input_sha256", "preset", "temperature_k", "friction_per_ps", "time_ps", "stride_ps",
             "equilibration_ps", "replicas", "seed")


def work_dir(output: str | os.PathLike, name: str) -> Path:
    """The hidden folder in which ``OUTPUT/NAME`` is built before it is moved into place."""
    return Path(output) / f".{name}.work"


def _steps(span_ps: float, timestep_ps: float, what: str) -> int:
    """Whole number of integrator steps in ``span_ps``, refusing spans that are not a multiple."""
    steps = round(span_ps / timestep_ps)
    if abs(steps * timestep_ps - span_ps) > 1e-6 * max(span_ps, timestep_ps):
        raise StarMDError(f"{what} {span_ps:g} ps is not a multiple of the {timestep_ps:g} ps time step: "
                          "round it")
    return steps


def _plan(time_ps: float, stride_ps: float, equilibration_ps: float, replicas: int, preset: ForceFieldPreset,
          temperature_k: float, friction_per_ps: float, seed: int) -> dict:
    """Check the request and derive step counts; raises :class:`StarMDError` on bad values."""
    if not time_ps > 0 or not stride_ps > 0 or not equilibration_ps >= 0:
        raise StarMDError("--time and --stride must be positive and --equilibration not negative")
    if stride_ps > time_ps:
        raise StarMDError(f"--stride {stride_ps:g} ps is longer than --time {time_ps:g} ps: "
                          "shorten the stride")
    frames = round(time_ps / stride_ps)
    if abs(frames * stride_ps - time_ps) > 1e-6 * time_ps:
        raise StarMDError(f"--time {time_ps:g} ps is not a multiple of --stride {stride_ps:g} ps: round it")
    if replicas < 1:
        raise StarMDError(f"--replicas must be at least 1, got {replicas}")
    if not temperature_k > 0 or not friction_per_ps >= 0:
        raise StarMDError("--temperature must be positive and --friction not negative")
    if seed < 0:
        raise StarMDError(f"--seed must not be negative, got {seed}")
    return {
        "frames": frames,
        "stride_steps": _steps(stride_ps, preset.timestep_ps, "--stride"),
        "equilibration_steps": round(equilibration_ps / preset.timestep_ps),
    }


def _write_xtc(path: Path, xyz: np.ndarray, times_ps: np.ndarray, steps: np.ndarray) -> None:
    """Write frames atomically. ``xyz`` is [T, n_atoms, 3] in nm, ``times_ps`` and ``steps`` are [T]."""
    tmp = temporary_path(path)
    try:
        with mdtraj.formats.XTCTrajectoryFile(str(tmp), "w") as handle:
            handle.write(xyz.astype(np.float32), time=times_ps.astype(np.float32),
                         step=steps.astype(np.int32))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _read_xtc(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames of an XTC file: xyz [T, n_atoms, 3] nm, times [T] ps, steps [T]."""
    with mdtraj.formats.XTCTrajectoryFile(str(path), "r") as handle:
        xyz, times, steps, _ = handle.read()
    return xyz, times, steps


class _Replica:
    """One replica's simulation, its chunked frames and its checkpoint in ``work/R{k}``."""

    def __init__(self, work: Path, k: int, run: dict, plan: dict, preset: ForceFieldPreset,
                 system: openmm.System, topology: app.Topology, positions: u.Quantity, n_keep: int,
                 platform: openmm.Platform) -> None:
        self.k, self.run, self.plan, self.preset, self.n_keep = k, run, plan, preset, n_keep
        self.folder = work / f"R{k}"
        self.progress_path = self.folder / "progress.json"
        self.seed = run["seed"] + k
        self.platform = platform
        self.progress = json.loads(self.progress_path.read_text()) if self.progress_path.is_file() else {}
        reseed = self.seed + _RESEED_OFFSET * (self.progress.get("sessions", 0) + 1)
        integrator = make_integrator(preset, run["temperature_k"], run["friction_per_ps"], self.seed)
        self.simulation = app.Simulation(topology, system, integrator, platform)
        self.simulation.context.setPositions(positions)
        if self.progress:
            self._restore(reseed)

    def _restore(self, reseed: int) -> None:
        context = self.simulation.context
        try:
            context.loadCheckpoint(base64.b64decode(self.progress["checkpoint"]))
        except openmm.OpenMMException:
            # A checkpoint only loads on the platform (and build) that wrote it; the XML state always does.
            tqdm.write(f"starmd: note: the checkpoint of R{self.k} is from {', '.join(self.progress['platforms'])}; "
                       "continuing from its saved state with a fresh random stream", file=sys.stderr)
            self.simulation.integrator.setRandomNumberSeed(openmm_seed(reseed))
            context.reinitialize()
            context.setState(openmm.XmlSerializer.deserialize(self.progress["state"]))

    def _save_progress(self, frames: int, chunks: list[str], wall_s: float) -> None:
        context = self.simulation.context
        state = context.getState(getPositions=True, getVelocities=True, getParameters=True)
        platforms = self.progress.get("platforms", [])
        if self.platform.getName() not in platforms:
            platforms = [*platforms, self.platform.getName()]
        self.progress = {
            "frames": frames, "chunks": chunks, "wall_s": wall_s, "platforms": platforms,
            "sessions": self.progress.get("sessions", 0),
            "checkpoint": base64.b64encode(context.createCheckpoint()).decode("ascii"),
            "state": openmm.XmlSerializer.serialize(state),
        }
        atomic_write_json(self.progress_path, self.progress)

    def simulate(self, checkpoint_interval_s: float, show_progress: bool) -> None:
        """Minimise and equilibrate (fresh start) and produce the missing frames, checkpointing as it goes."""
        stride_steps, frames = self.plan["stride_steps"], self.plan["frames"]
        dt = self.preset.timestep_ps
        equil_ps = self.plan["equilibration_steps"] * dt
        resumed = bool(self.progress)
        if resumed:
            self.progress["sessions"] = self.progress.get("sessions", 0) + 1
        done = self.progress.get("frames", 0)
        chunks = list(self.progress.get("chunks", []))
        wall_base = self.progress.get("wall_s", 0.0)
        self.folder.mkdir(exist_ok=True)
        stride_ps = self.run["stride_ps"]
        bar = tqdm(total=round(equil_ps + frames * stride_ps, 6), unit="ps", disable=not show_progress,
                   initial=round(equil_ps + done * stride_ps, 6) if resumed else 0,
                   desc=f"{self.run['name']} R{self.k}", dynamic_ncols=True)
        start = time.monotonic()
        simulated_ps = 0.0

        def advance(steps: int) -> None:
            nonlocal simulated_ps
            self.simulation.step(steps)
            simulated_ps += steps * dt
            bar.update(steps * dt)
            speed = ns_per_day(simulated_ps, time.monotonic() - start)
            bar.set_postfix_str(f"{speed:.0f} ns/day", refresh=False)

        with bar:
            if not resumed:
                self.simulation.minimizeEnergy()
                temperature = self.run["temperature_k"] * u.kelvin
                self.simulation.context.setVelocitiesToTemperature(temperature, openmm_seed(self.seed))
                remaining = self.plan["equilibration_steps"]
                while remaining > 0:
                    advance(min(stride_steps, remaining))
                    remaining -= min(stride_steps, remaining)
                # Production time (and XTC time stamps) count from the end of equilibration.
                self.simulation.context.setTime(0.0)
                self.simulation.currentStep = 0
                self._save_progress(0, chunks, time.monotonic() - start)
            buffer: list[np.ndarray] = []
            next_save = time.monotonic() + checkpoint_interval_s
            for frame in range(done + 1, frames + 1):
                advance(stride_steps)
                state = self.simulation.context.getState(getPositions=True)
                buffer.append(state.getPositions(asNumpy=True).value_in_unit(u.nanometer)[: self.n_keep])
                if time.monotonic() >= next_save or frame == frames:
                    first = frame - len(buffer) + 1
                    chunk = f"chunk_{first:07d}_{frame:07d}.xtc"
                    index = np.arange(first, frame + 1)
                    _write_xtc(self.folder / chunk, np.stack(buffer), index * stride_ps,
                               index * stride_steps)
                    chunks.append(chunk)
                    self._save_progress(frame, chunks, wall_base + time.monotonic() - start)
                    buffer = []
                    next_save = time.monotonic() + checkpoint_interval_s

    def finish(self, work: Path, metadata: dict) -> None:
        """Concatenate the chunks into ``NAME_R{k}.xtc``, then write ``NAME_R{k}.json`` (the done marker)."""
        name = self.run["name"]
        parts = [_read_xtc(self.folder / chunk) for chunk in self.progress["chunks"]]
        xyz = np.concatenate([part[0] for part in parts])
        if len(xyz) != self.plan["frames"]:
            raise RuntimeError(f"replica {self.k} has {len(xyz)} frames, expected {self.plan['frames']}")
        _write_xtc(work / f"{name}_R{self.k}.xtc", xyz, np.concatenate([part[1] for part in parts]),
                   np.concatenate([part[2] for part in parts]))
        wall_s = float(self.progress["wall_s"])
        simulated_ps = self.plan["frames"] * self.run["stride_ps"]
        atomic_write_json(work / f"{name}_R{self.k}.json", {
            **metadata,
            "seed": self.seed, "replica": self.k,
            "platform": "+".join(self.progress["platforms"]),
            "wall_s": round(wall_s, 1), "ns_per_day": round(ns_per_day(simulated_ps, wall_s), 1),
            "sessions": self.progress.get("sessions", 0) + 1,
        })
        shutil.rmtree(self.folder)


def _metadata(run: dict, plan: dict, preset: ForceFieldPreset, topology: app.Topology, n_keep: int) -> dict:
    """The settings shared by every replica's JSON, keyed like the shared reference data."""
    dt = preset.timestep_ps
    n_residues = len({atom.residue.index for atom in list(topology.atoms())[:n_keep]})
    return {
        "name": run["name"], "source": run["source"], "sequence": run.get("sequence"), "chain": None,
        "forcefield": list(preset.files), "preset": preset.name, "solvent": preset.solvent,
        "nonbonded": preset.nonbonded_method,
        "nonbonded_cutoff_nm": None if preset.nonbonded_method == "NoCutoff" else preset.nonbonded_cutoff_nm,
        "constraints": preset.constraints, "hydrogen_mass_amu": preset.hydrogen_mass_amu,
        "temperature_K": run["temperature_k"], "friction_per_ps": run["friction_per_ps"], "timestep_ps": dt,
        "integrator": INTEGRATOR, "minimised": True,
        "equilibration_ps": round(plan["equilibration_steps"] * dt, 6),
        "stride_ps": run["stride_ps"], "frames": plan["frames"],
        "ns": round(plan["frames"] * run["stride_ps"] / PS_PER_NS, 9),
        "base_seed": run["seed"], "n_atoms": n_keep, "n_residues": n_residues, "openmm": openmm.__version__,
    }


def _prepare_work(output: Path, name: str, run: dict, resume: bool, overwrite: bool) -> Path | None:
    """Create or reopen the work folder; ``None`` means the run is already complete (resume)."""
    final, work = output / name, work_dir(output, name)
    if resume and overwrite:
        raise StarMDError("--resume and --overwrite contradict each other: pass only one")
    settings_path = work / "run.json"
    if resume and settings_path.is_file():
        saved = json.loads(settings_path.read_text())
        for key in _RUN_KEYS:
            if saved.get(key) != run[key]:
                raise StarMDError(f"cannot resume {final}: {key} was {saved.get(key)!r}, now {run[key]!r}; "
                                  "repeat the original options or pass --overwrite to start over")
        return work
    if resume and final.is_dir() and any(final.iterdir()) and not work.exists():
        return None
    check_output_dir(final, overwrite)
    if work.exists() and not overwrite and not resume:
        raise StarMDError(f"an interrupted run is in {work}: pass --resume to continue it or --overwrite "
                          "to start over")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    atomic_write_json(settings_path, run)
    return work


def run_reference_md(
    input: str | os.PathLike,
    output: str | os.PathLike,
    *,
    name: str | None = None,
    time_ps: float = 10_000.0,
    stride_ps: float = 10.0,
    equilibration_ps: float = 200.0,
    replicas: int = 3,
    forcefield: str = DEFAULT_PRESET,
    temperature_k: float = 300.0,
    friction_per_ps: float = 1.0,
    seed: int = 0,
    platform: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    checkpoint_interval_s: float = 60.0,
    show_progress: bool = True,
    source: str | None = None,
    sequence: str | None = None,
) -> Path:
    """Run plain OpenMM Langevin MD of a prepared protein and write ``output/name`` in the ATLAS layout.

    Parameters
    ----------
    input
        Prepared PDB (or mmCIF) with hydrogens.
    output
        Output root folder; the run is written to ``output/name``.
    name
        System name; default the input file stem.
    time_ps, stride_ps, equilibration_ps
        Saved simulated time per replica, time between saved frames, and unsaved equilibration, ps.
        ``time_ps`` must be a multiple of ``stride_ps``, and ``stride_ps`` of the preset's time step.
    replicas
        Number of independent replicas; replica ``k`` (1-based) uses the seed ``seed + k``.
    forcefield
        Force-field preset name (:data:`openmm_starmd.forcefields.PRESETS`).
    temperature_k, friction_per_ps
        Langevin bath temperature (K) and friction (1/ps).
    platform
        OpenMM platform name; default the fastest available.
    resume
        Continue an interrupted run from its checkpoints (settings must match).
    overwrite
        Replace an existing ``output/name`` (only once the new run is complete).
    checkpoint_interval_s
        Wall-clock seconds between checkpoints; 0 checkpoints after every frame.
    show_progress
        Show a tqdm bar per replica with ns/day and time left.
    source, sequence
        Origin recorded in ``NAME_R{k}.json``: default the input file name; a peptide built from a
        sequence records ``source`` None and its ``sequence``, as the shared reference data does.

    Returns
    -------
    Path
        The finished folder ``output/name``.
    """
    input_path, output = Path(input), Path(output)
    name = name or input_path.stem
    if not name or Path(name).name != name or name.startswith("."):
        raise StarMDError(f"--name {name!r} must be a plain file name without '/' or a leading dot")
    if checkpoint_interval_s < 0:
        raise StarMDError(f"checkpoint interval must not be negative, got {checkpoint_interval_s:g} s")
    preset = get_preset(forcefield)
    plan = _plan(time_ps, stride_ps, equilibration_ps, replicas, preset, temperature_k, friction_per_ps, seed)
    prepared = load_pdb(input_path)
    topology, positions = prepared.topology, prepared.positions
    n_keep = topology.getNumAtoms()
    system, sim_topology, sim_positions = build_system(topology, positions, preset)
    chosen_platform = fastest_platform(platform)
    run = {
        "name": name, "source": None if sequence else source or input_path.name, "sequence": sequence,
        "input_sha256": hashlib.sha256(input_path.read_bytes()).hexdigest(),
        "preset": preset.name,
        "temperature_k": float(temperature_k), "friction_per_ps": float(friction_per_ps),
        "time_ps": float(time_ps), "stride_ps": float(stride_ps), "equilibration_ps": float(equilibration_ps),
        "replicas": int(replicas), "seed": int(seed),
    }
    final = output / name
    work = _prepare_work(output, name, run, resume, overwrite)
    if work is None:
        return final
    metadata = _metadata(run, plan, preset, topology, n_keep)
    for k in range(1, replicas + 1):
        if (work / f"{name}_R{k}.json").is_file():
            # Done; a kill may have interrupted the removal of its chunks.
            shutil.rmtree(work / f"R{k}", ignore_errors=True)
            continue
        replica = _Replica(work, k, run, plan, preset, system, sim_topology, sim_positions, n_keep,
                           chosen_platform)
        replica.simulate(checkpoint_interval_s, show_progress)
        replica.finish(work, metadata)
    first_frame = _read_xtc(work / f"{name}_R1.xtc")[0][0]
    with atomic_write(work / f"{name}.pdb") as handle:
        app.PDBFile.writeFile(topology, first_frame * u.nanometer, handle, keepIds=True)
    _publish(work, final)
    (final / "run.json").unlink(missing_ok=True)
    return final


def _publish(work: Path, final: Path) -> None:
    """Move the finished work folder to ``final``; an old ``final`` is replaced only at that moment."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old.{os.getpid()}")
        os.replace(final, old)
    os.replace(work, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
