"""The ``starmd simulate`` driver: prepare, run a hybrid simulation, write a resumable run folder.

Run folder layout: ``topology.pdb`` (the prepared start), ``traj.xtc`` (one frame per jump, at
k × jump), ``log.csv`` (one row per jump, see :mod:`.reporters`), ``checkpoint.chk`` (exact state after
the last complete jump) and ``run.json`` (settings, versions, status, speed). Per jump the frame and
log row are written before the checkpoint; on ``resume`` the trajectory and log are cut back to the
checkpoint's jump count, so after any interruption every frame is there exactly once.

A solvated run (``--forcefield explicit``) writes the whole box to ``topology.pdb`` (water, ions,
CRYST1), from which a resumed run rebuilds exactly the same System, and the protein alone to
``protein.pdb``; ``traj.xtc`` holds every atom, molecules wrapped whole into the box, or with
``protein_only`` the protein's atoms alone, unwrapped (the topology of that trajectory is ``protein.pdb``).
"""

from __future__ import annotations

import io
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import mdtraj as md
import numpy as np
import openmm.app as app
import openmm.unit as u
import torch
from tqdm import tqdm

from openmm_starmd.analysis.validity import frame_validity
from openmm_starmd.atomic import atomic_write, atomic_write_json, check_output_dir
from openmm_starmd.errors import StarMDError
from openmm_starmd.model.checkpoint import DEFAULT_MODEL, resolve_device
from openmm_starmd.runfolder import software_versions, truncate_xtc
from openmm_starmd.simulation.ensemble import StarMDEnsemble
from openmm_starmd.simulation.guards import GuardSettings
from openmm_starmd.simulation.hybrid import JumpRejectedError, StarMDSimulation
from openmm_starmd.simulation.proposer import available_proposers
from openmm_starmd.simulation.relax import RelaxSettings
from openmm_starmd.simulation.reporters import JumpLogReporter
from openmm_starmd.units import format_time, ns_per_day

FILES = ("topology.pdb", "protein.pdb", "traj.xtc", "log.csv", "checkpoint.chk", "run.json")


def member_files(out: Path, replicas: int, k: int) -> tuple[Path, Path]:
    """Trajectory and log of replica ``k``: traj.xtc and log.csv for one replica, traj_R{k}.xtc and
    log_R{k}.csv for an ensemble."""
    if replicas == 1:
        return out / "traj.xtc", out / "log.csv"
    return out / f"traj_R{k}.xtc", out / f"log_R{k}.csv"


class ProgressReporter:
    """tqdm bar over jumps showing simulated ns/day (OpenMM reporter protocol)."""

    def __init__(self, total: int, initial: int, jump_ps: float, rejections: Any) -> None:
        self._bar = tqdm(total=total, initial=initial, unit="jump", dynamic_ncols=True)
        self._jump_ps = jump_ps
        self._rejections = rejections  # () -> rejected proposals of the whole run
        self._start = time.perf_counter()
        self._done = 0

    def describeNextReport(self, simulation: app.Simulation) -> dict[str, Any]:
        return {"steps": 1, "periodic": None, "include": []}

    def report(self, simulation: app.Simulation, state: Any) -> None:
        self._done += 1
        rate = ns_per_day(self._done * self._jump_ps, time.perf_counter() - self._start)
        self._bar.set_postfix_str(f"{rate:,.0f} ns/day, {self._rejections()} rejected")
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()


def _truncate_log(path: Path, n_rows: int) -> None:
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True) if path.exists() else []
    with atomic_write(path) as handle:
        handle.writelines(lines[:1 + n_rows])


def _check_scalars(time_ps: float, jump_ps: float, temperature_k: float, seed: int) -> int:
    """Validate the numbers of a run before anything is read or written; returns the number of jumps."""
    if not (math.isfinite(jump_ps) and jump_ps > 0.0):
        raise StarMDError(f"--jump must be a positive time, got {jump_ps} ps: give e.g. 1ns")
    if not (math.isfinite(time_ps) and time_ps > 0.0):
        raise StarMDError(f"--time must be a positive time, got {time_ps} ps: give e.g. 100ns")
    if not (math.isfinite(temperature_k) and temperature_k > 0.0):
        raise StarMDError(f"--temperature must be a positive number of kelvin, got {temperature_k:g}: give e.g. 300")
    if not 0 <= int(seed) < 2**63:
        raise StarMDError(f"--seed must be a non-negative integer, got {seed}")
    total = round(time_ps / jump_ps)
    if total < 1:
        raise StarMDError(f"--time {format_time(time_ps)} is shorter than one {format_time(jump_ps)} jump: "
                          "give a longer time or a shorter jump")
    return total


