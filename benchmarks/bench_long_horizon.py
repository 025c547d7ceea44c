"""Long hybrid rollout (default: chignolin, 1 ns jumps) with validity and ensemble metrics per window.

Runs a hybrid simulation at default settings (``bench_fidelity.hybrid_rollout``: failed cycles are counted
and retried, not fatal) into ``--out`` for ``--time`` or until ``--max-wall`` is spent, then cuts the
trajectory into ``--window`` pieces (default 100 ns = 100 frames at 1 ns jumps) and reports per window:
share of valid frames (no CA break, no clash), share of proposals rejected by the guards, CA RMSF Pearson
r, PC1/PC2 JSD and mean φ/ψ JSD against the reference MD. The MD-vs-MD row fits the reference's first half
and scores its second half. A least-squares slope over the windows shows drift. Also prints seconds per
cycle and the wall time that 1 µs would take at that rate.

    python benchmarks/bench_long_horizon.py /work/shared/data/md/CLN025 --time 1us --max-wall 1800 \
        --out /tmp/long_cln025

``--from-run DIR`` analyses a finished ``starmd simulate`` run instead (its traj.xtc, topology.pdb, log.csv
and run.json), e.g. the README's ``starmd simulate tests/data/cln025.pdb --time 1us --jump 1ns -o DIR``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

import mdtraj as md
import numpy as np
from threadpoolctl import threadpool_limits

from openmm_starmd.analysis.ensemble import compare_ensemble, fit_ensemble_reference
from openmm_starmd.analysis.matching import match_atoms
from openmm_starmd.analysis.validity import frame_validity
from openmm_starmd.atomic import atomic_write, atomic_write_json
from openmm_starmd.units import parse_time

sys.path.insert(0, str(Path(__file__).parent))
from bench_fidelity import hybrid_rollout, json_safe, model_sha256  # sibling benchmark script, not a package

COLUMNS = ("valid_fraction", "rejected_share", "rmsf_pearson_r", "pc_jsd", "torsion_jsd", "rmsd_to_start_nm")


def window_rows(gen: md.Trajectory, log: list[dict], ref: md.Trajectory, frames_per_window: int,
                jump_ps: float) -> list[dict]:
    """Metrics of consecutive windows of ``gen`` (matched to ``ref``'s atoms) against the whole reference."""
    fitted = fit_ensemble_reference([ref])
    valid = frame_validity(gen).valid
    rows = []
    for a in range(0, gen.n_frames - frames_per_window + 1, frames_per_window):
        b = a + frames_per_window
        part = gen[a:b]
        cycles = log[a:b]
        rejections = sum(int(r["rejections"]) for r in cycles)
        row = {"start_ns": a * jump_ps / 1000.0, "end_ns": b * jump_ps / 1000.0, "frames": b - a,
               "valid_fraction": float(valid[a:b].mean()),
               "rejected_share": rejections / (rejections + len(cycles)),
               "rmsd_to_start_nm": float(np.mean([float(r["rmsd_ca_nm"]) for r in cycles])),
               "seconds_per_cycle": float(np.mean([float(r["wall_s"]) for r in cycles]))}
        row.update(compare_ensemble(fitted, part, pairwise=False, w2=False))
        rows.append(row)
    return rows


def md_floor(ref: md.Trajectory) -> dict:
    """The window metrics for MD against MD: second half of the reference scored against its first half."""
    half = ref.n_frames // 2
    row = compare_ensemble(fit_ensemble_reference([ref[:half]]), ref[half:], pairwise=False, w2=False)
    row["valid_fraction"] = float(frame_validity(ref).valid.mean())
    return row


def slope_per_window(rows: list[dict], key: str) -> float | None:
    """Least-squares slope of ``key`` over window index (change per window)."""
    values = [(i, r[key]) for i, r in enumerate(rows) if r.get(key) is not None and np.isfinite(r[key])]
    if len(values) < 2:
        return None
    x, y = np.array(values, dtype=float).T
    return float(np.polyfit(x, y, 1)[0])


def record_from_run(run_dir: Path) -> dict:
    """The rollout record of a ``starmd simulate`` folder (run.json + log.csv), in hybrid_rollout's keys.

    Its wall time is the sum of the per-jump wall times in log.csv, so resumed sessions add up; the CLI
    stops at a cycle whose every proposal fails, so it has no failed-and-retried cycles.
    """
    run = json.loads((run_dir / "run.json").read_text())
    with open(run_dir / "log.csv", encoding="utf-8") as handle:
        wall = sum(float(r["wall_s"]) for r in csv.DictReader(handle))
    settings = run["settings"]
    return {"model": settings["model"], "jump_ps": settings["jump_ps"], "time_ps": settings["time_ps"],
            "jumps_done": run["jumps_done"],
            "failed_cycles": 0, "status": run["status"], "wall_s": wall, "rejections": run.get("rejections", {}),
            "halvings": run.get("halvings", 0), "speed": run.get("speed", {"model_share": float("nan"),
                                                                           "openmm_share": float("nan")}),
            "relax": settings["relax"], "guards": settings["guards"]}


def markdown(result: dict) -> str:
    s = result["summary"]
    lines = [
        "# Long-horizon hybrid rollout", "",
        f"System {result['system']}, model `{result['model']}`, {result['jump_ps']:g} ps jumps, "
        f"{s['simulated_ns']:g} ns simulated in {s['wall_s']:.0f} s ({s['seconds_per_cycle']:.3f} s/cycle, "
        f"{s['ns_per_day']:,.0f} ns/day); 1 µs extrapolates to {s['extrapolated_1us_h']:.2f} h on "
        f"{result['machine']}.  ",
        f"Status: {s['status']} ({s['simulated_ns']:g} of {s['requested_ns']:g} ns). Valid frames overall: "
        f"{s['valid_fraction']:.2%}; proposals rejected by the guards: {s['rejected_share']:.2%}; failed cycles "
        f"(every proposal rejected, retried): {s['failed_cycles']}.", "",
        "| Window (ns) | Valid frames | Rejected proposals | RMSF r | PC JSD (bits) | φ/ψ JSD (bits) "
        "| CA RMSD to start (nm) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["windows"]:
        lines.append(f"| {r['start_ns']:g}–{r['end_ns']:g} | {r['valid_fraction']:.2%} | {r['rejected_share']:.2%} "
                     f"| {r['rmsf_pearson_r']:.3f} | {r['pc_jsd']:.3f} | {r['torsion_jsd']:.3f} "
                     f"| {r['rmsd_to_start_nm']:.3f} |")
    f = result["md_vs_md_floor"]
    lines.append(f"| MD vs MD (reference halves) | {f['valid_fraction']:.2%} | – | {f['rmsf_pearson_r']:.3f} "
                 f"| {f['pc_jsd']:.3f} | {f['torsion_jsd']:.3f} | – |")
    lines += ["", "Slope per window (drift): " + ", ".join(
        f"{k} {v:+.4f}" if v is not None else f"{k} n/a" for k, v in result["slopes_per_window"].items()), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("system", help="reference folder NAME/ with NAME.pdb and NAME_R*.xtc")
    parser.add_argument("--time", default="1us", help="simulated time (default 1us)")
    parser.add_argument("--jump", default="1ns", help="time per jump (default 1ns)")
    parser.add_argument("--window", default="100ns", help="reporting window (default 100ns)")
    parser.add_argument("--model", default="default", help="STAR-MD model folder, default, or a proposer name")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-wall", type=float, help="stop the rollout after this many seconds (partial result)")
    parser.add_argument("--out", help="run folder (replaced unless --reuse)")
    parser.add_argument("--from-run", help="analyse this finished `starmd simulate` output folder instead")
    parser.add_argument("--reuse", action="store_true", help="only re-analyse the finished run in --out")
    parser.add_argument("--json", default="benchmarks/results/long_horizon.json")
    parser.add_argument("--md", default="benchmarks/results/long_horizon.md")
    args = parser.parse_args()
    if not args.out and not args.from_run:
        parser.error("give --out (run the rollout here) or --from-run (analyse a starmd simulate folder)")

    system_dir, out = Path(args.system), Path(args.out or args.from_run)
    time_ps, jump_ps = parse_time(args.time, "--time"), parse_time(args.jump, "--jump")
    per_window = round(parse_time(args.window, "--window") / jump_ps)
    name = system_dir.name
    if args.from_run:
        out = Path(args.from_run)
        record = record_from_run(out)
        jump_ps = record["jump_ps"]
        time_ps = record["time_ps"]
        per_window = round(parse_time(args.window, "--window") / jump_ps)
    elif args.reuse and (out / "rollout.json").exists():
        record = json.loads((out / "rollout.json").read_text())
        jump_ps = record["jump_ps"]
        per_window = round(parse_time(args.window, "--window") / jump_ps)
    else:
        record = hybrid_rollout(system_dir / f"{name}.pdb", out, time_ps, jump_ps, args.model, args.seed,
                                max_wall_s=args.max_wall, model_sha=model_sha256(args.model))
    ref = md.join([md.load(str(x), top=str(system_dir / f"{name}.pdb"))
                   for x in sorted(system_dir.glob(f"{name}_R*.xtc"))])
    rows, valid = [], np.zeros(0, dtype=bool)
    if record["jumps_done"] > 0:
        gen = md.load(str(out / "traj.xtc"), top=str(out / "topology.pdb"))
        gen_idx, ref_idx = match_atoms(gen.topology, ref.topology)
        gen, ref = gen.atom_slice(gen_idx), ref.atom_slice(ref_idx)
        with open(out / "log.csv", encoding="utf-8") as handle:
            log = list(csv.DictReader(handle))
        with threadpool_limits(limits=1):
            rows = window_rows(gen, log, ref, min(per_window, gen.n_frames), jump_ps)
            valid = frame_validity(gen).valid
    with threadpool_limits(limits=1):
        floor = md_floor(ref)
    # Every rejected proposal, failed cycles included, over all proposals (accepted ≈ cycles + halvings).
    rejections = sum(record["rejections"].values())
    cycles = record["jumps_done"]
    wall = record["wall_s"]
    summary = {"simulated_ns": cycles * jump_ps / 1000.0, "requested_ns": time_ps / 1000.0, "cycles": cycles,
               "failed_cycles": record["failed_cycles"], "wall_s": wall,
               "seconds_per_cycle": wall / max(1, cycles),
               "ns_per_day": cycles * jump_ps / 1000.0 / wall * 86400.0,
               "extrapolated_1us_h": wall / cycles * (1e6 / jump_ps) / 3600.0 if cycles else float("inf"),
               "valid_fraction": float(valid.mean()) if len(valid) else float("nan"),
               "rejected_share": rejections / max(1, rejections + cycles + record["halvings"]),
               "rejection_reasons": record["rejections"], "halvings": record["halvings"],
               "model_share": record["speed"]["model_share"], "openmm_share": record["speed"]["openmm_share"],
               "status": record["status"]}
    result = {"system": name, "model": record.get("model", args.model), "jump_ps": jump_ps,
              "window_ps": per_window * jump_ps,
              "machine": f"{os.cpu_count()}-core CPU, load {os.getloadavg()[0]:.1f}",
              "relax": record["relax"], "guards": record["guards"], "summary": summary, "windows": rows,
              "md_vs_md_floor": floor,
              "slopes_per_window": {k: slope_per_window(rows, k) for k in COLUMNS}}
    text = markdown(result)
    print(text)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.json, json_safe(result))
    with atomic_write(args.md) as handle:
        handle.write(text)


if __name__ == "__main__":
    main()
