"""Explicit solvent: chignolin in a TIP3P box, plain OpenMM MD vs the hybrid at 1 ns jumps, one process.

Stages, each cached under ``--work`` (a rerun continues where it stopped):

1. the box: tests/data/cln025.pdb solvated by :func:`openmm_starmd.forcefields.solvate` (``explicit``
   preset: amber14 + TIP3P, PME, padding 1.0 nm, Na+/Cl-), a MonteCarloBarostat (1 bar, every 25 steps;
   ``--nvt`` leaves it out), minimised and equilibrated ``--equil`` of plain MD;
2. the reference: ``--ref`` of plain Langevin MD from the equilibrated box, a frame every ``--ref-every``,
   timed (ns/day by wall and CPU clock);
3. the hybrid: :class:`~openmm_starmd.StarMDSimulation` (shipped model, default relaxation, seed
   ``--seed``) from the same equilibrated state and System, ``--jumps`` jumps of ``--jump``, a checkpoint
   after every jump;
4. plain MD timed again (``--md-steps``) after the hybrid.

Per frame of both runs: box density (total mass / box volume, g/cm³; it moves only with a barostat), the
water O count within 0.35 nm of a protein heavy atom (first shell), the bulk water density (waters more
than 0.8 nm from the protein over the volume of that region, a fixed fractional grid of 8,000 points,
g/cm³), the closest water to the protein and the potential energy. Fidelity, as measured: CA RMSF Pearson
r and φ/ψ JSD of the hybrid's frames against the reference, next to the reference's first half against its
second half. ``--dry-run`` prints the plan, ``--small`` runs a minute-long smoke version.

    python benchmarks/bench_explicit.py --work /work/scratch/explicit/bench
"""

from __future__ import annotations

import argparse
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

from openmm_starmd import RelaxSettings, StarMDSimulation
from openmm_starmd.analysis.ensemble import ensemble_metrics
from openmm_starmd.analysis.validity import frame_validity
from openmm_starmd.atomic import atomic_write, atomic_write_json
from openmm_starmd.forcefields import build_system, make_integrator, solvate
from openmm_starmd.runfolder import software_versions, truncate_xtc
from openmm_starmd.simulation.solvent import SolventLayout, box_of, closest_distances
from openmm_starmd.units import ns_per_day, parse_time

ROOT = Path(__file__).resolve().parent.parent
PRESET = "explicit"
AMU_PER_NM3_TO_G_PER_CM3 = 1.66053907e-3
WATER_MASS_AMU = 18.015
SHELL_NM, BULK_NM = 0.35, 0.8


def grid_points(n: int = 20) -> np.ndarray:
    """``[n³, 3]`` fractional coordinates, cell centres of an n×n×n grid."""
    axis = (np.arange(n) + 0.5) / n
    return np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)


class Measure:
    """Per-frame solvent observables of one box layout."""

    def __init__(self, topology: app.Topology, system: openmm.System) -> None:
        self.layout = SolventLayout(topology, system)
        self.mass = sum(system.getParticleMass(i).value_in_unit(u.dalton) for i in range(system.getNumParticles()))
        self.water_o = np.array([a.index for a in topology.atoms() if a.residue.name == "HOH" and a.name == "O"])
        self.grid = grid_points()

    def __call__(self, state: openmm.State) -> dict:
        x = state.getPositions(asNumpy=True).value_in_unit(u.nanometer)
        box = box_of(state)
        volume = float(np.linalg.det(box))
        protein = x[self.layout.protein_heavy]
        water = closest_distances(x[self.water_o], protein, box)
        points = self.grid @ box
        bulk_volume = volume * float((closest_distances(points, protein, box) > BULK_NM).mean())
        bulk = int((water > BULK_NM).sum())
        return {"volume_nm3": volume, "density_g_cm3": self.mass * AMU_PER_NM3_TO_G_PER_CM3 / volume,
                "shell_waters": int((water < SHELL_NM).sum()),
                "bulk_water_g_cm3": bulk * WATER_MASS_AMU * AMU_PER_NM3_TO_G_PER_CM3 / bulk_volume,
                "closest_water_nm": float(water.min()),
                "energy_kj_mol": state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)}


def build(work: Path, nvt: bool) -> tuple[app.Topology, openmm.System, u.Quantity]:
    """The solvated box (cached as box.pdb) and its System."""
    path = work / "box.pdb"
    if not path.exists():
        pdb = app.PDBFile(str(ROOT / "tests/data/cln025.pdb"))
        topology, positions = solvate(pdb.topology, pdb.positions, PRESET)
        with atomic_write(path) as handle:
            app.PDBFile.writeFile(topology, positions, handle, keepIds=True)
    pdb = app.PDBFile(str(path))
    system, topology, positions = build_system(pdb.topology, pdb.positions, PRESET)
    if not nvt:
        system.addForce(openmm.MonteCarloBarostat(1.0 * u.bar, 300.0 * u.kelvin, 25))
    return topology, system, positions