def _model_setting(model: str) -> str:
    """What run.json records for ``--model``: a name as given, a checkpoint folder as an absolute path."""
    if model == DEFAULT_MODEL or model in available_proposers():
        return model
    return str(Path(model).resolve())


def _model_max_step_ps(proposer: Any) -> float | None:
    """Longest model step (ps) a STAR-MD proposer's jump is drawn in (0: one step a jump), as its rollout resolved
    it (the chain-length limit included); None for proposers without a rollout."""
    rollout = getattr(proposer, "rollout", None)
    return None if rollout is None else float(rollout.max_step_ps)


def _model_chi_draws(proposer: Any) -> dict[str, float] | None:
    """χ draws per proposal of a STAR-MD proposer with a χ head (:meth:`ModelConfig.chi_draw_setting`)."""
    model = getattr(proposer, "model", None)
    return None if model is None else model.config.chi_draw_setting()


def _prepared_pdb(input_path: str | os.PathLike) -> str:
    """The prepared structure as PDB text (kept in memory until every check has passed)."""
    from openmm_starmd import prep

    prepared = prep.prepare(input_path)
    text = io.StringIO()
    app.PDBFile.writeFile(prepared.topology, prepared.positions, text, keepIds=True)
    return text.getvalue()


def _read_pdb(text: str) -> tuple[app.Topology, Any]:
    """Topology and positions of PDB text; the box is kept only for a solvated structure."""
    from openmm_starmd.data.featurize import has_water

    pdb = app.PDBFile(io.StringIO(text))
    if not has_water(pdb.topology):
        pdb.topology.setPeriodicBoxVectors(None)
    return pdb.topology, pdb.positions


def _pdb_text(topology: app.Topology, positions: Any) -> str:
    text = io.StringIO()
    app.PDBFile.writeFile(topology, positions, text, keepIds=True)
    return text.getvalue()


