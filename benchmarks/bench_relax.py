"""Which relaxation protocol returns frames from the MD ensemble, and what it costs.

For each named setting of :data:`SWEEP` (``RelaxSettings`` overrides), one process runs, on chignolin
with the shipped default model at ``--jump`` (default 1 ns): plain OpenMM MD for its ns/day, then
``--jumps`` hybrid cycles whose frames go to an XTC file; the potential energies of those frames are
recomputed from the file (implicit-fast, the reference's force field) and compared with the energies of
the reference MD frames (``../shared/data/md/CLN025``, every replica, recomputed the same way): mean
shift in reference-sd units (goal |·| ≤ 0.25), sd ratio (goal 0.8–1.25), KS statistic and p, next to
the same numbers for replica R2 against R1 (the MD-vs-MD floor). Cost: seconds per cycle and hybrid ns/day
over plain ns/day (goal ≥ 100), both measured in the same process.

    python benchmarks/bench_relax.py --settings default free2 --jumps 100

Results merge into ``benchmarks/results/relax.json`` (one entry per setting, replaced when re-run) and
``relax.md`` is rewritten from all entries.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import openmm.app as app
import openmm.unit as u
import torch

from openmm_starmd.analysis.energy import compare_energies, trajectory_energies
from openmm_starmd.atomic import atomic_write, atomic_write_json
from openmm_starmd.forcefields import build_system, fastest_platform
from openmm_starmd.simulation import JumpRejectedError, RelaxSettings, StarMDSimulation
from openmm_starmd.units import ns_per_day

sys.path.insert(0, str(Path(__file__).parent))
from bench_speed import plain_md

PRESET = "implicit-fast"
# Named protocols: overrides of RelaxSettings() (the shipped defaults are "default").
SWEEP: dict[str, dict] = {
    "default": {},
    "shipped_before": {"time_ps": 1.0, "ramp_stages": 4, "clash_iterations": 0, "velocities": "fresh",
                       "friction_per_ps": None, "minimize_iterations": 50},
    "clash_relief": {"time_ps": 1.0, "ramp_stages": 4, "clash_iterations": 200, "velocities": "fresh",
                     "friction_per_ps": None, "minimize_iterations": 50},
    "friction10": {"time_ps": 1.0, "friction_per_ps": 10.0},
    "md2": {"time_ps": 2.0, "friction_per_ps": None},
    "md1_ramp2": {"time_ps": 1.0, "ramp_stages": 2},
    "md2_kept": {"time_ps": 2.0, "velocities": "kept"},
}


class _XtcFrames:
    """Frames of every reported cycle (reporter protocol), in memory."""

    def __init__(self) -> None:
        self.xyz: list[np.ndarray] = []

    def describeNextReport(self, simulation: app.Simulation) -> dict:
        return {"steps": 1, "periodic": False, "include": ["positions"]}

    def report(self, simulation: app.Simulation, state) -> None:
        self.xyz.append(state.getPositions(asNumpy=True).value_in_unit(u.nanometer).astype(np.float32))


def reference_energies(reference_dir: Path) -> dict[str, np.ndarray]:
    """Energies (kJ/mol) of every replica ``NAME_R{k}.xtc`` of an ATLAS-layout folder."""
    name = reference_dir.name
    return {xtc.stem: trajectory_energies(xtc, reference_dir / f"{name}.pdb", PRESET)
            for xtc in sorted(reference_dir.glob(f"{name}_R*.xtc"))}


def run_setting(name: str, overrides: dict, reference_dir: Path, jumps: int, jump_ps: float, seed: int,
                scratch: Path, md_steps: int) -> dict:
    """Plain MD speed, then ``jumps`` hybrid cycles with ``RelaxSettings(**overrides)``; energies and cost."""
    import mdtraj as md

    top_path = reference_dir / f"{reference_dir.name}.pdb"
    pdb = app.PDBFile(str(top_path))
    system, topology, positions = build_system(pdb.topology, pdb.positions, PRESET)
    platform = fastest_platform("CPU")
    plain = plain_md(topology, system, positions, PRESET, platform, md_steps)
    relax = RelaxSettings(**overrides)
    sim = StarMDSimulation(topology, system, "default", jump=jump_ps * u.picosecond, relax=relax,
                           platform=platform, seed=seed)
    sim.context.setPositions(positions)
    frames = _XtcFrames()
    sim.reporters.append(frames)
    failed = 0
    start = time.perf_counter()
    while sim.currentStep < jumps and failed < jumps:
        try:
            sim.step(1)
        except JumpRejectedError:
            failed += 1
    wall = time.perf_counter() - start
    # Energies from the saved file, exactly as a user's trajectory would be judged (XTC precision).
    xtc = scratch / f"relax_{name}.xtc"
    md.Trajectory(np.stack(frames.xyz), md.Topology.from_openmm(topology)).save_xtc(str(xtc))
    energies = trajectory_energies(xtc, top_path, PRESET)
    hybrid_ns_day = ns_per_day(sim.currentStep * jump_ps, wall)
    proposals = sim.currentStep + sum(sim.rejections.values())
    return {
        "setting": name, "relax": relax.describe(), "jump_ps": jump_ps, "seed": seed, "cycles": sim.currentStep,
        "failed_cycles": failed, "rejections": sim.rejections, "proposals": proposals,
        "rejected_fraction": sum(sim.rejections.values()) / max(proposals, 1),
        "seconds_per_cycle": wall / max(sim.currentStep, 1), "hybrid_ns_per_day": hybrid_ns_day,
        "plain_md": plain, "speed_ratio": hybrid_ns_day / plain["ns_per_day"],
        "model_share": sim.model_s / max(sim.wall_s, 1e-12), "openmm_share": sim.openmm_s / max(sim.wall_s, 1e-12),
        "energies": energies.tolist(),
    }


def summarise(entry: dict, reference: np.ndarray) -> dict:
    """Energy comparison of one entry with the pooled reference, and whether the goals are met."""
    cmp = compare_energies(np.asarray(entry["energies"]), reference)
    goals = {"mean_within_0.25_sd": abs(cmp["mean_diff_in_ref_sd"]) <= 0.25,
             "sd_ratio_0.8_1.25": 0.8 <= cmp["sd_ratio"] <= 1.25, "speed_ratio_100": entry["speed_ratio"] >= 100.0}
    q = np.percentile(np.asarray(entry["energies"]), [10, 50, 99])
    return {**cmp, "p10": float(q[0]), "p50": float(q[1]), "p99": float(q[2]), "goals": goals,
            "all_goals": all(goals.values())}


def write_markdown(path: Path, results: dict) -> None:
    floor = results["floor"]
    lines = [
        "# Relaxation protocol sweep: energies of hybrid frames vs MD (chignolin, 1 ns jumps)",
        "",
        f"Reference: {', '.join(f'{k} ({v} frames)' for k, v in results['reference_frames'].items())}, "
        f"energies recomputed with `{PRESET}` from the saved frames; pooled mean "
        f"{results['reference_mean']:.1f}, sd {results['reference_sd']:.1f} kJ/mol "
        f"(p10 {results['reference_p10']:.0f}, p99 {results['reference_p99']:.0f}). "
        f"MD-vs-MD floor (R2 vs R1): mean shift {floor['mean_diff_in_ref_sd']:+.2f} sd, "
        f"sd ratio {floor['sd_ratio']:.2f}, KS {floor['ks_statistic']:.3f} (p {floor['ks_pvalue']:.2g}).",
        "Hybrid frames: shipped default model, seed per row, energies recomputed from the written XTC. "
        "Plain MD and the hybrid are timed in the same process; the machine is a shared 2-core CPU "
        "(timings noisy).",
        "",
        "| setting | differs from shipped RelaxSettings() | seed | frames | rejected | mean − MD (sd) | sd ratio "
        "| KS (p) | p10 / p99 kJ/mol | s/cycle | plain ns/day | speed ratio | goals |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in results["settings"].items():
        s = entry["summary"]
        shipped = RelaxSettings().describe()
        changes = ", ".join(f"{k}={v}" for k, v in entry["relax"].items() if shipped.get(k) != v)
        changes = changes or "(shipped defaults)"
        missed = ", ".join(k for k, v in s["goals"].items() if not v)
        lines.append(
            f"| {name} | {changes} | {entry['seed']} | {s['n_sample']} | {entry['rejected_fraction']:.1%} | "
            f"{s['mean_diff_in_ref_sd']:+.2f} | {s['sd_ratio']:.2f} | {s['ks_statistic']:.2f} ({s['ks_pvalue']:.2g}) | "
            f"{s['p10']:.0f} / {s['p99']:.0f} | {entry['seconds_per_cycle']:.2f} | "
            f"{entry['plain_md']['ns_per_day']:.0f} | {entry['speed_ratio']:.0f}× | "
            f"{'all met' if s['all_goals'] else missed + ' missed'} |")
    lines += ["", f"Defaults shipped in `RelaxSettings()`: `{json.dumps(RelaxSettings().describe())}`", ""]
    with atomic_write(path) as handle:
        handle.write("\n".join(lines))


def main() -> None:
    torch.set_num_threads(1)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", default=["default"], choices=sorted(SWEEP))
    shared = Path(__file__).parents[1] / ".." / "shared"
    parser.add_argument("--reference", default=str(shared / "data" / "md" / "CLN025"),
                        help="ATLAS-layout folder of the reference MD (every NAME_R*.xtc is used)")
    parser.add_argument("--jumps", type=int, default=100)
    parser.add_argument("--jump-ps", type=float, default=1000.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--md-steps", type=int, default=5000, help="plain-MD steps timed per setting")
    parser.add_argument("--scratch", default=os.environ.get("TMPDIR", "/tmp"))
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "relax"))
    parser.add_argument("--merge", nargs="*", default=[],
                        help="result JSON files of other runs of this script whose settings are merged into --out")
    args = parser.parse_args()
    reference_dir = Path(args.reference).resolve()
    out_json, out_md = Path(args.out + ".json"), Path(args.out + ".md")
    results = json.loads(out_json.read_text()) if out_json.exists() else {"settings": {}}
    for other in args.merge:
        results["settings"].update(json.loads(Path(other).read_text())["settings"])
    replicas = reference_energies(reference_dir)
    pooled = np.concatenate(list(replicas.values()))
    names = sorted(replicas)
    results.update(reference=str(reference_dir), reference_frames={k: len(v) for k, v in replicas.items()},
                   reference_mean=float(pooled.mean()), reference_sd=float(pooled.std(ddof=1)),
                   reference_p10=float(np.percentile(pooled, 10)), reference_p99=float(np.percentile(pooled, 99)),
                   floor=compare_energies(replicas[names[-1]], replicas[names[0]]) if len(names) > 1 else {})
    for entry in results["settings"].values():
        entry["summary"] = summarise(entry, pooled)
    if args.merge:
        atomic_write_json(out_json, results)
        write_markdown(out_md, results)
        return
    for name in args.settings:
        entry = run_setting(name, SWEEP[name], reference_dir, args.jumps, args.jump_ps, args.seed,
                            Path(args.scratch), args.md_steps)
        entry["overrides"] = SWEEP[name]
        entry["summary"] = summarise(entry, pooled)
        results["settings"][name] = entry
        s = entry["summary"]
        print(f"{name}: mean shift {s['mean_diff_in_ref_sd']:+.2f} sd, sd ratio {s['sd_ratio']:.2f}, "
              f"KS {s['ks_statistic']:.2f} "
              f"(p {s['ks_pvalue']:.2g}), {entry['seconds_per_cycle']:.2f} s/cycle, {entry['speed_ratio']:.0f}x, "
              f"rejected {entry['rejected_fraction']:.1%}", flush=True)
        atomic_write_json(out_json, results)
        write_markdown(out_md, results)


if __name__ == "__main__":
    main()
