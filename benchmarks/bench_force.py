"""Speed of OpenMM with and without StarMDForce: chignolin, implicit-fast preset, CPU platform, ns/day.

Each configuration runs ``--steps`` Langevin steps (4 fs, HMR) after a warm-up and reports the best of
``--repeats`` timed runs. The force's cost does not depend on the weights, so untrained networks of the
``tiny`` and ``small`` presets are timed, plus a trained model given with ``--checkpoint`` (default
/tmp/models/small_cln025 when it exists). ``--torch-threads`` sets torch's intra-op threads (the
force's tensors are small: 1 thread avoids oversubscribing the cores OpenMM's CPU platform uses).
Machine load is recorded: numbers are only comparable on an idle machine. Prints a table, writes JSON.

    python benchmarks/bench_force.py --json bench_force.json
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import openmm
import openmm.app as app
import torch

from openmm_starmd.atomic import atomic_write_json
from openmm_starmd.forcefields import build_system, make_integrator
from openmm_starmd.forces import StarMDForce
from openmm_starmd.model.config import preset
from openmm_starmd.model.network import StarMDNetwork
from openmm_starmd.units import ns_per_day

PDB = Path(__file__).resolve().parent.parent / "tests" / "data" / "cln025.pdb"
DEFAULT_CHECKPOINT = Path("/tmp/models/small_cln025")


def _time_md(system: openmm.System, topology: app.Topology, positions, steps: int, repeats: int) -> dict:
    integrator = make_integrator("implicit-fast", 300.0, 1.0, seed=1)
    simulation = app.Simulation(topology, system, integrator, openmm.Platform.getPlatformByName("CPU"))
    simulation.context.setPositions(positions)
    simulation.context.setVelocitiesToTemperature(300.0, 1)
    simulation.step(max(10, steps // 10))  # warm-up (TorchScript optimises on its first calls)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        simulation.step(steps)
        best = min(best, time.perf_counter() - start)
    step_ps = integrator.getStepSize().value_in_unit(openmm.unit.picosecond)
    return {"steps": steps, "seconds": best, "ms_per_step": 1e3 * best / steps,
            "ns_per_day": ns_per_day(steps * step_ps, best)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="timed MD steps per run (default 200)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per configuration (default 2)")
    parser.add_argument("--checkpoint", default=None, help="trained model folder to time as well")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--json", default="bench_force.json", help="output JSON path")
    args = parser.parse_args()
    torch.set_num_threads(args.torch_threads)

    pdb = app.PDBFile(str(PDB))
    base, topology, positions = build_system(pdb.topology, pdb.positions, "implicit-fast")
    models: list[tuple[str, object]] = [("tiny (untrained)", StarMDNetwork(preset("tiny"))),
                                        ("small (untrained)", StarMDNetwork(preset("small")))]
    checkpoint = args.checkpoint or (str(DEFAULT_CHECKPOINT) if (DEFAULT_CHECKPOINT / "model.json").is_file()
                                     else None)
    if checkpoint:
        models.append((f"checkpoint {checkpoint}", checkpoint))

    rows = [{"force": "none (OpenMM only)", **_time_md(base, topology, positions, args.steps, args.repeats)}]
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in models:
            system = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(base))
            starmd = StarMDForce(model, topology, positions, dt_ps=1000.0)
            system.addForce(starmd.create_openmm_force(Path(tmp) / "force.pt", weight=1.0))
            rows.append({"force": f"StarMDForce {name}",
                         **_time_md(system, topology, positions, args.steps, args.repeats)})

    meta = {"system": str(PDB), "preset": "implicit-fast", "platform": "CPU", "n_atoms": topology.getNumAtoms(),
            "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "load_average_1min": os.getloadavg()[0], "openmm": openmm.__version__, "torch": torch.__version__}
    print(f"{'force':<48} {'ms/step':>9} {'ns/day':>9}")
    for row in rows:
        print(f"{row['force']:<48} {row['ms_per_step']:>9.2f} {row['ns_per_day']:>9.1f}")
    print(f"machine load (1 min) {meta['load_average_1min']:.2f} on {meta['cpu_count']} cores")
    atomic_write_json(args.json, {"meta": meta, "rows": rows})
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