def run_simulation(
    input_path: str | os.PathLike,
    output: str | os.PathLike,
    time_ps: float,
    jump_ps: float = 1000.0,
    model: str | None = DEFAULT_MODEL,
    relax: RelaxSettings | None = None,
    seed: int = 0,
    platform: str | None = None,
    forcefield: str = "implicit-fast",
    temperature_k: float = 300.0,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
    device: str | None = "auto",
    replicas: int = 1,
    protein_only: bool = False,
) -> Path:
    """Run (or resume) a hybrid simulation into the run folder ``output``.

    Every argument is checked, the input prepared, the System built and the model loaded before the
    first file is written: bad input leaves nothing behind.

    Parameters
    ----------
    input_path
        PDB/mmCIF file; prepared with :func:`openmm_starmd.prep.prepare` (ignored on resume).
    output
        Run folder.
    time_ps, jump_ps
        Total simulated time and time per jump, ps (``time_ps`` rounded to whole jumps).
    model
        ``"default"`` (the model shipped in openmm_starmd/weights/), a registered proposer name or a
        STAR-MD checkpoint folder.
    relax
        Relaxation settings (default :class:`RelaxSettings`).
    seed, platform, forcefield, temperature_k
        Random seed, OpenMM platform name (default fastest), force-field preset, temperature (K).
    overwrite
        Replace an existing run folder's files.
    resume
        Continue the run in ``output`` with the settings in its run.json (``time_ps`` may extend it).
    progress
        Show a tqdm bar (simulated ns/day, rejections).
    device
        Where the model runs: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:k``. Not a
        setting of the trajectory: a resumed run may use another device.
    replicas
        Independent trajectories (seeds ``seed`` … ``seed + replicas - 1``), the model batched over them
        (:class:`~openmm_starmd.simulation.ensemble.StarMDEnsemble`); more than one writes
        ``traj_R{k}.xtc`` and ``log_R{k}.csv`` per replica, one ``checkpoint.chk`` and one ``run.json``.
    protein_only
        Solvated runs: write the protein's atoms alone to the trajectory (topology ``protein.pdb``)
        instead of the whole box.

    Returns
    -------
    Path
        The run folder.
    """
    from openmm_starmd.forcefields import build_system, fastest_platform, get_preset, solvate

    out = Path(output)
    if resume:
        if not (out / "run.json").exists():
            raise StarMDError(f"{out} holds no run to resume (no run.json): run without --resume first")
        settings = json.loads((out / "run.json").read_text(encoding="utf-8"))["settings"]
        jump_ps, model, seed = settings["jump_ps"], settings["model"], settings["seed"]
        platform, forcefield = settings["platform"], settings["forcefield"]["name"]
        temperature_k, relax = settings["temperature_k"], RelaxSettings(
            # a run started before the retry existed resumes without it, as it began
            **{"retry_minimize_iterations": 0, **settings["relax"]})
        input_path, replicas = settings["input"], int(settings.get("replicas", 1))
        protein_only = bool(settings.get("protein_only", False))
        pdb_text = (out / "topology.pdb").read_text(encoding="utf-8")
    else:
        check_output_dir(out, overwrite)
        relax = relax if relax is not None else RelaxSettings()
    total = _check_scalars(time_ps, jump_ps, temperature_k, seed)
    if not (isinstance(replicas, int) and replicas >= 1):
        raise StarMDError(f"--replicas must be a whole number of at least 1, got {replicas}")
    torch_device = resolve_device(device)
    if protein_only and get_preset(forcefield).solvent != "explicit":
        raise StarMDError(f"--protein-only needs a solvated run: force field {forcefield!r} has no water to leave "
                          "out (use --forcefield explicit, or drop --protein-only)")
    fastest_platform(platform)
    model = DEFAULT_MODEL if model is None else model
    if not resume:
        pdb_text = _prepared_pdb(input_path)
        if get_preset(forcefield).solvent == "explicit":  # the water box is part of the written start
            pdb_text = _pdb_text(*solvate(*_read_pdb(pdb_text), forcefield))
    # A fresh run starts from the PDB text it writes, so a resumed run builds exactly the same System.
    topology, positions = _read_pdb(pdb_text)
    system, topology, positions = build_system(topology, positions, forcefield)
    common = {"jump": jump_ps, "relax": relax, "guards": GuardSettings(), "platform": platform, "seed": seed,
              "temperature": temperature_k}
    if replicas == 1:
        # StarMDSimulation resolves the model on its protein-only view (a solvated system's water is no residue).
        sim = StarMDSimulation(topology, system, model, device=torch_device, **common)
        members, ensemble = [sim], None
    else:
        ensemble = StarMDEnsemble(topology, system, model, replicas=replicas, device=torch_device, **common)
        members = ensemble.simulations
    if not resume:  # every check passed: now the folder is written
        model = _model_setting(model)
        out.mkdir(parents=True, exist_ok=True)
        for name in FILES:
            (out / name).unlink(missing_ok=True)
        for old in [*out.glob("traj_R*.xtc"), *out.glob("log_R*.csv")]:
            old.unlink()
        with atomic_write(out / "topology.pdb") as handle:
            handle.write(pdb_text)
        layout = members[0].solvent
        if layout.solvated:
            with atomic_write(out / "protein.pdb") as handle:
                handle.write(_pdb_text(layout.protein_topology, layout.protein(np.asarray(
                    positions.value_in_unit(u.nanometer))) * u.nanometer))
    start_nm = np.asarray(positions.value_in_unit(u.nanometer))
    checkpoint = out / "checkpoint.chk"
    if resume and checkpoint.exists():
        (members[0] if ensemble is None else ensemble).loadCheckpoint(checkpoint)
    else:
        for sim in members:
            sim.context.setPositions(positions)
    done = [sim.currentStep for sim in members]
    for k in range(replicas):
        xtc, log_path = member_files(out, replicas, k)
        truncate_xtc(xtc, done[k])
        _truncate_log(log_path, done[k])
    settings = {"input": str(Path(input_path).resolve()) if input_path else None,
                "time_ps": total * jump_ps, "jump_ps": jump_ps, "model": model, "seed": seed, "replicas": replicas,
                "platform": members[0].context.getPlatform().getName(),
                "forcefield": get_preset(forcefield).describe(),
                "temperature_k": temperature_k, "relax": relax.describe(), "protein_only": protein_only,
                "guards": members[0].guard_settings.describe(), "proposer": type(members[0].proposer).__name__,
                "side_chains": "rigid" if members[0].side_chains is None else "chi head",
                "model_max_step_ps": _model_max_step_ps(members[0].proposer),
                "model_chi_draws": _model_chi_draws(members[0].proposer)}
    # a seed fixes the run at a given torch thread count (reductions split differently with more threads)
    record: dict[str, Any] = {"settings": settings, "device": str(members[0].device), "versions": software_versions(),
                              "torch_threads": torch.get_num_threads(),
                              "status": "running", "jumps_done": sum(done), "jumps_total": total * replicas}
    atomic_write_json(out / "run.json", record)

    logs = []
    bar = ProgressReporter(total * replicas, sum(done), jump_ps,
                           lambda: sum(sum(sim.rejections.values()) for sim in members)) if progress else None
    for k, sim in enumerate(members):
        xtc, log_path = member_files(out, replicas, k)
        logs.append(JumpLogReporter(log_path, 1, start_nm, topology, append=done[k] > 0))
        sim.reporters += [_trajectory_reporter(xtc, sim, protein_only), logs[-1]]
        if bar is not None:
            sim.reporters.append(bar)
    if ensemble is None:
        members[0].reporters.append(app.CheckpointReporter(str(checkpoint), 1))
    wall = time.perf_counter()
    status = "interrupted"
    try:
        if ensemble is None:
            members[0].step(max(total - done[0], 0))
        else:
            while ensemble.running(total):
                ensemble.run_until(total)
                ensemble.saveCheckpoint(checkpoint)
        status = "failed" if ensemble is not None and ensemble.failed else "complete"
    except JumpRejectedError:
        status = "failed"
        raise
    finally:
        wall = time.perf_counter() - wall
        for log in logs:
            log.close()
        if bar is not None:
            bar.close()
        steps = [sim.currentStep for sim in members]
        summary = members[0] if ensemble is None else ensemble
        speed = summary.speed()
        speed["session_wall_s"] = wall
        speed["session_ns_per_day"] = ns_per_day((sum(steps) - sum(done)) * jump_ps, wall)
        record.update(status=status, jumps_done=sum(steps), speed=speed,
                      rejections=_sum_counts([sim.rejections for sim in members]),
                      halvings=sum(sim.halvings for sim in members),
                      validity=_validity(summary.validity(), [member_files(out, replicas, k)[0]
                                                              for k in range(replicas)], topology,
                                         members[0].solvent, protein_only))
        if members[0].solvent.solvated:
            record["solvent"] = {"overlapping": sum(sim.solvent_stats.overlapping for sim in members),
                                 "moved": sum(sim.solvent_stats.moved for sim in members)}
        if ensemble is not None:
            record["members"] = [{"replica": k, "seed": seed + k, "jumps_done": steps[k],
                                  "trajectory": member_files(out, replicas, k)[0].name,
                                  "status": "failed" if k in ensemble.failed else status,
                                  "error": ensemble.failed.get(k), "validity": sim.validity(),
                                  "rejections": sim.rejections}
                                 for k, sim in enumerate(members)]
        atomic_write_json(out / "run.json", record)
    return out


