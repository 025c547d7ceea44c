"""Fidelity of hybrid rollouts against the reference MD of every system, next to the MD-vs-MD floor.

For each reference folder NAME/ (NAME.pdb + NAME_R*.xtc, 10 ps frames) a hybrid rollout of the same
simulated length as the first replica is run from NAME.pdb with ``--jump`` (default 10 ps, the reference's
frame spacing, so the rollout has as many frames as the reference: 1000 for a 10 ns tetrapeptide, 1800
for chignolin's 18 ns; JSDs estimated from fewer frames are biased upwards, and the MD-vs-MD floor is
built from two halves of the reference), then ``starmd validate``'s :func:`validate` compares it with
every replica (ensemble metrics on all frames; dynamics metrics with the reference strided to the jump
interval, TICA lag one rollout frame unless ``--lag``). Finished rollouts in ``--out`` are reused (same
jump count, model weights, prior and relaxation), so a rerun only re-validates. Goals: chignolin CA
RMSF Pearson r >= 0.8 and PC1/PC2 JSD <= 1.5x floor; tetrapeptides' mean φ/ψ JSD <= 1.5x their mean
floor. ``--jump 100ps`` gives the earlier, cheaper table (a tenth of the frames).

    python benchmarks/bench_fidelity.py /work/shared/data/md --systems CLN025 AMRV --out /tmp/fidelity

``--prior-weight λ`` adds the model's learned force to every relaxation (issue 8's comparison: run once
with and once without, into different ``--out`` folders and ``--json``/``--md`` files).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import time
from pathlib import Path

import mdtraj as md
import numpy as np
import openmm.app as app
import openmm.unit as u
from tqdm import tqdm

from openmm_starmd import prep
from openmm_starmd.analysis.report import validate
from openmm_starmd.analysis.size_matched import size_matched_files
from openmm_starmd.atomic import atomic_write, atomic_write_json
from openmm_starmd.data.dataset import find_atlas_folders
from openmm_starmd.forcefields import build_system
from openmm_starmd.model.checkpoint import DEFAULT_MODEL, WEIGHTS_NAME, default_model_path
from openmm_starmd.simulation import JumpLogReporter, JumpRejectedError, RelaxSettings, StarMDSimulation
from openmm_starmd.units import parse_time

METRICS = ("rmsf_pearson_r", "pc_jsd", "torsion_jsd", "tic_jsd", "invalid_rate")
CHIGNOLIN = "CLN025"
FACTOR = 1.5


def reference_length_ps(folder: Path) -> tuple[float, int]:
    """Simulated length of the first replica (ps) and its frame count."""
    name = folder.name
    xtc = sorted(folder.glob(f"{name}_R*.xtc"))[0]
    meta = xtc.with_suffix(".json")
    spacing = json.loads(meta.read_text()).get("stride_ps", 10.0) if meta.is_file() else 10.0
    with md.formats.XTCTrajectoryFile(str(xtc)) as handle:
        n_frames = len(handle)
    return n_frames * spacing, n_frames


def model_sha256(model: str) -> str | None:
    """sha256 of the model's weights (``default`` or a model folder); None for a proposer name. Computed once
    per run and passed down (``model_sha``), so rollout records can be matched to the weights."""
    folder = default_model_path() if model == DEFAULT_MODEL else Path(model)
    weights = folder / WEIGHTS_NAME
    return hashlib.sha256(weights.read_bytes()).hexdigest() if weights.is_file() else None


def hybrid_rollout(pdb: Path, out: Path, time_ps: float, jump_ps: float, model: str, seed: int,
                   max_wall_s: float | None = None, max_failures: int = 20, prior_weight: float = 0.0,
                   relax_ps: float | None = None, model_sha: str | None = None) -> dict:
    """A hybrid run at default settings (implicit-fast, default relaxation and guards) into ``out``.

    Unlike ``starmd simulate``, a cycle whose every proposal fails the guards (JumpRejectedError) does not
    end the run: it is counted as a failed cycle and tried again from the same structure with fresh
    random numbers (the simulation restores the cycle's start itself), so a benchmark measures how often
    that happens instead of stopping at the first one. Stops after ``max_failures`` failures in a row or
    when ``max_wall_s`` is spent. Writes topology.pdb, traj.xtc (frames at k x jump), log.csv, rollout.json.
    ``prior_weight`` > 0 adds the model's learned force (StarMDForce, conditioned on the start structure)
    with that λ to every relaxation's MD segment; ``relax_ps`` sets its length (default RelaxSettings').
    """
    out.mkdir(parents=True, exist_ok=True)
    for name in ("traj.xtc", "log.csv", "rollout.json"):
        (out / name).unlink(missing_ok=True)
    prep.write_pdb(prep.prepare(pdb), out / "topology.pdb", overwrite=True)
    start = prep.load_pdb(out / "topology.pdb")
    system, topology, positions = build_system(start.topology, start.positions, "implicit-fast")
    relax = RelaxSettings(starmd_force_weight=prior_weight,
                          time_ps=RelaxSettings().time_ps if relax_ps is None else relax_ps)
    sim = StarMDSimulation(topology, system, model, jump=jump_ps * u.picosecond, seed=seed, relax=relax,
                           prior_positions=positions if prior_weight else None)
    sim.context.setPositions(positions)
    log = JumpLogReporter(out / "log.csv", 1, np.asarray(positions.value_in_unit(u.nanometer)), topology)
    sim.reporters += [app.XTCReporter(str(out / "traj.xtc"), 1), log]
    total = round(time_ps / jump_ps)
    failed, in_a_row, status = 0, 0, "complete"
    wall = time.perf_counter()
    with tqdm(total=total, unit="jump", desc=pdb.stem, leave=False) as bar:
        while sim.currentStep < total:
            if max_wall_s is not None and time.perf_counter() - wall > max_wall_s:
                status = "wall-time budget spent"
                break
            try:
                sim.step(1)
                in_a_row = 0
                bar.update(1)
            except JumpRejectedError:
                failed += 1
                in_a_row += 1
                if in_a_row >= max_failures:
                    status = f"stopped: {max_failures} failed cycles in a row"
                    break
    wall = time.perf_counter() - wall
    log.close()
    speed = sim.speed()
    record = {"pdb": str(pdb), "model": model, "model_sha256": model_sha, "seed": seed,
              "jump_ps": jump_ps, "jumps_total": total,
              "jumps_done": sim.currentStep, "prior_weight": prior_weight, "failed_cycles": failed,
              "status": status, "wall_s": wall,
              "seconds_per_cycle": wall / max(1, sim.currentStep), "rejections": sim.rejections,
              "halvings": sim.halvings, "speed": speed, "relax": sim.relax_settings.describe(),
              "guards": sim.guard_settings.describe()}
    atomic_write_json(out / "rollout.json", record)
    return record


SIZE_MATCHED_KEYS = ("pc_jsd", "torsion_jsd", "chi1_jsd", "rmsf_pearson_r", "decorrelation_ratio")


def size_matched_row(folder: Path, run_dir: Path, lag: str) -> dict:
    """The project's size-matched comparison (:func:`openmm_starmd.analysis.size_matched.size_matched`): N rollout
    frames and N evenly thinned frames of the reference's first halves, each against its second halves."""
    name = folder.name
    result = size_matched_files([str(run_dir / "traj.xtc")], [str(p) for p in sorted(folder.glob(f"{name}_R*.xtc"))],
                                str(folder / f"{name}.pdb"), gen_top=str(run_dir / "topology.pdb"), lag=lag)
    return {"frames": result.frames,
            "rollout": {k: result.generated[k] for k in SIZE_MATCHED_KEYS if k in result.generated},
            "md": {k: result.md[k] for k in SIZE_MATCHED_KEYS if k in result.md}}


