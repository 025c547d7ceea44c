"""A backbone-only chignolin (N, CA, C) driven by StarMDForce plus harmonic bonds and angles.

The learned STAR-MD score acts as an ordinary OpenMM Force (through openmm-torch): the System is
integrated by LangevinMiddleIntegrator and observed with StateDataReporter, like any other OpenMM
simulation. The System is written as XML next to the TorchScript file of the force, so it can be
reloaded with ``XmlSerializer`` (openmm-torch must be imported first).

Without ``--checkpoint`` a tiny network with random weights is used: the run then only shows the
mechanics (it takes seconds); give a trained model folder for physically meaningful forces.

    python examples/starmd_force_backbone.py --steps 1000
    python examples/starmd_force_backbone.py --checkpoint /tmp/models/small_cln025 --weight 0.5
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as u
import torch

from openmm_starmd.forces import WEIGHT_PARAMETER, StarMDForce
from openmm_starmd.model.config import preset
from openmm_starmd.model.network import StarMDNetwork

PDB = Path(__file__).resolve().parent.parent / "tests" / "data" / "cln025.pdb"
BOND_K = 1.0e5  # kJ/mol/nm²: stiff enough to keep the backbone geometry, soft enough for 2 fs steps
ANGLE_K = 400.0  # kJ/mol/rad²


def backbone_model(pdb_path: Path) -> tuple[app.Topology, np.ndarray]:
    """Topology and positions ``[n_atoms, 3]`` nm of the N, CA, C atoms of a protein PDB (bonds kept)."""
    pdb = app.PDBFile(str(pdb_path))
    modeller = app.Modeller(pdb.topology, pdb.positions)
    modeller.delete([a for a in modeller.topology.atoms() if a.name not in ("N", "CA", "C")])
    return modeller.topology, np.asarray(modeller.positions.value_in_unit(u.nanometer))


def bonded_system(topology: app.Topology, positions: np.ndarray) -> openmm.System:
    """Masses plus harmonic bonds and angles whose rest values are the starting structure's."""
    system = openmm.System()
    for atom in topology.atoms():
        system.addParticle(atom.element.mass)
    bonds = openmm.HarmonicBondForce()
    angles = openmm.HarmonicAngleForce()
    neighbours: dict[int, list[int]] = {a.index: [] for a in topology.atoms()}
    for a, b in topology.bonds():
        i, j = a.index, b.index
        bonds.addBond(i, j, float(np.linalg.norm(positions[i] - positions[j])), BOND_K)
        neighbours[i].append(j)
        neighbours[j].append(i)
    for centre, around in neighbours.items():
        for x in range(len(around)):
            for y in range(x + 1, len(around)):
                i, k = around[x], around[y]
                v1, v2 = positions[i] - positions[centre], positions[k] - positions[centre]
                theta = float(np.arccos(np.dot(v1, v2) / np.linalg.norm(v1) / np.linalg.norm(v2)))
                angles.addAngle(i, centre, k, theta, ANGLE_K)
    system.addForce(bonds)
    system.addForce(angles)
    return system


def random_network(seed: int) -> StarMDNetwork:
    """The ``tiny`` preset with seeded random weights (its output heads start at zero otherwise)."""
    torch.manual_seed(seed)
    net = StarMDNetwork(preset("tiny"))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=gen))
    return net


def main(argv: list[str] | None = None) -> openmm.State:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="trained STAR-MD model folder (default: tiny random network)")
    parser.add_argument("--steps", type=int, default=500, help="MD steps of 2 fs (default 500)")
    parser.add_argument("--weight", type=float, default=1.0, help="λ, the force's weight (default 1)")
    parser.add_argument("--dt-ps", type=float, default=1000.0, help="Δt the model is conditioned on, ps")
    parser.add_argument("--temperature", type=float, default=300.0, help="K (default 300)")
    parser.add_argument("--out", default="starmd_force_example", help="folder for system.xml, the force and DCD")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # the force's tensors are small: extra threads only contend with OpenMM's

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    topology, positions = backbone_model(PDB)
    system = bonded_system(topology, positions)
    model = args.checkpoint if args.checkpoint else random_network(args.seed)
    # Condition on the starting structure with a large Δt (towards the model's equilibrium limit).
    starmd = StarMDForce(model, topology, positions, dt_ps=args.dt_ps, temperature=args.temperature)
    system.addForce(starmd.create_openmm_force(out / "starmd_force.pt", weight=args.weight))
    (out / "system.xml").write_text(openmm.XmlSerializer.serialize(system))

    integrator = openmm.LangevinMiddleIntegrator(args.temperature * u.kelvin, 1.0 / u.picosecond,
                                                 0.002 * u.picoseconds)
    integrator.setRandomNumberSeed(args.seed)
    simulation = app.Simulation(topology, system, integrator, openmm.Platform.getPlatformByName("CPU"))
    simulation.context.setPositions(positions)
    simulation.context.setVelocitiesToTemperature(args.temperature * u.kelvin, args.seed)
    interval = max(1, args.steps // 10)
    simulation.reporters.append(app.StateDataReporter(sys.stdout, interval, step=True, time=True,
                                                      potentialEnergy=True, temperature=True, speed=True))
    simulation.reporters.append(app.DCDReporter(str(out / "trajectory.dcd"), interval))
    simulation.step(args.steps // 2)
    # λ is a global parameter: it can be changed in the running Context, no rebuild needed.
    simulation.context.setParameter(WEIGHT_PARAMETER, 0.5 * args.weight)
    simulation.step(args.steps - args.steps // 2)
    return simulation.context.getState(getPositions=True, getForces=True)


if __name__ == "__main__":
    main()
