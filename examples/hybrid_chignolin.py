"""Hybrid STAR-MD + OpenMM simulation of chignolin, written the way any OpenMM script is.

    python examples/hybrid_chignolin.py [MODEL]

MODEL is ``default`` (the model shipped with the package, used when none is given), a STAR-MD model
folder from ``starmd train``, or ``perturb`` (random small moves, no learned dynamics: the machinery
alone). Each step is one 1 ns jump followed by a short OpenMM relaxation; the standard reporters record
simulated time.
"""

import sys
from pathlib import Path

import openmm.app as app
import openmm.unit as unit

from openmm_starmd import StarMDSimulation

model = sys.argv[1] if len(sys.argv) > 1 else "default"
pdb = app.PDBFile(str(Path(__file__).resolve().parent.parent / "tests" / "data" / "cln025.pdb"))

# An ordinary implicit-solvent OpenMM system (the force field of the training MD; heavy hydrogens
# let the relaxation use 4 fs steps).
forcefield = app.ForceField("amber99sbildn.xml", "amber99_obc.xml")
system = forcefield.createSystem(pdb.topology, nonbondedMethod=app.NoCutoff, constraints=app.HBonds,
                                 hydrogenMass=1.5 * unit.amu)

simulation = StarMDSimulation(pdb.topology, system, model, jump=1 * unit.nanosecond, seed=1)
simulation.context.setPositions(pdb.positions)
simulation.reporters.append(app.XTCReporter("chignolin_hybrid.xtc", 1))
simulation.reporters.append(app.StateDataReporter(sys.stdout, 1, step=True, time=True, potentialEnergy=True,
                                                  temperature=True, speed=True))
simulation.reporters.append(app.CheckpointReporter("chignolin_hybrid.chk", 5))
simulation.step(10)  # 10 jumps = 10 ns of simulated time

print("rejected proposals:", {k: v for k, v in simulation.rejections.items() if v} or "none")
print("speed:", simulation.speed())
