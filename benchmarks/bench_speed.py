"""Hybrid (jump + relax) ns/day against plain OpenMM MD on the same system, platform and machine.

Runs both in one process: plain MD with the preset's integrator, then ``--jumps`` cycles of a
StarMDSimulation. Reports both speeds, their ratio (goal >= 100x), the share of hybrid wall time spent
in the model and in OpenMM, seconds per cycle, rejections, and the share of valid frames.

    python benchmarks/bench_speed.py tests/data/cln025.pdb --platform CPU --jumps 20 --model perturb
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
from openmm_starmd.atomic import atomic_write_json
from openmm_starmd.forcefields import PRESETS, build_system, fastest_platform, make_integrator
from openmm_starmd.simulation import RelaxSettings, StarMDSimulation
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
           relax: RelaxSettings, seed: int) -> dict:
    """Speed and validity of ``jumps`` hybrid cycles (the first cycle is timed too: no warm-up is hidden)."""
    simulation = StarMDSimulation(topology, system, model, jump=jump_ps * u.picosecond, relax=relax,
                                  platform=platform, seed=seed)
    simulation.context.setPositions(positions)
    frames = _Frames()
    simulation.reporters.append(frames)
    start = time.perf_counter()
    simulation.step(jumps)
    wall = time.perf_counter() - start
    speed = simulation.speed()
    traj = md.Trajectory(np.stack(frames.xyz), md.Topology.from_openmm(topology))
    return {"proposer": type(simulation.proposer).__name__, "jumps": jumps, "jump_ps": jump_ps,
            "relax": relax.describe(), "wall_s": wall, "seconds_per_cycle": wall / jumps,
            "ns_per_day": ns_per_day(jumps * jump_ps, wall), "model_share": speed["model_share"],
            "openmm_share": speed["openmm_share"], "rejections": sum(simulation.rejections.values()),
            "halvings": simulation.halvings, "valid_fraction": float(frame_validity(traj).valid.mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pdb", help="prepared PDB, e.g. tests/data/cln025.pdb")
    parser.add_argument("--preset", default="implicit-fast", choices=sorted(PRESETS), help="force-field preset")
    parser.add_argument("--platform", help="OpenMM platform (default: fastest available)")
    parser.add_argument("--md-steps", type=int, default=2500, help="timed plain-MD steps (default 2500)")
    parser.add_argument("--model", default="perturb", help="proposer name or STAR-MD model folder")
    parser.add_argument("--jumps", type=int, default=20, help="timed hybrid cycles (default 20)")
    parser.add_argument("--jump-ps", type=float, default=1000.0, help="simulated ps per jump (default 1000)")
    parser.add_argument("--relax-ps", type=float, default=RelaxSettings().time_ps, help="MD per relaxation, ps")
    parser.add_argument("--minimize-iterations", type=int, default=RelaxSettings().minimize_iterations)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default="bench_speed.json", help="output JSON path")
    args = parser.parse_args()

    pdb = app.PDBFile(args.pdb)
    system, topology, positions = build_system(pdb.topology, pdb.positions, args.preset)
    platform = fastest_platform(args.platform)
    relax = RelaxSettings(time_ps=args.relax_ps, minimize_iterations=args.minimize_iterations)
    md_row = plain_md(topology, system, positions, args.preset, platform, args.md_steps)
    hy_row = hybrid(topology, system, positions, platform, args.model, args.jumps, args.jump_ps, relax, args.seed)
    ratio = hy_row["ns_per_day"] / md_row["ns_per_day"]
    print(f"system {args.pdb} ({system.getNumParticles()} atoms), preset {args.preset}, "
          f"platform {platform.getName()}, proposer {hy_row['proposer']}")
    print(f"{'engine':<8} {'ns/day':>12} {'s/cycle':>9} {'model':>7} {'openmm':>7} {'rejected':>9} {'valid':>6}")
    print(f"{'MD':<8} {md_row['ns_per_day']:>12,.1f}")
    print(f"{'hybrid':<8} {hy_row['ns_per_day']:>12,.1f} {hy_row['seconds_per_cycle']:>9.3f} "
          f"{hy_row['model_share']:>7.1%} {hy_row['openmm_share']:>7.1%} {hy_row['rejections']:>9d} "
          f"{hy_row['valid_fraction']:>6.0%}")
    print(f"speed-up {ratio:,.0f}x (goal >= 100x); 1 us at {args.jump_ps:g} ps jumps: "
          f"{hy_row['seconds_per_cycle'] * 1e6 / args.jump_ps / 3600:.2f} h")
    atomic_write_json(args.json, {"pdb": args.pdb, "preset": args.preset, "platform": platform.getName(),
                                  "openmm": openmm.__version__, "load_average_1min": os.getloadavg()[0],
                                  "md": md_row, "hybrid": hy_row, "speedup": ratio})


if __name__ == "__main__":
    main()
