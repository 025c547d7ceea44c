"""Hybrid (jump + relax) ns/day against plain OpenMM MD on the same system, platform and machine.

Runs both in one process: plain MD with the preset's integrator, then ``--jumps`` cycles of a
StarMDSimulation. Reports both speeds, their ratio (goal >= 100x), the share of hybrid wall time spent
in the model and in OpenMM, seconds per cycle, rejections, and the share of valid frames.

    python benchmarks/bench_speed.py tests/data/cln025.pdb --platform CPU --jumps 20

``--model`` defaults to the shipped default STAR-MD model (``perturb``: the random baseline). A cycle whose
every proposal fails the guards is counted as failed and tried again (its wall time stays in the total), so
the benchmark reports it instead of stopping.
"""

from __future__ import annotations

import argparse
import os
import time

import mdtraj as md
import numpy as np
import openmm
import openmm.app as app
import openmm.unit as u

from openmm_starmd.analysis.validity import frame_validity
from openmm_starmd.atomic import atomic_write, atomic_write_json
from openmm_starmd.forcefields import PRESETS, build_system, fastest_platform, make_integrator
from openmm_starmd.simulation import JumpRejectedError, RelaxSettings, StarMDSimulation
from openmm_starmd.units import ns_per_day


def plain_md(topology, system, positions, preset: str, platform: openmm.Platform, steps: int) -> dict:
    """ns/day of ``steps`` integrator steps after minimisation and a short warm-up."""
    simulation = app.Simulation(topology, system, make_integrator(preset, 300.0, 1.0, seed=1), platform)
    simulation.context.setPositions(positions)
    simulation.minimizeEnergy(maxIterations=200)
    simulation.context.setVelocitiesToTemperature(300.0 * u.kelvin, 1)
    simulation.step(max(steps // 10, 10))
    start = time.perf_counter()
    simulation.step(steps)
    wall = time.perf_counter() - start
    return {"steps": steps, "wall_s": wall, "ns_per_day": ns_per_day(steps * PRESETS[preset].timestep_ps, wall)}


class _Frames:
    """Collects every reported frame (reporter protocol) to check validity afterwards."""

    def __init__(self) -> None:
        self.xyz: list[np.ndarray] = []

    def describeNextReport(self, simulation: app.Simulation) -> dict:
        return {"steps": 1, "periodic": False, "include": ["positions"]}

    def report(self, simulation: app.Simulation, state: openmm.State) -> None:
        self.xyz.append(state.getPositions(asNumpy=True).value_in_unit(u.nanometer).astype(np.float32))


def hybrid(topology, system, positions, platform: openmm.Platform, model: str, jumps: int, jump_ps: float,
           relax: RelaxSettings, seed: int, max_wall_s: float | None = None) -> dict:
    """Speed and validity of ``jumps`` hybrid cycles (the first cycle is timed too: no warm-up is hidden)."""
    simulation = StarMDSimulation(topology, system, model, jump=jump_ps * u.picosecond, relax=relax,
                                  platform=platform, seed=seed)
    simulation.context.setPositions(positions)
    frames = _Frames()
    simulation.reporters.append(frames)
    failed = 0
    start = time.perf_counter()
    while simulation.currentStep < jumps and failed < 10 * jumps:
        if max_wall_s is not None and time.perf_counter() - start > max_wall_s:
            break
        try:
            simulation.step(1)
        except JumpRejectedError:
            failed += 1
    wall = time.perf_counter() - start
    requested, jumps = jumps, simulation.currentStep
    speed = simulation.speed()
    valid = float("nan")
    if frames.xyz:
        traj = md.Trajectory(np.stack(frames.xyz), md.Topology.from_openmm(topology))
        valid = float(frame_validity(traj).valid.mean())
    return {"proposer": type(simulation.proposer).__name__, "jumps": jumps, "jump_ps": jump_ps,
            "relax": relax.describe(), "wall_s": wall, "seconds_per_cycle": wall / max(1, jumps),
            "ns_per_day": ns_per_day(jumps * jump_ps, wall), "model_share": speed["model_share"],
            "openmm_share": speed["openmm_share"], "rejections": sum(simulation.rejections.values()),
            "halvings": simulation.halvings, "failed_cycles": failed, "jumps_requested": requested,
            "valid_fraction": valid}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pdb", help="prepared PDB, e.g. tests/data/cln025.pdb")
    parser.add_argument("--preset", default="implicit-fast", choices=sorted(PRESETS), help="force-field preset")
    parser.add_argument("--platform", help="OpenMM platform (default: fastest available)")
    parser.add_argument("--md-steps", type=int, default=2500, help="timed plain-MD steps (default 2500)")
    parser.add_argument("--model", default="default",
                        help="STAR-MD model folder, default (the shipped model) or a proposer name (perturb)")
    parser.add_argument("--jumps", type=int, default=20, help="timed hybrid cycles (default 20)")
    parser.add_argument("--jump-ps", type=float, default=1000.0, help="simulated ps per jump (default 1000)")
    parser.add_argument("--relax-ps", type=float, default=RelaxSettings().time_ps, help="MD per relaxation, ps")
    parser.add_argument("--minimize-iterations", type=int, default=RelaxSettings().minimize_iterations)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-wall", type=float, help="stop the hybrid part after this many seconds")
    parser.add_argument("--json", default="benchmarks/results/speed.json", help="output JSON path")
    parser.add_argument("--md", default="benchmarks/results/speed.md", help="output Markdown table path")
    args = parser.parse_args()

    pdb = app.PDBFile(args.pdb)
    system, topology, positions = build_system(pdb.topology, pdb.positions, args.preset)
    platform = fastest_platform(args.platform)
    relax = RelaxSettings(time_ps=args.relax_ps, minimize_iterations=args.minimize_iterations)
    md_row = plain_md(topology, system, positions, args.preset, platform, args.md_steps)
    hy_row = hybrid(topology, system, positions, platform, args.model, args.jumps, args.jump_ps, relax, args.seed,
                    args.max_wall)
    ratio = hy_row["ns_per_day"] / md_row["ns_per_day"]
    print(f"system {args.pdb} ({system.getNumParticles()} atoms), preset {args.preset}, "
          f"platform {platform.getName()}, proposer {hy_row['proposer']}")
    print(f"{'engine':<8} {'ns/day':>12} {'s/cycle':>9} {'model':>7} {'openmm':>7} {'rejected':>9} {'failed':>7} "
          f"{'valid':>6}")
    print(f"{'MD':<8} {md_row['ns_per_day']:>12,.1f}")
    print(f"{'hybrid':<8} {hy_row['ns_per_day']:>12,.1f} {hy_row['seconds_per_cycle']:>9.3f} "
          f"{hy_row['model_share']:>7.1%} {hy_row['openmm_share']:>7.1%} {hy_row['rejections']:>9d} "
          f"{hy_row['failed_cycles']:>7d} {hy_row['valid_fraction']:>6.0%}")
    print(f"speed-up {ratio:,.0f}x (goal >= 100x); 1 us at {args.jump_ps:g} ps jumps: "
          f"{hy_row['seconds_per_cycle'] * 1e6 / args.jump_ps / 3600:.2f} h")
    load = os.getloadavg()[0]
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    atomic_write_json(args.json, {"pdb": args.pdb, "preset": args.preset, "platform": platform.getName(),
                                  "openmm": openmm.__version__, "load_average_1min": load, "model": args.model,
                                  "md": md_row, "hybrid": hy_row, "speedup": ratio})
    with atomic_write(args.md) as handle:
        handle.write(
            f"# Speed: plain OpenMM MD vs hybrid\n\n{args.pdb} ({system.getNumParticles()} atoms), preset "
            f"{args.preset}, platform {platform.getName()}, {os.cpu_count()} cores (1-min load {load:.1f}), "
            f"model `{args.model}`, {args.jump_ps:g} ps jumps, relaxation {args.relax_ps:g} ps.\n\n"
            "| Engine | ns/day | s/cycle | Model share | OpenMM share | Rejected proposals | Failed cycles | "
            "Valid frames |\n|---|---|---|---|---|---|---|---|\n"
            f"| MD | {md_row['ns_per_day']:,.1f} | | | | | | |\n"
            f"| hybrid | {hy_row['ns_per_day']:,.1f} | {hy_row['seconds_per_cycle']:.3f} | "
            f"{hy_row['model_share']:.1%} | {hy_row['openmm_share']:.1%} | {hy_row['rejections']} | "
            f"{hy_row['failed_cycles']} | {hy_row['valid_fraction']:.0%} |\n\n"
            f"Speed-up {ratio:,.1f}x (goal >= 100x).\n")


if __name__ == "__main__":
    main()
