"""Batched replica ensembles: model time per jump and aggregate simulated ns/day for R = 1, 4, 16.

Two measurements per R, both with the shipped default model on one input (default chignolin):

* model only: ``Rollout(replicas=R)``, one ``sample`` + ``push`` per jump for all R replicas (one forward
  pass per sampler step); wall and process CPU seconds per jump;
* the command: ``starmd rollout`` (``openmm_starmd.generate.run_rollout``) for the same number of jumps,
  which adds the all-atom mapping, raw validity and the writers; its run.json gives the model's share.

Goal (issue 15): R = 16 costs at most 4x one replica's model time per jump. CPU timings on a shared
machine are noisy: the load average is recorded next to them, and CPU seconds are less affected than wall.

    python benchmarks/bench_ensemble.py [--device cpu|cuda] [--jumps 10] [--replicas 1 4 16]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import openmm.unit as unit
import torch

from openmm_starmd.atomic import atomic_write, atomic_write_json
from openmm_starmd.data.featurize import featurize_topology
from openmm_starmd.generate import run_rollout
from openmm_starmd.model.checkpoint import load_model, model_folder, resolve_device
from openmm_starmd.rollout import Rollout
from openmm_starmd.simulation.reconstruct import AtomMap
from openmm_starmd.units import ns_per_day

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_only(input_pdb: Path, R: int, jumps: int, jump_ps: float, device: torch.device) -> dict:
    """Per-jump wall and CPU seconds of ``Rollout(replicas=R)`` alone (after 2 warm-up jumps)."""
    from openmm_starmd import prep

    start = prep.load_pdb(input_pdb)
    atom_map = AtomMap(start.topology)
    rot, trans = atom_map.frames(np.asarray(start.positions.value_in_unit(unit.nanometer)))
    net, _ = load_model(model_folder("default"), device)
    ro = Rollout(net, featurize_topology(start.topology), replicas=R)
    gens = [torch.Generator(device=device).manual_seed(k) for k in range(R)]
    ro.push(rot.float().to(device).expand(R, -1, -1, -1), trans.float().to(device).expand(R, -1, -1))

    def jump() -> None:
        r, t = ro.sample(jump_ps, gens)
        ro.push(r, t)

    for _ in range(2):
        jump()
    _sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(jumps):
        jump()
    _sync(device)
    wall, cpu = (time.perf_counter() - wall) / jumps, (time.process_time() - cpu) / jumps
    return {"replicas": R, "model_wall_s_per_jump": wall, "model_cpu_s_per_jump": cpu,
            "aggregate_ns_per_day_model_only": ns_per_day(R * jump_ps, wall)}


def command(input_pdb: Path, R: int, jumps: int, jump_ps: float, device: torch.device, work: Path) -> dict:
    """``starmd rollout`` for ``jumps`` jumps: wall per jump, model share, aggregate ns/day, raw validity."""
    out = work / f"R{R}"
    cpu = time.process_time()
    run_rollout(input_pdb, out, time_ps=jumps * jump_ps, jump_ps=jump_ps, replicas=R, seed=0, device=device,
                progress=False, overwrite=True, save_every_s=1e9)
    cpu = (time.process_time() - cpu) / jumps
    record = json.loads((out / "run.json").read_text())
    speed = record["speed"]
    return {"command_wall_s_per_jump": speed["wall_s_per_jump"], "command_cpu_s_per_jump": cpu,
            "model_share": speed["model_s_per_jump"] / speed["wall_s_per_jump"],
            "aggregate_ns_per_day": speed["ns_per_day_aggregate"],
            "raw_valid_fraction": record["raw_validity"]["valid_fraction"]}


def markdown(record: dict) -> str:
    s = record["settings"]
    lines = [f"# Replica ensembles, model-only (`bench_ensemble.py`, device {s['device']})", "",
             f"{s['input']}, {s['jumps']} jumps of {s['jump_ps']:g} ps per R after 2 warm-up jumps, shipped default "
             f"model, torch threads {s['torch_threads']}; load average {s['load_average']} at start.", "",
             "| R | model s/jump (wall) | model s/jump (CPU) | x R=1 (wall) | x R=1 (CPU) | aggregate ns/day, "
             "model only | `starmd rollout` s/jump | model share | aggregate ns/day | raw valid |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    base = record["rows"][0]
    for r in record["rows"]:
        lines.append(
            f"| {r['replicas']} | {r['model_wall_s_per_jump']:.3f} | {r['model_cpu_s_per_jump']:.3f} | "
            f"{r['model_wall_s_per_jump'] / base['model_wall_s_per_jump']:.2f} | "
            f"{r['model_cpu_s_per_jump'] / base['model_cpu_s_per_jump']:.2f} | "
            f"{r['aggregate_ns_per_day_model_only']:,.0f} | {r['command_wall_s_per_jump']:.3f} | "
            f"{100 * r['model_share']:.0f} % | {r['aggregate_ns_per_day']:,.0f} | "
            f"{100 * r['raw_valid_fraction']:.0f} % |")
    goal = record["goal_r16_within_4x"]
    if goal is not None:
        lines += ["", f"Goal R = 16 <= 4x one replica's model time per jump: wall {goal['wall_ratio']:.2f}x, "
                      f"CPU {goal['cpu_ratio']:.2f}x."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", default=str(ROOT / "tests" / "data" / "cln025.pdb"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--jumps", type=int, default=10)
    parser.add_argument("--jump-ps", type=float, default=1000.0)
    parser.add_argument("--name", default="ensemble", help="results file stem (benchmarks/results/NAME.json/.md)")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    device = resolve_device(args.device)
    settings = {"input": Path(args.input).name, "device": str(device), "jumps": args.jumps, "jump_ps": args.jump_ps,
                "torch_threads": torch.get_num_threads(), "load_average": [round(x, 1) for x in os.getloadavg()],
                "cpu": platform.processor() or platform.machine(),
                "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}
    work = Path(tempfile.mkdtemp(prefix="bench_ensemble_"))
    rows = []
    try:
        from openmm_starmd import prep

        prep.write_pdb(prep.prepare(args.input), work / "input.pdb", overwrite=True)
        for R in args.replicas:
            row = model_only(work / "input.pdb", R, args.jumps, args.jump_ps, device)
            row.update(command(work / "input.pdb", R, args.jumps, args.jump_ps, device, work))
            rows.append(row)
            print(json.dumps(row))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    by_r = {r["replicas"]: r for r in rows}
    goal = None
    if 1 in by_r and 16 in by_r:
        goal = {"wall_ratio": by_r[16]["model_wall_s_per_jump"] / by_r[1]["model_wall_s_per_jump"],
                "cpu_ratio": by_r[16]["model_cpu_s_per_jump"] / by_r[1]["model_cpu_s_per_jump"]}
    record = {"settings": settings, "rows": rows, "goal_r16_within_4x": goal,
              "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M")}
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_json(RESULTS / f"{args.name}.json", record)
    with atomic_write(RESULTS / f"{args.name}.md") as handle:
        handle.write(markdown(record))
    print(markdown(record))


if __name__ == "__main__":
    main()
