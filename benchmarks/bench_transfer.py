"""Transfer to proteins the model never saw: rejections, fold kept, speed (reserved evaluation systems).

For one reserved mini-protein (prepared from ``../shared/data/structures``; evaluation only, never used
for training) and one relaxation protocol, one process runs:

* ``starmd simulate``'s driver (:func:`openmm_starmd.simulation.run.run_simulation`) for ``--time`` at
  ``--jump`` with ``--model`` (default: the shipped model) and ``implicit-fast``: proposals, rejections by
  reason, raw validity of the model's proposals (before guards and relaxation), cycles
  that failed outright, CA RMSD of every frame to the start structure, hybrid ns/day;
* plain OpenMM MD of the same prepared structure (same preset, minimised, ``--md-ps`` long, one frame
  per ps): CA RMSD to the start over time and plain ns/day, measured in the same process.

Each run writes one part file; ``--collect`` merges the parts into
``benchmarks/results/transfer.{json,md}``.

    python benchmarks/bench_transfer.py --system 2JOF --protocol default --parts /tmp/parts
    python benchmarks/bench_transfer.py --collect --parts /tmp/parts
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import mdtraj as md
import numpy as np
import openmm.app as app
import openmm.unit as u
import torch

from openmm_starmd import prep
from openmm_starmd.atomic import atomic_write, atomic_write_json
from openmm_starmd.errors import StarMDError
from openmm_starmd.forcefields import PRESETS, build_system, fastest_platform, make_integrator
from openmm_starmd.simulation.relax import RelaxSettings
from openmm_starmd.simulation.run import run_simulation
from openmm_starmd.units import ns_per_day

sys.path.insert(0, str(Path(__file__).parent))
from bench_fidelity import model_sha256  # sibling benchmark script, not a package

PRESET = "implicit-fast"
STRUCTURES = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "structures"
# Reserved systems: (file, chains). Evaluation only.
SYSTEMS = {"2JOF": ("2JOF.pdb", None), "1FME": ("1FME.pdb", None), "2F4K": ("2F4K.pdb", None),
           "NuG2": ("NuG2.pdb", ["A"])}
# "before": the relaxation shipped before the clash-relief stage; "clash_relief": the same plus that stage;
# "default": RelaxSettings() as shipped now.
PROTOCOLS = {"before": {"clash_iterations": 0, "time_ps": 1.0, "ramp_stages": 4, "minimize_iterations": 50,
                        "velocities": "fresh", "friction_per_ps": None},
             "clash_relief": {"clash_iterations": 200, "clash_force": 2.0e4, "time_ps": 1.0, "ramp_stages": 4,
                              "minimize_iterations": 50, "velocities": "fresh", "friction_per_ps": None},
             "default": {},
             # A stricter clash relief and a longer minimisation, on top of the defaults.
             "strict": {"clash_iterations": 500, "clash_force": 5.0e3, "minimize_iterations": 100}}
GOAL_REJECTED, GOAL_RMSD_NM = 0.05, 0.3


def ca_rmsd_to_start(traj: md.Trajectory, start: md.Trajectory) -> np.ndarray:
    """``[T]`` CA RMSD (nm) of every frame to the start structure after CA superposition (no box)."""
    ca = start.topology.select("name CA")
    traj.unitcell_vectors = None
    return md.rmsd(traj, start, 0, atom_indices=ca, precentered=False)


def plain_md(pdb_path: Path, md_ps: float, seed: int) -> dict:
    """Minimised plain MD of a prepared structure: ns/day and CA RMSD to the start, one frame per ps."""
    start = prep.load_pdb(pdb_path)
    system, topology, positions = build_system(start.topology, start.positions, PRESET)
    sim = app.Simulation(topology, system, make_integrator(PRESET, 300.0, 1.0, seed=seed), fastest_platform("CPU"))
    sim.context.setPositions(positions)
    sim.minimizeEnergy(maxIterations=500)
    sim.context.setVelocitiesToTemperature(300.0 * u.kelvin, seed)
    per_ps = round(1.0 / PRESETS[PRESET].timestep_ps)
    frames = []
    wall = time.perf_counter()
    for _ in range(round(md_ps)):
        sim.step(per_ps)
        frames.append(sim.context.getState(positions=True).getPositions(asNumpy=True).value_in_unit(u.nanometer))
    wall = time.perf_counter() - wall
    md_top = md.Topology.from_openmm(topology)
    rmsd = ca_rmsd_to_start(md.Trajectory(np.array(frames, dtype=np.float32), md_top),
                            md.load(str(pdb_path)))
    return {"length_ps": float(round(md_ps)), "frame_ps": 1.0, "wall_s": wall,
            "ns_per_day": ns_per_day(round(md_ps) * PRESETS[PRESET].timestep_ps * per_ps, wall),
            "ca_rmsd_nm": rmsd.tolist(), "max_ca_rmsd_nm": float(rmsd.max())}


def run_one(name: str, protocol: str, time_ps: float, jump_ps: float, md_ps: float, seed: int, work: Path,
            structures: Path = STRUCTURES, model: str = "default", label: str = "") -> dict:
    file, chains = SYSTEMS[name]
    work.mkdir(parents=True, exist_ok=True)
    prepared = work / f"{name}.pdb"
    prep.write_pdb(prep.prepare(structures / file, chains=chains), prepared, overwrite=True)
    out = work / f"{name}_{protocol}{label}"
    if out.exists():
        shutil.rmtree(out)
    relax = RelaxSettings(**PROTOCOLS[protocol])
    wall = time.perf_counter()
    status = "complete"
    try:
        run_simulation(prepared, out, time_ps, jump_ps=jump_ps, relax=relax, seed=seed, platform="CPU",
                       forcefield=PRESET, progress=False, model=model)
    except StarMDError as exc:  # a cycle whose every proposal failed: reported, not hidden
        status = f"failed: {exc}"
    wall = time.perf_counter() - wall
    record = json.loads((out / "run.json").read_text())
    rejections = record.get("rejections", {})
    done = int(record.get("jumps_done", 0))
    # Accepted proposals: one per cycle, plus one more per halving (two half jumps replace one).
    proposals = done + int(record.get("halvings", 0)) + sum(rejections.values())
    rmsd = np.zeros(0)
    if (out / "traj.xtc").exists() and done:
        rmsd = ca_rmsd_to_start(md.load(str(out / "traj.xtc"), top=str(out / "topology.pdb")),
                                md.load(str(out / "topology.pdb")))
    plain = plain_md(out / "topology.pdb", md_ps, seed)
    hybrid_ns_day = record.get("speed", {}).get("ns_per_day", float("nan"))
    return {
        "system": name, "protocol": protocol, "model": model, "model_sha256": model_sha256(model),
        "load_1min": os.getloadavg()[0], "relax": relax.describe(), "status": status,
        "validity": record.get("validity"), "side_chains": record.get("side_chains"),
        "model_max_step_ps": record["settings"].get("model_max_step_ps"),
        "time_ps": time_ps, "jump_ps": jump_ps, "seed": seed, "jumps_done": done, "halvings": record.get("halvings", 0),
        "rejections": rejections, "proposals": proposals,
        "rejected_fraction": sum(rejections.values()) / max(proposals, 1), "wall_s": wall,
        "ca_rmsd_nm": rmsd.tolist(), "max_ca_rmsd_nm": float(rmsd.max()) if len(rmsd) else float("nan"),
        "hybrid_ns_per_day": hybrid_ns_day, "plain_md": plain, "speed_ratio": hybrid_ns_day / plain["ns_per_day"],
        "goals": {"rejected_le_5pct": sum(rejections.values()) / max(proposals, 1) <= GOAL_REJECTED,
                  "ca_rmsd_le_0.3nm": bool(len(rmsd)) and float(rmsd.max()) <= GOAL_RMSD_NM},
    }


def _series(values: list[float], every: int = 5) -> str:
    return " ".join(f"{v:.2f}" for v in values[every - 1::every])


def _model_label(entry: dict) -> str:
    """The row's model, with the first 8 hex digits of its weights' sha256 where the part recorded them."""
    sha = entry.get("model_sha256")
    return entry.get("model", "default") + (f" ({sha[:8]})" if sha else "")


def collect(parts: Path, out: Path) -> None:
    entries = [json.loads(p.read_text()) for p in sorted(parts.glob("*.json"))]
    atomic_write_json(out.with_suffix(".json"), {"runs": entries})
    lines = ["# Transfer to reserved mini-proteins (never trained on): 1 ns jumps", "",
             "Hybrid: `run_simulation` (what `starmd simulate` runs) with `implicit-fast`, seed per row, on a "
             "2-core CPU often shared with other jobs (`load`: the 1-min load average at the end of the row, – where "
             "not recorded): timings pessimistic, the ratio measured in one process. "
             "Plain MD: the same prepared structure, minimised, Langevin 4 fs, length per row. CA RMSD to the prepared "
             "start after superposition. `before` = relaxation shipped before this change (no clash relief, "
             "1 ps MD); `clash_relief` = the same plus the clash-relief stage; `default` = `RelaxSettings()` when "
             "the row ran (each row's `relax` in the JSON; 2 ps MD for the rows so far, 3 ps since 2026-12-01); "
             "`strict` = the default with clash relief down to 5e3 kJ/mol/nm and 100 "
             "minimiser iterations. One seed (1) per row. Villin before the fix: a traced run of the old protocol "
             "(20 ns, seed 1) had 33 of 57 proposals rejected (32 OpenMM errors); see the README notes. "
             "`model step`: the longest model step a jump was drawn in (run.json's `model_max_step_ps`; – where "
             "not recorded); `relax retries`: relaxations OpenMM failed that ran again with the longer minimisation "
             "(`RelaxSettings.retry_minimize_iterations`, since 2026-12-02; – before).", "",
             "| system | model | protocol | model step | frames | proposals | rejected | by reason | relax retries "
             "| raw valid | max CA RMSD hybrid (nm) | plain MD: length, max CA RMSD | hybrid ns/day | plain ns/day "
             "| speed ratio | load | goals (≤5 %, ≤0.3 nm) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in entries:
        reasons = ", ".join(f"{k} {v}" for k, v in e["rejections"].items() if v) or "–"
        goals = "met" if all(e["goals"].values()) else ", ".join(k for k, v in e["goals"].items() if not v) + " missed"
        raw = (e.get("validity") or {}).get("raw_valid_fraction")
        raw = "–" if raw is None else f"{raw:.0%}"
        step = e.get("model_max_step_ps")
        step = "–" if step is None else ("whole jump" if step == 0 else f"{step:g} ps")
        retries = (e.get("validity") or {}).get("relax_retries", "–")
        load = "–" if e.get("load_1min") is None else f"{e['load_1min']:.1f}"
        lines.append(f"| {e['system']} | {_model_label(e)} | {e['protocol']} | {step} | {e['jumps_done']} | "
                     f"{e['proposals']} | {e['rejected_fraction']:.1%} | {reasons} | {retries} | {raw} | "
                     f"{e['max_ca_rmsd_nm']:.3f} | "
                     f"{e['plain_md']['length_ps']:.0f} ps, {e['plain_md']['max_ca_rmsd_nm']:.3f} | "
                     f"{e['hybrid_ns_per_day']:,.0f} | {e['plain_md']['ns_per_day']:.0f} | "
                     f"{e['speed_ratio']:.0f}× | {load} | {goals} |")
    lines += ["", "CA RMSD to the start (nm), every 5th frame (hybrid: every 5 ns; plain MD: every 5 ps):", ""]
    for e in entries:
        lines.append(f"- {e['system']} {_model_label(e)} {e['protocol']}: hybrid {_series(e['ca_rmsd_nm'])}; "
                     f"plain MD {_series(e['plain_md']['ca_rmsd_nm'])}"
                     + (f" ({e['status']})" if e["status"] != "complete" else ""))
    with atomic_write(out.with_suffix(".md")) as handle:
        handle.write("\n".join(lines) + "\n")


def main() -> None:
    torch.set_num_threads(1)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", choices=sorted(SYSTEMS))
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default="default")
    parser.add_argument("--time-ps", type=float, default=20000.0)
    parser.add_argument("--jump-ps", type=float, default=1000.0)
    parser.add_argument("--md-ps", type=float, default=100.0, help="plain MD length, ps")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--model", default="default", help="STAR-MD checkpoint folder or default")
    parser.add_argument("--label", default="", help="suffix of this run's part and work folder (e.g. _chi)")
    parser.add_argument("--structures", default=str(STRUCTURES), help="folder of the reserved PDB entries")
    parser.add_argument("--work", default="/tmp/bench_transfer")
    parser.add_argument("--parts", required=True, help="folder of per-run JSON parts")
    parser.add_argument("--collect", action="store_true", help="merge the parts into --out")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "transfer"))
    args = parser.parse_args()
    parts = Path(args.parts)
    if args.collect:
        collect(parts, Path(args.out))
        return
    if args.system is None:
        parser.error("give --system (or --collect)")
    entry = run_one(args.system, args.protocol, args.time_ps, args.jump_ps, args.md_ps, args.seed, Path(args.work),
                    Path(args.structures), args.model, args.label)
    parts.mkdir(parents=True, exist_ok=True)
    atomic_write_json(parts / f"{args.system}_{args.protocol}{args.label}.json", entry)
    print(json.dumps({k: entry[k] for k in ("system", "protocol", "jumps_done", "proposals", "rejections",
                                            "max_ca_rmsd_nm", "speed_ratio")}))


if __name__ == "__main__":
    main()