def context_for(system: openmm.System, seed: int) -> tuple[openmm.Context, openmm.Integrator]:
    integrator = make_integrator(PRESET, 300.0, 1.0, seed)
    platform = openmm.Platform.getPlatformByName("CPU")
    return openmm.Context(system, integrator, platform, {"Threads": "1"}), integrator


def equilibrate(work: Path, system: openmm.System, positions: u.Quantity, equil_ps: float) -> openmm.State:
    path = work / "equilibrated.xml"
    if not path.exists():
        context, integrator = context_for(system, 1)
        context.setPositions(positions)
        openmm.LocalEnergyMinimizer.minimize(context, 10.0, 1000)
        context.setVelocitiesToTemperature(300.0 * u.kelvin, 1)
        steps = round(equil_ps / integrator.getStepSize().value_in_unit(u.picosecond))
        for _ in tqdm_range(steps // 500, "equilibration (500 steps)"):
            integrator.step(500)
        integrator.step(steps % 500)
        state = context.getState(positions=True, velocities=True, parameters=True)
        with atomic_write(path) as handle:
            handle.write(openmm.XmlSerializer.serialize(state))
    return openmm.XmlSerializer.deserialize(path.read_text())


def tqdm_range(n: int, desc: str):
    from tqdm import tqdm

    return tqdm(range(n), desc=desc, dynamic_ncols=True)


def read_rows(path: Path, keep: int) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    rows = rows[:keep]
    with atomic_write(path) as handle:
        handle.writelines(json.dumps(r) + "\n" for r in rows)
    return rows


def reference(work: Path, topology: app.Topology, system: openmm.System, start: openmm.State, measure: Measure,
              ref_ps: float, every_ps: float) -> list[dict]:
    """Plain MD, a frame and a checkpoint every ``every_ps``; rows carry the MD wall and CPU seconds."""
    folder = work / "reference"
    folder.mkdir(exist_ok=True)
    context, integrator = context_for(system, 2)
    steps = round(every_ps / integrator.getStepSize().value_in_unit(u.picosecond))
    frames = round(ref_ps / every_ps)
    checkpoint = folder / "checkpoint.chk"
    if checkpoint.exists():
        context.loadCheckpoint(checkpoint.read_bytes())
    else:
        context.setState(start)
        context.setTime(0.0)
        context.setStepCount(0)
    done = round(context.getStepCount() / steps)
    rows = read_rows(folder / "frames.jsonl", done)
    truncate_xtc(folder / "protein.xtc", done)
    for _ in tqdm_range(frames - done, "reference MD frames"):
        wall, cpu = time.perf_counter(), time.process_time()
        integrator.step(steps)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        state = context.getState(positions=True, energy=True)
        write_frame(folder / "protein.xtc", state, measure.layout, every_ps)
        rows.append({"md_wall_s": wall, "md_cpu_s": cpu, "steps": steps, **measure(state)})
        with open(folder / "frames.jsonl", "a") as handle:
            handle.write(json.dumps(rows[-1]) + "\n")
        with atomic_write(checkpoint, "wb") as handle:
            handle.write(context.createCheckpoint())
    return rows


def write_frame(path: Path, state: openmm.State, layout: SolventLayout, every_ps: float) -> None:
    """Append the protein's atoms of ``state`` (unwrapped, whole) to an XTC file, a frame per ``every_ps``."""
    x = state.getPositions(asNumpy=True).value_in_unit(u.nanometer)[layout.protein_atoms]
    xtc = app.XTCFile(str(path), layout.protein_topology, every_ps * u.picosecond, append=path.exists())
    xtc.writeModel(x * u.nanometer, periodicBoxVectors=state.getPeriodicBoxVectors())


def hybrid(work: Path, topology: app.Topology, system: openmm.System, start: openmm.State, measure: Measure,
           jumps: int, jump_ps: float, seed: int) -> tuple[list[dict], StarMDSimulation]:
    folder = work / "hybrid"
    folder.mkdir(exist_ok=True)
    sim = StarMDSimulation(topology, system, "default", jump=jump_ps, relax=RelaxSettings(), seed=seed,
                           platform="CPU", platformProperties={"Threads": "1"}, device="cpu")
    checkpoint = folder / "checkpoint.chk"
    if checkpoint.exists():
        sim.loadCheckpoint(checkpoint)
    else:
        sim.context.setState(start)
        sim.context.setTime(0.0)
        sim.context.setStepCount(0)
    done = sim.currentStep
    rows = read_rows(folder / "frames.jsonl", done)
    truncate_xtc(folder / "protein.xtc", done)
    for _ in tqdm_range(jumps - done, "hybrid jumps"):
        cpu = time.process_time()
        sim.step(1)
        cpu = time.process_time() - cpu
        state = sim.context.getState(positions=True, energy=True, groups=sim._physical_groups)
        write_frame(folder / "protein.xtc", state, measure.layout, jump_ps)
        cycle = sim.last_cycle
        rows.append({"wall_s": cycle.wall_s, "cpu_s": cpu, "model_s": cycle.model_s, "openmm_s": cycle.openmm_s,
                     "rejections": cycle.num_rejections, "proposals": cycle.proposals, "raw_valid": cycle.raw_valid,
                     **measure(state)})
        with open(folder / "frames.jsonl", "a") as handle:
            handle.write(json.dumps(rows[-1]) + "\n")
        sim.saveCheckpoint(checkpoint)
    return rows, sim


def md_speed(system: openmm.System, start: openmm.State, steps: int) -> dict:
    context, integrator = context_for(system, 3)
    context.setState(start)
    integrator.step(10)
    wall, cpu = time.perf_counter(), time.process_time()
    integrator.step(steps)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    simulated = steps * integrator.getStepSize().value_in_unit(u.picosecond)
    return {"steps": steps, "ns_per_day": ns_per_day(simulated, wall), "ns_per_day_cpu": ns_per_day(simulated, cpu)}


def stats(values: list[float]) -> dict:
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(a.mean()), "sd": float(a.std()), "min": float(a.min()), "max": float(a.max())}


