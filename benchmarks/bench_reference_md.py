"""Speed of plain OpenMM MD (the engine of ``starmd md``) per force-field preset, in ns/day.

Builds the system exactly as :func:`openmm_starmd.reference.run_reference_md` does, minimises, draws
velocities, runs a short warm-up, then times ``--steps`` integrator steps. Prints a table and writes JSON.

    python benchmarks/bench_reference_md.py tests/data/cln025.pdb --platform CPU --steps 1000
"""

from __future__ import annotations

import argparse
import json
import os
import time

import openmm
import openmm.app as app
import openmm.unit as u

from openmm_starmd.forcefields import PRESETS, build_system, fastest_platform, make_integrator
from openmm_starmd.prep import load_pdb
from openmm_starmd.units import ns_per_day


def measure(pdb: str, preset: str, platform: str | None, steps: int) -> dict:
    """Time ``steps`` MD steps of ``pdb`` with ``preset``; returns the row of the table."""
    prepared = load_pdb(pdb)
    topology, positions = prepared.topology, prepared.positions
    system, topology, positions = build_system(topology, positions, preset)
    integrator = make_integrator(preset, 300.0, 1.0, seed=1)
    chosen = fastest_platform(platform)
    simulation = app.Simulation(topology, system, integrator, chosen)
    simulation.context.setPositions(positions)
    simulation.minimizeEnergy()
    simulation.context.setVelocitiesToTemperature(300.0 * u.kelvin, 1)
    simulation.step(max(steps // 10, 10))
    start = time.perf_counter()
    simulation.step(steps)
    wall = time.perf_counter() - start
    simulated_ps = steps * PRESETS[preset].timestep_ps
    return {"preset": preset, "platform": chosen.getName(), "atoms": system.getNumParticles(),
            "timestep_fs": PRESETS[preset].timestep_ps * 1000, "steps": steps, "wall_s": round(wall, 3),
            "ns_per_day": round(ns_per_day(simulated_ps, wall), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pdb", help="prepared PDB, e.g. tests/data/cln025.pdb")
    parser.add_argument("--presets", nargs="+", default=["implicit", "implicit-fast"], choices=sorted(PRESETS))
    parser.add_argument("--platform", help="OpenMM platform (default: fastest available)")
    parser.add_argument("--steps", type=int, default=1000, help="timed steps per preset (default 1000)")
    parser.add_argument("--json", default="bench_reference_md.json", help="output JSON path")
    args = parser.parse_args()
    rows = [measure(args.pdb, preset, args.platform, args.steps) for preset in args.presets]
    print(f"{'preset':<14} {'platform':<10} {'atoms':>6} {'dt/fs':>6} {'steps':>6} {'wall/s':>8} {'ns/day':>8}")
    for row in rows:
        print(f"{row['preset']:<14} {row['platform']:<10} {row['atoms']:>6} {row['timestep_fs']:>6g} "
              f"{row['steps']:>6} {row['wall_s']:>8.2f} {row['ns_per_day']:>8.1f}")
    report = {"pdb": args.pdb, "openmm": openmm.__version__, "cpu_threads": os.environ.get("OPENMM_CPU_THREADS"),
              "load_average_1min": os.getloadavg()[0], "rows": rows}
    with open(args.json, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=1)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