def run_system(folder: Path, out: Path, jump_ps: float, model: str, seed: int, lag: str,
               max_wall_s: float | None = None, prior_weight: float = 0.0, relax_ps: float | None = None,
               model_sha: str | None = None) -> dict:
    """Roll out (unless done), validate, and return the row for one system."""
    name = folder.name
    time_ps, ref_frames = reference_length_ps(folder)
    run_dir = out / name / "run"
    record_path = run_dir / "rollout.json"
    old = json.loads(record_path.read_text()) if record_path.exists() else {}
    # records older than the weights' hash match on the model name alone
    done = (old.get("jumps_total") == round(time_ps / jump_ps) and old.get("model") == model
            and old.get("model_sha256", model_sha) == model_sha
            and old.get("prior_weight", 0.0) == prior_weight
            and (relax_ps is None or old.get("relax", {}).get("time_ps") == relax_ps))
    record = old if done else hybrid_rollout(folder / f"{name}.pdb", run_dir, time_ps, jump_ps, model, seed,
                                             max_wall_s=max_wall_s, prior_weight=prior_weight, relax_ps=relax_ps,
                                             model_sha=model_sha)
    row = {"system": name, "reference_ns": time_ps / 1000.0, "reference_frames": ref_frames,
           "rollout_frames": record["jumps_done"], "jump_ps": jump_ps, "rollout_wall_s": record["wall_s"],
           "seconds_per_cycle": record["seconds_per_cycle"], "failed_cycles": record["failed_cycles"],
           "rejections": sum(record["rejections"].values()), "rejection_reasons": record["rejections"],
           "status": record["status"], "metrics": {}, "floor": {}}
    if record["jumps_done"] < 20:
        row["note"] = "too few frames to validate"
        return row
    start = time.perf_counter()
    refs = sorted(folder.glob(f"{name}_R*.xtc"))
    validate([run_dir / "traj.xtc"], refs, folder / f"{name}.pdb", out / name / "validate",
             gen_top=run_dir / "topology.pdb", lag=lag, overwrite=True, progress=False)
    report = json.loads((out / name / "validate" / "metrics.json").read_text())
    row.update(residues=report["info"]["residues"], validate_wall_s=time.perf_counter() - start,
               metrics={k: report["metrics"][k]["value"] for k in METRICS if k in report["metrics"]},
               floor={k: report["metrics"][k]["md_vs_md_floor"] for k in METRICS if k in report["metrics"]},
               floor_method=report["floor_method"], time_note=report["inputs"]["time_note"],
               size_matched=size_matched_row(folder, run_dir, lag))
    return row