def fidelity(work: Path, layout: SolventLayout) -> dict:
    top = md.Topology.from_openmm(layout.protein_topology)
    ref = md.load(str(work / "reference/protein.xtc"), top=top)
    gen = md.load(str(work / "hybrid/protein.xtc"), top=top)
    half = ref.n_frames // 2
    keys = ("rmsf_pearson_r", "torsion_jsd", "pc_jsd")
    hybrid_m = ensemble_metrics(gen, ref)
    floor = ensemble_metrics(ref[:half], ref[half:])
    return {"reference_frames": ref.n_frames, "hybrid_frames": gen.n_frames,
            "hybrid_vs_reference": {k: hybrid_m[k] for k in keys},
            "reference_first_half_vs_second_half": {k: floor[k] for k in keys},
            "hybrid_relaxed_valid_fraction": float(frame_validity(gen).valid.mean())}


def summarise(args, ref_rows: list[dict], hyb_rows: list[dict], sim: StarMDSimulation, speed_after: dict,
              layout: SolventLayout, work: Path) -> dict:
    ref_wall = sum(r["md_wall_s"] for r in ref_rows)
    ref_cpu = sum(r["md_cpu_s"] for r in ref_rows)
    ref_ps = sum(r["steps"] for r in ref_rows) * 0.002
    plain = {"during_reference": {"ns_per_day": ns_per_day(ref_ps, ref_wall),
                                  "ns_per_day_cpu": ns_per_day(ref_ps, ref_cpu)},
             "after_hybrid": speed_after}
    hybrid_wall = sum(r["wall_s"] for r in hyb_rows)
    hybrid_cpu = sum(r["cpu_s"] for r in hyb_rows)
    simulated = len(hyb_rows) * args.jump_ps
    hybrid_speed = {"ns_per_day": ns_per_day(simulated, hybrid_wall),
                    "ns_per_day_cpu": ns_per_day(simulated, hybrid_cpu),
                    "seconds_per_jump": hybrid_wall / max(len(hyb_rows), 1),
                    "openmm_share": sum(r["openmm_s"] for r in hyb_rows) / hybrid_wall}
    plain_wall = np.mean([plain["during_reference"]["ns_per_day"], speed_after["ns_per_day"]])
    plain_cpu = np.mean([plain["during_reference"]["ns_per_day_cpu"], speed_after["ns_per_day_cpu"]])
    dens = {"plain": stats([r["density_g_cm3"] for r in ref_rows]),
            "hybrid": stats([r["density_g_cm3"] for r in hyb_rows])}
    bulk = {"plain": stats([r["bulk_water_g_cm3"] for r in ref_rows]),
            "hybrid": stats([r["bulk_water_g_cm3"] for r in hyb_rows])}
    out = {
        "settings": {"jumps": len(hyb_rows), "jump_ps": args.jump_ps, "reference_ps": ref_ps,
                     "reference_every_ps": args.ref_every_ps, "equilibration_ps": args.equil_ps,
                     "barostat": not args.nvt, "seed": args.seed, "model": "default", "platform": "CPU, 1 thread",
                     "relax": RelaxSettings().describe(), "atoms": layout.num_atoms,
                     "waters": len(layout.molecules), "box": "amber14 + TIP3P, PME, padding 1.0 nm"},
        "plain_md": plain, "hybrid": hybrid_speed,
        "speed_ratio": {"wall": hybrid_speed["ns_per_day"] / plain_wall,
                        "cpu": hybrid_speed["ns_per_day_cpu"] / plain_cpu},
        "validity": {**sim.validity(), "rejections_by_reason": {k: v for k, v in sim.rejections.items() if v},
                     "halvings": sim.halvings},
        "solvent_merges": {"overlapping": sim.solvent_stats.overlapping, "moved": sim.solvent_stats.moved},
        "density_g_cm3": {**dens, "relative_difference": dens["hybrid"]["mean"] / dens["plain"]["mean"] - 1.0},
        "bulk_water_g_cm3": {**bulk, "relative_difference": bulk["hybrid"]["mean"] / bulk["plain"]["mean"] - 1.0},
        "shell_waters": {"plain": stats([r["shell_waters"] for r in ref_rows]),
                         "hybrid": stats([r["shell_waters"] for r in hyb_rows])},
        "closest_water_nm": {"plain": stats([r["closest_water_nm"] for r in ref_rows]),
                             "hybrid": stats([r["closest_water_nm"] for r in hyb_rows])},
        "potential_energy_kj_mol": {"plain": stats([r["energy_kj_mol"] for r in ref_rows]),
                                    "hybrid": stats([r["energy_kj_mol"] for r in hyb_rows])},
        "fidelity": fidelity(work, layout),
        "load_average": os.getloadavg(),
        "versions": software_versions(),
    }
    return out