def _sum_counts(counts: list[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for part in counts:
        for key, value in part.items():
            total[key] = total.get(key, 0) + value
    return total


def _trajectory_reporter(xtc: Path, sim: StarMDSimulation, protein_only: bool) -> app.XTCReporter:
    """The run's XTC reporter: every atom (molecules wrapped whole into the box), or the protein alone."""
    if protein_only and sim.solvent.solvated:
        return app.XTCReporter(str(xtc), 1, append=xtc.exists(), enforcePeriodicBox=False,
                               atomSubset=[int(i) for i in sim.solvent.protein_atoms])
    return app.XTCReporter(str(xtc), 1, append=xtc.exists())


def _validity(raw: dict[str, Any], xtcs: list[Path], topology: app.Topology, layout: Any = None,
              protein_only: bool = False) -> dict[str, Any]:
    """Raw validity and rejection rate (whole run) beside the validity of the written frames, as
    ``starmd validate`` scores them (:func:`~openmm_starmd.analysis.validity.frame_validity` on the XTCs),
    on the protein's atoms only."""
    solvated = layout is not None and layout.solvated
    md_top = md.Topology.from_openmm(layout.protein_topology if solvated and protein_only else topology)

    def protein_frames(path: Path) -> md.Trajectory:
        traj = md.load(str(path), top=md_top)
        return traj.atom_slice(layout.protein_atoms) if solvated and not protein_only else traj

    valid = [frame_validity(protein_frames(x)).valid for x in xtcs if x.exists() and x.stat().st_size]
    flat = np.concatenate(valid) if valid else np.zeros(0, dtype=bool)
    return {**raw, "frames": len(flat),
            "relaxed_valid_fraction": float(flat.mean()) if len(flat) else float("nan")}