def _num(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def _ratio(value: float, floor: float) -> float:
    return value / floor if floor > 0 else float("nan")


def goals(rows: list[dict]) -> dict:
    """Pass/fail of the issue's fidelity goals for the systems that were run."""
    out: dict = {}
    chig = [r for r in rows if r["system"] == CHIGNOLIN]
    if chig:
        m, f = chig[0]["metrics"], chig[0]["floor"]
        r = _num(m.get("rmsf_pearson_r"))
        out["chignolin_rmsf_r"] = {"value": r, "goal": ">= 0.8", "met": bool(r >= 0.8)}
        ratio = _ratio(_num(m.get("pc_jsd")), _num(f.get("pc_jsd")))
        out["chignolin_pc_jsd_over_floor"] = {"value": ratio, "goal": f"<= {FACTOR}", "met": bool(ratio <= FACTOR)}
    tetra = [r for r in rows if r["system"] != CHIGNOLIN]
    if tetra:
        value = float(np.nanmean([_num(r["metrics"].get("torsion_jsd")) for r in tetra]))
        floor = float(np.nanmean([_num(r["floor"].get("torsion_jsd")) for r in tetra]))
        out["tetrapeptide_mean_torsion_jsd"] = {"value": value, "floor": floor, "ratio": _ratio(value, floor),
                                                "goal": f"<= {FACTOR} x floor", "met": bool(value <= FACTOR * floor),
                                                "systems": len(tetra)}
    # The project's comparison: rollout and MD samples of equal size against the same reference halves.
    if chig and "size_matched" in chig[0]:
        e = chig[0]["size_matched"]
        ratio = _ratio(_num(e["rollout"].get("pc_jsd")), _num(e["md"].get("pc_jsd")))
        out["chignolin_pc_jsd_size_matched"] = {"value": ratio, "goal": f"<= {FACTOR}",
                                                "met": bool(ratio <= FACTOR)}
    sized = [r for r in tetra if "size_matched" in r]
    if sized:
        value = float(np.nanmean([_num(r["size_matched"]["rollout"].get("torsion_jsd")) for r in sized]))
        floor = float(np.nanmean([_num(r["size_matched"]["md"].get("torsion_jsd")) for r in sized]))
        out["tetrapeptide_torsion_jsd_size_matched"] = {
            "value": _ratio(value, floor), "rollout": value, "md": floor, "goal": f"<= {FACTOR}",
            "met": bool(value <= FACTOR * floor), "systems": len(sized)}
    return out


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"


def markdown(rows: list[dict], result: dict) -> str:
    head = ("| System | Res. | Frames (rollout / ref.) | s/cycle | Rejected proposals | Failed cycles | RMSF r "
            "| PC JSD | φ/ψ JSD | TIC JSD | Invalid frames |")
    lines = ["# Fidelity: hybrid rollout vs reference MD", "",
             f"Model `{result['model']}`"
             + (f" (weights sha256 {result['model_sha256'][:12]}…)" if result.get("model_sha256") else "")
             + f", {result['jump_ps']:g} ps jumps, relaxation "
             f"{result.get('relax_ps') or RelaxSettings().time_ps:g} ps, learned-force λ {result['prior_weight']:g}, "
             f"seed {result['seed']}, {result['machine']}. "
             "Each cell: rollout value (MD-vs-MD floor). JSD in bits; RMSF r higher is better, the rest lower.", "",
             head, "|---" * 11 + "|"]
    for r in rows:
        m, f = r["metrics"], r["floor"]
        cells = " | ".join(f"{_fmt(m.get(k))} ({_fmt(f.get(k))})" for k in METRICS)
        lines.append(f"| {r['system']} | {r.get('residues', '?')} | {r['rollout_frames']} / {r['reference_frames']} "
                     f"| {r['seconds_per_cycle']:.3f} | {r['rejections']} | {r['failed_cycles']} | {cells} |")
    sized = [r for r in rows if r.get("size_matched")]
    if sized:
        lines += ["", "Size-matched: N rollout frames and the reference's first halves evenly thinned to the same N "
                  "frames, each scored against the reference's second halves (TIC1 decorrelation time as a ratio to "
                  "the second halves').", "",
                  "| System | Frames | PC JSD: rollout / MD | φ/ψ JSD: rollout / MD | χ1 JSD: rollout / MD "
                  "| RMSF r: rollout / MD | TIC1 τ ratio: rollout / MD |", "|---|---|---|---|---|---|---|"]
        for r in sized:
            e = r["size_matched"]
            lines.append(f"| {r['system']} | {e['frames']} | " + " | ".join(
                f"{_fmt(e['rollout'].get(k))} / {_fmt(e['md'].get(k))}" for k in SIZE_MATCHED_KEYS) + " |")
    lines += ["", "| Goal | Value | Target | Met |", "|---|---|---|---|"]
    for name, g in result["goals"].items():
        lines.append(f"| {name} | {_fmt(g['value'])} | {g['goal']} | {'yes' if g['met'] else 'no'} |")
    for r in rows:
        if r["status"] != "complete" or "note" in r:
            lines.append(f"\n{r['system']}: rollout {r['status']}{'; ' + r['note'] if 'note' in r else ''}.")
    done = [r for r in rows if "time_note" in r]
    if done:
        lines += ["", f"Time handling: {done[0]['time_note']}. Floor: {done[0]['floor_method']}.", ""]
    return "\n".join(lines)


def json_safe(value: object) -> object:
    """JSON-safe copy of nested dicts/lists: NaN and inf become None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="folder of reference systems NAME/ (e.g. /work/shared/data/md)")
    parser.add_argument("--systems", nargs="+", help="subset of system names (default: all)")
    parser.add_argument("--jump", default="10ps", help="time per jump (default 10ps, the reference's frame spacing)")
    parser.add_argument("--model", default="default", help="STAR-MD model folder, default, or a proposer name")
    parser.add_argument("--lag", help="TICA/VAMP lag (default: the jump, one rollout frame)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prior-weight", type=float, default=0.0,
                        help="λ of the learned force (StarMDForce) in every relaxation's MD (default 0: off)")
    parser.add_argument("--relax", help="MD per relaxation, e.g. 3ps (default: RelaxSettings' default)")
    parser.add_argument("--max-wall", type=float, help="stop each rollout after this many seconds (partial)")
    parser.add_argument("--out", required=True, help="work folder (rollouts and validation reports; reused)")
    parser.add_argument("--json", default="benchmarks/results/fidelity.json")
    parser.add_argument("--md", default="benchmarks/results/fidelity.md")
    args = parser.parse_args()

    folders = find_atlas_folders(args.data)
    if args.systems:
        folders = [f for f in folders if f.name in set(args.systems)]
    jump_ps = parse_time(args.jump, "--jump")
    lag = args.lag or args.jump
    relax_ps = None if args.relax is None else parse_time(args.relax, "--relax")
    sha = model_sha256(args.model)
    rows = []
    for folder in folders:
        row = run_system(folder, Path(args.out), jump_ps, args.model, args.seed, lag, args.max_wall,
                         args.prior_weight, relax_ps, sha)
        rows.append(row)
        m = row["metrics"]
        print(f"{row['system']:<8} {row['rollout_frames']:>4} frames {row['seconds_per_cycle']:.3f} s/cycle "
              f"{row['failed_cycles']} failed cycles  "
              + "  ".join(f"{k} {_fmt(m.get(k))} ({_fmt(row['floor'].get(k))})" for k in METRICS), flush=True)
    result = {"model": args.model, "model_sha256": sha, "jump_ps": jump_ps, "seed": args.seed,
              "lag": lag,
              "prior_weight": args.prior_weight, "relax_ps": relax_ps,
              "machine": f"{os.cpu_count()}-core CPU, load {os.getloadavg()[0]:.1f}", "systems": rows}
    result["goals"] = goals(rows)
    text = markdown(rows, result)
    print(text)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.json, json_safe(result))
    with atomic_write(args.md) as handle:
        handle.write(text)


if __name__ == "__main__":
    main()
