"""Trace every relaxation of a hybrid run stage by stage: where does a proposal blow up?

Per relaxation: closest non-bonded atom pair of the mapped target (beyond 1-4 neighbours) and how many pairs
are under 0.1 nm, energy and largest atomic force of the target, after the clash relief (when on) and after
the restrained minimisation, and the MD step (checked every 5 steps) at which the energy first exceeds
1e6 kJ/mol or turns non-finite, with the restraint constant of that stage. The relaxation re-implemented
here follows :func:`openmm_starmd.simulation.relax.relax` step for step, with checks in between.

    python benchmarks/trace_relax.py PREPARED.pdb OUT.json NS [WALL_S] [--old]

``--old`` traces the protocol shipped before the clash relief (1 ps, no clash relief).
"""
import json
import sys
import time

import networkx as nx
import numpy as np
import openmm
import openmm.unit as u
import torch

from openmm_starmd import prep
from openmm_starmd.forcefields import build_system
from openmm_starmd.simulation import JumpRejectedError, StarMDSimulation
from openmm_starmd.simulation.guards import OPENMM_ERROR
from openmm_starmd.simulation.proposer import resolve_proposer
from openmm_starmd.simulation.relax import RelaxSettings, relieve_clashes, stage_steps

torch.set_num_threads(1)
OLD = "--old" in sys.argv
sys.argv = [a for a in sys.argv if a != "--old"]

pdb, out, ns = sys.argv[1], sys.argv[2], float(sys.argv[3])
start = prep.load_pdb(pdb)
system, top, pos = build_system(start.topology, start.positions, "implicit-fast")
res_of = np.array([a.residue.index for a in top.atoms()])
# Pairs within three bonds are not clashes.
g = nx.Graph()
g.add_nodes_from(range(top.getNumAtoms()))
g.add_edges_from((a.index, b.index) for a, b in top.bonds())
near = {i: set(nx.single_source_shortest_path_length(g, i, cutoff=3)) for i in range(top.getNumAtoms())}
records = []
targets = []


def closest(x: np.ndarray) -> tuple[float, int, int, int]:
    """Closest pair beyond 1-4 neighbours (nm, atoms) and the number of such pairs under 0.1 nm."""
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    n = len(x)
    for i in range(n):
        d[i, list(near[i])] = np.inf
    i, j = np.unravel_index(np.argmin(d), d.shape)
    return float(d[i, j]), int(i), int(j), int((d < 0.1).sum() // 2)


class Traced(StarMDSimulation):
    """StarMDSimulation whose relaxation records every stage."""

    def _relax(self, target, box=None, stats=None):  # implicit solvent only: no box, no retry
        seed = int(torch.randint(1, 2**31 - 1, (1,), generator=self.generator, device=self.generator.device))
        s, ctx = self.relax_settings, self.context
        integ = ctx.getIntegrator()
        rec = {"t_ps": self._cycle_start_ps}
        targets.append(np.asarray(target, dtype=np.float64).copy())
        dmin, i, j, n01 = closest(target)
        rec.update(target_dmin=dmin, target_pair=[i, j], target_pair_res=[int(res_of[i]), int(res_of[j])],
                   target_n_lt_0p1=n01)

        def energy(groups=self._physical_groups):
            st = ctx.getState(energy=True, forces=True, groups=groups)
            f = st.getForces(asNumpy=True).value_in_unit(u.kilojoule_per_mole / u.nanometer)
            return (st.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole),
                    float(np.linalg.norm(f, axis=1).max()))

        try:
            self.restraints.set_targets(ctx, target)
            ctx.setPositions(target)
            self.restraints.set_strength(ctx, s.restraint_k)
            rec["e_target"], rec["fmax_target"] = energy()
            if s.clash_iterations:
                _, rec["clash_iterations"] = relieve_clashes(ctx, target, s.clash_iterations, s.clash_force,
                                                             s.clash_step_nm)
                rec["e_clash"], rec["fmax_clash"] = energy()
            openmm.LocalEnergyMinimizer.minimize(ctx, s.minimize_tolerance, s.minimize_iterations)
            rec["e_min"], rec["fmax_min"] = energy()
            x = ctx.getState(positions=True).getPositions(asNumpy=True).value_in_unit(u.nanometer)
            rec["min_dmin"] = closest(x)[0]
            step_ps = integ.getStepSize().value_in_unit(u.picosecond)
            total = round(s.time_ps / step_ps)
            ctx.setVelocitiesToTemperature(integ.getTemperature(), seed)
            stages = min(s.ramp_stages, total)
            strengths = RelaxSettings(**{**s.describe(), "ramp_stages": stages}).stage_strengths()
            done = 0
            rec["stage_e"] = []
            for k, n in zip(strengths, stage_steps(total, len(strengths)), strict=True):
                self.restraints.set_strength(ctx, k)
                for c in range(0, n, 5):
                    integ.step(min(5, n - c))
                    done += min(5, n - c)
                    e = ctx.getState(energy=True).getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
                    if not np.isfinite(e) or e > 1e6:
                        rec["md_blow_step"], rec["md_blow_k"] = done, k
                        raise openmm.OpenMMException("blow")
                rec["stage_e"].append(energy()[0])
            self.restraints.set_strength(ctx, 0.0)
            st = ctx.getState(positions=True, energy=True, groups=self._physical_groups)
        except openmm.OpenMMException as exc:
            rec["error"] = str(exc)[:80]
            rec.setdefault("md_blow_step", None)
            records.append(rec)
            return target, float("nan"), OPENMM_ERROR
        e = st.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
        x = st.getPositions(asNumpy=True).value_in_unit(u.nanometer)
        rec["e_final"] = e
        reason = self.guard.check_relaxed(x, e)
        rec["guard"] = reason
        records.append(rec)
        return x, e, None


relax_settings = RelaxSettings(time_ps=1.0, clash_iterations=0) if OLD else RelaxSettings()
sim = Traced(top, system, resolve_proposer("default", top), jump=1000.0, relax=relax_settings, seed=1)
sim.context.setPositions(pos)
t0 = time.time()
failed = 0
wall_limit = float(sys.argv[4]) if len(sys.argv) > 4 else 420.0
while sim.currentStep < ns and time.time() - t0 < wall_limit:
    try:
        sim.step(1)
    except JumpRejectedError:
        failed += 1
        sim.reset_history()
json.dump({"records": records, "rejections": sim.rejections, "cycles": sim.currentStep, "failed": failed,
           "wall": time.time() - t0}, open(out, "w"), indent=1)
np.save(out.replace(".json", "_targets.npy"), np.array(targets))
print(pdb, sim.currentStep, sim.rejections, failed, time.time() - t0)
