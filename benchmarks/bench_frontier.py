"""Speed-fidelity frontier: hybrid speed over plain OpenMM and size-matched fidelity at each setting, one run.

For every system (chignolin CLN025, all its replicas as the reference, and the tetrapeptides of the data
folder) and every setting (jump x relaxation variant x inference history noise ``ctx_tau_inference`` x longest
model step ``max_step_ps``; ``--model-config`` changes how the model samples, e.g. its sampler, for every row):

- plain OpenMM ns/day: a short run of that system in this process (``--md-steps``, implicit-fast, the
  platform the hybrid uses);
- a hybrid run of ``--frames`` jumps via ``starmd simulate``'s :func:`run_simulation` (run.json records
  rejections and, once the simulator records it, raw validity), its ns/day from the run's own clock;
- :func:`openmm_starmd.analysis.size_matched.size_matched`: N generated frames vs the reference's second
  halves next to N first-half MD frames (φ/ψ, χ1 and PC JSD, RMSF r, TIC1 decorrelation ratio, energy KS
  and sd ratio with energies recomputed from the saved frames of both sides).

Rows are cached under ``--work`` (one folder per system and setting; an interrupted hybrid run resumes),
so a rerun only computes what is missing. Before each row the expected wall time is printed
(``--dry-run`` prints the whole plan and stops). One row per (system, setting) goes to ``--json`` and
``--md`` with the issue-13 goals per setting.

    python benchmarks/bench_frontier.py --systems CLN025 AMRV GSEL ICTP --jumps 1ns 100ps --frames 60 \\
        --work /tmp/frontier --json benchmarks/results/frontier_preview.json --md benchmarks/results/frontier_preview.md
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import mdtraj as md
import numpy as np
import openmm
import openmm.app as app
import openmm.unit as u
import torch

from openmm_starmd import prep
from openmm_starmd.analysis.energy import potential_energies
from openmm_starmd.analysis.matching import load_trajectory
from openmm_starmd.analysis.run_record import run_summary
from openmm_starmd.analysis.size_matched import size_matched_files
from openmm_starmd.analysis.validity import frame_validity
from openmm_starmd.atomic import atomic_write, atomic_write_json
from openmm_starmd.data.dataset import find_atlas_folders
from openmm_starmd.forcefields import PRESETS, build_system, fastest_platform, make_integrator
from openmm_starmd.simulation import JumpRejectedError, RelaxSettings
from openmm_starmd.simulation.run import run_simulation
from openmm_starmd.units import format_time, ns_per_day, parse_time

sys.path.insert(0, str(Path(__file__).parent))
from bench_fidelity import json_safe, model_sha256  # sibling benchmark script, not a package
from frontier_models import (
    INFERENCE_FIELDS,
    config_slug,
    model_max_step_ps,
    model_variant,
    parse_model_config,
    sampler_label,
)
from frontier_report import CHIGNOLIN, fmt, goals, markdown, step_label

PRESET = "implicit-fast"
MODEL_S_PER_JUMP = 0.3  # small preset, 20 sampler steps, one CPU thread (README); estimate only
ANALYSIS_S = 15.0       # size-matched comparison and energies of one row; estimate only
MIN_CPU_JUMPS = 5       # fewest jumps run in this session for a CPU-time speed


def relax_variant(text: str) -> RelaxSettings:
    """``"time_ps=5,minimize_iterations=0"`` -> RelaxSettings (``"default"`` or empty: the defaults)."""
    if text.strip() in ("", "default"):
        return RelaxSettings()
    fields = {f.name: f for f in dataclasses.fields(RelaxSettings)}
    values = {}
    for item in text.split(","):
        key, _, value = item.partition("=")
        key = key.strip()
        if key not in fields:
            raise SystemExit(f"--relax: unknown setting {key!r}; choose from {', '.join(fields)}")
        default = getattr(RelaxSettings(), key)
        kind = type(default) if default is not None else float
        values[key] = value.strip().lower() in ("1", "true", "yes") if kind is bool else kind(value)
    return RelaxSettings(**values)


def relax_label(relax: RelaxSettings) -> str:
    """The settings that differ from the defaults, ``key=value`` joined by commas (``default`` if none)."""
    base = RelaxSettings().describe()
    diff = [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in relax.describe().items() if base[k] != v]
    return ",".join(diff) or "default"


def setting_slug(jump_ps: float, relax: RelaxSettings, tau: float | None, step: float | None) -> str:
    ctx = "model" if tau is None else f"{tau:g}"
    text = f"jump{format_time(jump_ps).replace(' ', '')}_relax-{relax_label(relax)}_ctx{ctx}"
    text += "" if step is None else f"_step{step:g}ps"
    return text.replace("=", "").replace(",", "_")


def md_speed(folder: Path, steps: int, platform: openmm.Platform) -> dict:
    """Plain OpenMM ns/day of the system, measured now (same preset and platform as the hybrid), by the wall
    clock and by this process's CPU time (``cpu_ns_per_day``: what an unshared core would give)."""
    start = prep.load_pdb(folder / f"{folder.name}.pdb")
    system, topology, positions = build_system(start.topology, start.positions, PRESET)
    simulation = app.Simulation(topology, system, make_integrator(PRESET, 300.0, 1.0, seed=1), platform)
    simulation.context.setPositions(positions)
    simulation.minimizeEnergy(maxIterations=200)
    simulation.context.setVelocitiesToTemperature(300.0 * u.kelvin, 1)
    simulation.step(max(steps // 10, 10))
    wall, cpu = time.perf_counter(), time.process_time()
    simulation.step(steps)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    simulated = steps * PRESETS[PRESET].timestep_ps
    return {"steps": steps, "wall_s": wall, "cpu_s": cpu, "ns_per_day": ns_per_day(simulated, wall),
            "cpu_ns_per_day": ns_per_day(simulated, cpu)}


def reference_energies(folder: Path, work: Path) -> list[np.ndarray]:
    """Potential energies (kJ/mol) of every reference frame, cached in the work folder."""
    cache = work / folder.name / f"reference_energies_{PRESET}.npz"
    refs = sorted(folder.glob(f"{folder.name}_R*.xtc"))
    if cache.is_file():
        data = np.load(cache)
        if list(data["names"]) == [p.name for p in refs]:
            return [data[f"e{k}"] for k in range(len(refs))]
    topology = app.PDBFile(str(folder / f"{folder.name}.pdb")).topology
    values = [potential_energies(load_trajectory(p, folder / f"{folder.name}.pdb").xyz, topology, PRESET)
              for p in refs]
    cache.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(cache, "wb") as handle:
        np.savez(handle, names=np.array([p.name for p in refs]), **{f"e{k}": v for k, v in enumerate(values)})
    return values


def estimate_s(frames: int, relax: RelaxSettings, s_per_md_step: float) -> float:
    """Expected wall time of one row (s): model jumps, relaxation MD and minimisation, analysis."""
    steps = relax.time_ps / PRESETS[PRESET].timestep_ps + 2 * relax.minimize_iterations
    return frames * (MODEL_S_PER_JUMP + steps * s_per_md_step) + ANALYSIS_S


def hybrid_run(folder: Path, run_dir: Path, frames: int, jump_ps: float, model: str, relax: RelaxSettings,
               seed: int) -> dict:
    """Run (or resume, or extend) the hybrid simulation; returns its run.json record.

    A run that stopped because every proposal of a cycle failed the guards is kept as it is: resuming it
    would replay the same random numbers into the same failure."""
    record_path = run_dir / "run.json"
    old = json.loads(record_path.read_text()) if record_path.is_file() else None
    wanted = {"jump_ps": jump_ps, "model": model, "seed": seed, "relax": relax.describe()}
    same = old is not None and all(old["settings"].get(k) == v for k, v in wanted.items())
    if same and (old.get("status") == "failed" or old["jumps_done"] >= frames):
        return old
    try:
        if same:
            run_simulation(None, run_dir, time_ps=frames * jump_ps, resume=True)
        else:
            run_simulation(folder / f"{folder.name}.pdb", run_dir, time_ps=frames * jump_ps, jump_ps=jump_ps,
                           model=model, relax=relax, seed=seed, forcefield=PRESET, overwrite=True)
    except JumpRejectedError as exc:
        print(f"  hybrid run stopped: {exc}", flush=True)
    return json.loads(record_path.read_text())


def run_row(folder: Path, work: Path, jump_ps: float, relax: RelaxSettings, tau: float | None, step: float | None,
            args, md_before: dict | None, platform: openmm.Platform, model_sha: str | None, changes: dict) -> dict:
    """One (system, setting) row: hybrid run, size-matched fidelity, energies, validity, speed-up.

    Plain MD is timed just before and just after the hybrid run (``md_before``, measured here when None, and a
    new measurement) and their mean speed is the row's reference: on a shared machine the load changes within
    minutes. A cached row is returned without timing anything. ``changes``: the ``--model-config`` fields."""
    name = folder.name
    row_dir = work / name / (setting_slug(jump_ps, relax, tau, step) + (f"_{config_slug(changes)}" if changes else ""))
    max_step_ps = model_max_step_ps(args.model) if step is None else step
    key = {"system": name, "jump_ps": jump_ps, "relax": relax.describe(), "ctx_tau_inference": tau,
           "frames_requested": args.frames, "model": args.model, "model_sha256": model_sha, "seed": args.seed,
           "lag": args.lag, "max_step_ps": max_step_ps}
    if changes:  # only then, so rows cached before the option existed keep their key
        key["model_config"] = changes
    cached = row_dir / "row.json"
    if cached.is_file():
        row = json.loads(cached.read_text())
        if row.get("key") == key:
            print(f"  cached: {cached}", flush=True)
            return row
    if md_before is None:
        md_before = md_speed(folder, args.md_steps, platform)
    model = model_variant(args.model, work, ctx_tau_inference=tau, max_step_ps=step, **changes)
    start = time.perf_counter()
    load_before = os.getloadavg()[0]
    # Frames already written (a killed run's run.json lags behind its checkpoint; its XTC never does).
    xtc = row_dir / "run" / "traj.xtc"
    jumps_before = 0
    if xtc.is_file():
        with md.formats.XTCTrajectoryFile(str(xtc)) as handle:
            jumps_before = len(handle)
    cpu = time.process_time()
    record = hybrid_run(folder, row_dir / "run", args.frames, jump_ps, model, relax, args.seed)
    cpu = time.process_time() - cpu
    hybrid_wall = time.perf_counter() - start
    md_after = md_speed(folder, args.md_steps, platform)
    md_row = {key: 2.0 / (1.0 / md_before[key] + 1.0 / md_after[key]) for key in ("ns_per_day", "cpu_ns_per_day")}
    md_row.update(before=md_before, after=md_after, load_1min_before=load_before, load_1min_after=os.getloadavg()[0])
    new_jumps = record.get("jumps_done", 0) - jumps_before
    run_dir = row_dir / "run"
    row: dict = {"key": key, "system": name, "jump_ps": jump_ps, "relax": relax_label(relax),
                 "ctx_tau_inference": tau, "max_step_ps": max_step_ps, "status": record.get("status"),
                 "frames": record.get("jumps_done", 0),
                 "md": md_row, "hybrid": record.get("speed", {}), "hybrid_session_wall_s": hybrid_wall,
                 "run": run_summary(record)}
    row["speedup"] = (row["hybrid"].get("ns_per_day", float("nan")) / md_row["ns_per_day"]
                      if row["hybrid"] else float("nan"))
    # CPU time of this session's jumps (set-up and model loading included): robust to a shared machine's load.
    row["hybrid_cpu"] = {"jumps": new_jumps, "cpu_s": cpu,
                         "ns_per_day": ns_per_day(new_jumps * jump_ps, cpu) if new_jumps >= MIN_CPU_JUMPS
                         else float("nan")}
    row["speedup_cpu"] = row["hybrid_cpu"]["ns_per_day"] / md_row["cpu_ns_per_day"]
    if row["frames"] < 12:
        row["note"] = "too few frames for the size-matched comparison"
        return row
    gen = load_trajectory(run_dir / "traj.xtc", run_dir / "topology.pdb")
    row["relaxed_valid_fraction"] = float(frame_validity(gen).valid.mean())
    gen_e = potential_energies(gen.xyz, app.PDBFile(str(run_dir / "topology.pdb")).topology, PRESET)
    refs = [str(p) for p in sorted(folder.glob(f"{name}_R*.xtc"))]
    sized = size_matched_files([str(run_dir / "traj.xtc")], refs, str(folder / f"{name}.pdb"),
                               gen_top=str(run_dir / "topology.pdb"), lag=args.lag or f"{jump_ps:g}ps",
                               sample_energies=[gen_e], reference_energies=reference_energies(folder, work))
    row["size_matched"] = sized.to_dict()
    row["row_wall_s"] = time.perf_counter() - start
    row["finished_unix"] = time.time()
    atomic_write_json(cached, json_safe(row))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/md",
                        help="reference systems NAME/ (default ../shared/data/md)")
    parser.add_argument("--systems", nargs="+", help="system names (default: CLN025 and every tetrapeptide)")
    parser.add_argument("--tetrapeptides", type=int, help="take only the first K tetrapeptides (by name)")
    parser.add_argument("--jumps", nargs="+", default=["10ps", "100ps", "1ns"], help="jumps (default 10ps 100ps 1ns)")
    parser.add_argument("--frames", type=int, default=100, help="hybrid jumps per row (default 100)")
    parser.add_argument("--relax", nargs="+", default=["default"],
                        help="relaxation variants, each 'key=value,...' of RelaxSettings (default: 'default')")
    parser.add_argument("--ctx-tau", nargs="+", type=float,
                        help="inference history-noise levels ctx_tau_inference (default: the model's own)")
    parser.add_argument("--model-step", nargs="+",
                        help="longest model steps max_step_ps a jump is drawn in, e.g. 250ps (0: one step a jump; "
                             "default: the model's own)")
    parser.add_argument("--model", default="default", help="STAR-MD checkpoint folder or default")
    parser.add_argument("--model-config",
                        help="sampling fields of the model's config for every row, KEY=VALUE,... of "
                             f"{', '.join(INFERENCE_FIELDS)} "
                             "(e.g. deterministic_sampler=true,deterministic_steps=last)")
    parser.add_argument("--lag", help="TICA lag of the size-matched comparison (default: one jump)")
    parser.add_argument("--md-steps", type=int, default=2500, help="timed plain-MD steps per system (default 2500)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", required=True, help="cache folder (hybrid runs, rows, reference energies)")
    parser.add_argument("--json", default="benchmarks/results/frontier.json")
    parser.add_argument("--md", default="benchmarks/results/frontier.md")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and the estimated time, run nothing")
    args = parser.parse_args()
    torch.set_num_threads(1)

    changes = parse_model_config(args.model_config)  # a bad value stops here, before anything runs
    folders = find_atlas_folders(args.data)
    if args.systems:
        unknown = set(args.systems) - {f.name for f in folders}
        if unknown:
            raise SystemExit(f"unknown systems {sorted(unknown)} in {args.data}")
        folders = [f for f in folders if f.name in set(args.systems)]
    if args.tetrapeptides is not None:
        tetra = [f for f in folders if f.name != CHIGNOLIN][: args.tetrapeptides]
        folders = [f for f in folders if f.name == CHIGNOLIN] + tetra
    if args.frames < 12:
        raise SystemExit("--frames must be at least 12 (the size-matched comparison needs them)")
    jumps = [parse_time(j, "--jumps") for j in args.jumps]
    relaxes = [relax_variant(r) for r in args.relax]
    taus = args.ctx_tau or [None]
    steps = [None] if not args.model_step else [0.0 if x == "0" else parse_time(x, "--model-step")
                                                for x in args.model_step]
    settings = [(j, r, t, st) for j in jumps for r in relaxes for t in taus for st in steps]
    work = Path(args.work)
    sha = model_sha256(args.model)
    platform = fastest_platform(None)

    def fallback_step_s(folder: Path) -> float:
        meta = sorted(folder.glob(f"{folder.name}_R*.json"))
        speed = json.loads(meta[0].read_text()).get("ns_per_day", 300.0) if meta else 300.0
        return 86400.0 * PRESETS[PRESET].timestep_ps * 1e-3 / speed

    plan = [(f, s) for f in folders for s in settings]
    total = sum(estimate_s(args.frames, s[1], fallback_step_s(f)) for f, s in plan)
    print(f"plan: {len(folders)} systems x {len(settings)} settings = {len(plan)} rows, {args.frames} jumps each; "
          f"estimated {total / 60:.0f} min (from the reference runs' MD speed; refined per system below)", flush=True)
    if args.dry_run:
        for f, (j, r, t, st) in plan:
            estimate = estimate_s(args.frames, r, fallback_step_s(f))
            print(f"  {f.name:<7} {setting_slug(j, r, t, st):<40} ~{estimate:.0f} s")
        return
    rows, done_s, start, start_unix = [], 0.0, time.perf_counter(), time.time()
    for n_sys, folder in enumerate(folders):
        md_row = None  # this system's latest plain-MD timing, reused as the next computed row's "before"
        for jump_ps, relax, tau, step in settings:
            step_s = md_row["wall_s"] / md_row["steps"] if md_row else fallback_step_s(folder)
            slug = setting_slug(jump_ps, relax, tau, step)
            print(f"[{len(rows) + 1}/{len(plan)}] {folder.name} {slug}: row estimated "
                  f"{estimate_s(args.frames, relax, step_s):.0f} s", flush=True)
            row = run_row(folder, work, jump_ps, relax, tau, step, args, md_row, platform, sha, changes)
            if row.get("finished_unix", 0.0) >= start_unix:  # computed now, not read from the cache
                md_row = row["md"].get("after", md_row)
            rows.append(row)
            sm = row.get("size_matched", {}).get("ratio", {})
            print(f"  speed-up {fmt(row['speedup'], 1)}x, φ/ψ {fmt(sm.get('torsion_jsd'), 2)}x, χ1 "
                  f"{fmt(sm.get('chi1_jsd'), 2)}x, PC {fmt(sm.get('pc_jsd'), 2)}x floor; row took "
                  f"{row.get('row_wall_s', float('nan')):.0f} s", flush=True)
        done_s = time.perf_counter() - start
        print(f"system {n_sys + 1}/{len(folders)} done, {done_s / 60:.1f} min so far", flush=True)
    by_setting: dict[str, list[dict]] = {}
    for r in rows:
        by_setting.setdefault(f"jump {format_time(r['jump_ps'])}, relax {r['relax']}, ctx τ "
                              f"{'model' if r['ctx_tau_inference'] is None else r['ctx_tau_inference']}, model step "
                              f"{step_label(r)}", []).append(r)
    sampler = sampler_label(model_variant(args.model, work, **changes))
    result = {"header": f"Model `{args.model}` (sha256 {sha[:12] if sha else '-'}…), sampler: {sampler}"
                        f"{'' if not args.model_config else ' (--model-config ' + args.model_config + ')'}; "
                        f"{args.frames} jumps per row, seed "
                        f"{args.seed}, {PRESET}, platform {platform.getName()}, {os.cpu_count()}-core CPU (1-min load "
                        f"{os.getloadavg()[0]:.1f}), OpenMM {openmm.__version__}, mdtraj {md.__version__}; "
                        "hybrid ns/day from the run's cycle clock; plain MD ns/day measured in the same process "
                        "just before and after each row's hybrid run (harmonic mean).",
              "rows": rows, "goals": {k: goals(v) for k, v in by_setting.items()}, "wall_s": done_s}
    text = markdown(result)
    print(text)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.json, json_safe(result))
    with atomic_write(args.md) as handle:
        handle.write(text)


if __name__ == "__main__":
    main()