def markdown(r: dict) -> str:
    s = r["settings"]
    d, b, v = r["density_g_cm3"], r["bulk_water_g_cm3"], r["validity"]
    f = r["fidelity"]
    lines = [
        "# Explicit solvent: chignolin in TIP3P, plain OpenMM MD vs the hybrid",
        "",
        f"`benchmarks/bench_explicit.py`; {s['atoms']} atoms ({s['waters']} solvent molecules), {s['box']}, "
        f"{'NPT (MonteCarloBarostat 1 bar)' if s['barostat'] else 'NVT'}, 300 K, 2 fs, CPU platform 1 thread; "
        f"{s['equilibration_ps']:g} ps equilibration; reference {s['reference_ps']:g} ps of plain MD "
        f"(a frame every {s['reference_every_ps']:g} ps); hybrid {s['jumps']} jumps of {s['jump_ps'] / 1000:g} ns, "
        f"shipped model, default relaxation, seed {s['seed']}. Load average at the end {r['load_average'][0]:.1f}.",
        "",
        "| quantity | plain MD | hybrid |",
        "|---|---|---|",
        f"| ns/day (wall) | {r['plain_md']['during_reference']['ns_per_day']:.1f} (after: "
        f"{r['plain_md']['after_hybrid']['ns_per_day']:.1f}) | {r['hybrid']['ns_per_day']:,.0f} "
        f"(**{r['speed_ratio']['wall']:.0f}×**; by CPU time {r['speed_ratio']['cpu']:.0f}×) |",
        f"| box density g/cm³ | {d['plain']['mean']:.4f} ± {d['plain']['sd']:.4f} | {d['hybrid']['mean']:.4f} ± "
        f"{d['hybrid']['sd']:.4f} (**{100 * d['relative_difference']:+.2f} %**) |",
        f"| bulk water (> {BULK_NM} nm from protein) g/cm³ | {b['plain']['mean']:.4f} ± {b['plain']['sd']:.4f} | "
        f"{b['hybrid']['mean']:.4f} ± {b['hybrid']['sd']:.4f} ({100 * b['relative_difference']:+.2f} %) |",
        f"| waters within {SHELL_NM} nm of protein | {r['shell_waters']['plain']['mean']:.1f} ± "
        f"{r['shell_waters']['plain']['sd']:.1f} | {r['shell_waters']['hybrid']['mean']:.1f} ± "
        f"{r['shell_waters']['hybrid']['sd']:.1f} |",
        f"| closest water O to protein heavy atom, min nm | {r['closest_water_nm']['plain']['min']:.3f} | "
        f"{r['closest_water_nm']['hybrid']['min']:.3f} |",
        f"| potential energy kJ/mol | {r['potential_energy_kj_mol']['plain']['mean']:.0f} ± "
        f"{r['potential_energy_kj_mol']['plain']['sd']:.0f} | {r['potential_energy_kj_mol']['hybrid']['mean']:.0f} ± "
        f"{r['potential_energy_kj_mol']['hybrid']['sd']:.0f} |",
        "",
        f"Hybrid: {v['raw_proposals']} proposals, raw validity {100 * v['raw_valid_fraction']:.0f} % (protein, mapped, "
        f"before guards and relaxation), {v['rejections']} rejected ({100 * v['rejection_rate']:.1f} %; "
        f"{v['rejections_by_reason']}), {v['halvings']} halvings; relaxed frames valid "
        f"{100 * f['hybrid_relaxed_valid_fraction']:.0f} %; {r['hybrid']['seconds_per_jump']:.1f} s per jump "
        f"({100 * r['hybrid']['openmm_share']:.0f} % OpenMM); solvent molecules found inside the moved protein "
        f"{r['solvent_merges']['overlapping']}, moved into the vacated space {r['solvent_merges']['moved']}.",
        "",
        "Fidelity as measured (the model was trained on implicit-solvent MD; the reference is "
        f"{s['reference_ps']:g} ps, "
        f"{f['reference_frames']} frames, far shorter than the hybrid's {s['jumps'] * s['jump_ps'] / 1000:g} ns):",
        "",
        "| | CA RMSF Pearson r | φ/ψ JSD | PC JSD |",
        "|---|---|---|---|",
    ]
    for name, key in (("hybrid vs reference", "hybrid_vs_reference"),
                      ("reference 1st half vs 2nd half", "reference_first_half_vs_second_half")):
        m = f[key]
        lines.append(f"| {name} | {m['rmsf_pearson_r']:.3f} | {m['torsion_jsd']:.3f} | {m['pc_jsd']:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, help="cache folder (box, equilibration, reference, hybrid)")
    parser.add_argument("--jumps", type=int, default=100)
    parser.add_argument("--jump", default="1ns")
    parser.add_argument("--ref", default="100ps", help="plain reference MD length (default 100ps)")
    parser.add_argument("--ref-every", default="2ps", help="reference frame interval (default 2ps)")
    parser.add_argument("--equil", default="40ps", help="plain equilibration before both runs (default 40ps)")
    parser.add_argument("--md-steps", type=int, default=1000, help="plain MD steps timed after the hybrid")
    parser.add_argument("--nvt", action="store_true", help="no barostat")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--small", action="store_true", help="smoke run: 2 jumps, 6 ps reference, 1 ps equilibration")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and the estimated time")
    parser.add_argument("--json", default=str(ROOT / "benchmarks/results/explicit.json"))
    parser.add_argument("--md", default=str(ROOT / "benchmarks/results/explicit.md"))
    args = parser.parse_args()
    if args.small:
        args.jumps, args.ref, args.ref_every, args.equil, args.md_steps = 2, "6ps", "1ps", "1ps", 100
    args.jump_ps, args.ref_ps = parse_time(args.jump, "--jump"), parse_time(args.ref, "--ref")
    args.ref_every_ps, args.equil_ps = parse_time(args.ref_every, "--ref-every"), parse_time(args.equil, "--equil")
    step_s = 0.012  # measured: ~4,200 atoms, PME, one CPU thread, 2026-12-01
    plan = (f"equilibration {args.equil_ps:g} ps (~{args.equil_ps / 0.002 * step_s / 60:.0f} min), reference "
            f"{args.ref_ps:g} ps (~{args.ref_ps / 0.002 * step_s / 60:.0f} min), hybrid {args.jumps} x "
            f"{args.jump_ps:g} ps (~{args.jumps * 18 / 60:.0f} min at ~18 s per jump)")
    print(plan, flush=True)
    if args.dry_run:
        return
    torch.set_num_threads(1)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    topology, system, positions = build(work, args.nvt)
    measure = Measure(topology, system)
    start = equilibrate(work, system, positions, args.equil_ps)
    ref_rows = reference(work, topology, system, start, measure, args.ref_ps, args.ref_every_ps)
    hyb_rows, sim = hybrid(work, topology, system, start, measure, args.jumps, args.jump_ps, args.seed)
    after = md_speed(system, start, args.md_steps)
    result = summarise(args, ref_rows, hyb_rows, sim, after, measure.layout, work)
    atomic_write_json(Path(args.json), result)
    with atomic_write(Path(args.md)) as handle:
        handle.write(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    sys.exit(main())
