"""Relaxation after a jump: clash relief on overlapping atoms, velocity handling, friction, settings I/O."""

from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as u
import pytest

from openmm_starmd.errors import StarMDError
from openmm_starmd.forcefields import build_system
from openmm_starmd.simulation.guards import Guard, GuardSettings
from openmm_starmd.simulation.reconstruct import AtomMap
from openmm_starmd.simulation.relax import BackboneRestraints, RelaxSettings, relax, relieve_clashes

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def setup():
    pdb = app.PDBFile(str(DATA / "cln025.pdb"))
    system, topology, positions = build_system(pdb.topology, pdb.positions, "implicit-fast")
    amap = AtomMap(topology)
    restraints = BackboneRestraints(amap.restrained_atoms)
    group = restraints.add_to(system)
    integrator = openmm.LangevinMiddleIntegrator(300.0, 1.0, 0.004)
    integrator.setRandomNumberSeed(3)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("CPU"))
    guard = Guard(topology, amap.backbone, GuardSettings())
    x = np.asarray(positions.value_in_unit(u.nanometer))
    guard.set_reference(x)
    return topology, context, restraints, group, guard, x


def _clashed(topology: app.Topology, positions: np.ndarray) -> np.ndarray:
    """Residue 2's side chain shifted rigidly so that its first heavy atom sits 0.02 nm from residue 9's CB."""
    residues = list(topology.residues())
    backbone = {"N", "CA", "C", "O", "H", "HA", "H1", "H2", "H3", "OXT"}
    side = [a.index for a in residues[1].atoms() if a.name not in backbone]
    heavy = [a.index for a in residues[1].atoms() if a.name not in backbone and a.element.symbol != "H"]
    cb9 = next(a.index for a in residues[8].atoms() if a.name == "CB")
    target = positions.copy()
    shift = positions[cb9] + np.array([0.02, 0.0, 0.0]) - positions[heavy[0]]
    target[side] += shift
    return target


def _energy(context: openmm.Context) -> float:
    return context.getState(energy=True).getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)


def test_clash_relief_moves_overlapping_atoms_apart(setup):
    topology, context, restraints, _, _, positions = setup
    target = _clashed(topology, positions)
    context.setPositions(target)
    start = _energy(context)
    assert start > 1e7  # overlapping heavy atoms
    restraints.set_targets(context, target)
    restraints.set_strength(context, 2000.0)
    relieved, iterations = relieve_clashes(context, target, 300, 2.0e4, 0.01)
    forces = context.getState(forces=True).getForces(asNumpy=True).value_in_unit(u.kilojoule_per_mole / u.nanometer)
    assert 0 < iterations < 300
    assert np.linalg.norm(forces, axis=1).max() < 2.0e4
    assert _energy(context) < 1e-4 * start
    # Capped steps: no atom went further than it could in that many steps of at most 0.01 nm.
    assert np.linalg.norm(relieved - target, axis=1).max() <= 0.01 * iterations + 1e-9
    # An already relaxed structure costs one force evaluation at most.
    context.setPositions(positions)
    restraints.set_targets(context, positions)
    assert relieve_clashes(context, positions, 300, 2.0e4, 0.01)[1] <= 1


def test_default_relaxation_heals_overlapping_side_chains(setup):
    topology, context, restraints, group, guard, positions = setup
    target = _clashed(topology, positions)
    settings = RelaxSettings(time_ps=0.2, ramp_stages=2)
    timing = relax(context, restraints, settings, target, 5)
    assert timing.clash_iterations > 0
    state = context.getState(positions=True, energy=True, groups={g for g in range(32) if g != group})
    energy = state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
    assert np.isfinite(energy) and energy < 0.0
    assert guard.check_relaxed(state.getPositions(asNumpy=True).value_in_unit(u.nanometer), energy) is None


def test_kept_velocities_and_relaxation_friction(setup):
    _, context, restraints, _, _, positions = setup
    integrator = context.getIntegrator()

    def kinetic(settings: RelaxSettings) -> float:
        context.setPositions(positions)
        context.setVelocities(np.zeros_like(positions))
        relax(context, restraints, settings, positions, 7)
        return context.getState(energy=True).getKineticEnergy().value_in_unit(u.kilojoule_per_mole)

    # Almost no friction, so the bath cannot heat a cold start within 0.04 ps: "kept" zero velocities
    # stay cold, "fresh" ones are drawn at 300 K (3/2 kT per atom ≈ 620 kJ/mol for 166 atoms).
    kept = kinetic(RelaxSettings(time_ps=0.04, ramp_stages=1, velocities="kept", friction_per_ps=1e-3))
    fresh = kinetic(RelaxSettings(time_ps=0.04, ramp_stages=1, velocities="fresh", friction_per_ps=1e-3))
    assert kept < 0.2 * fresh and fresh > 300.0
    assert integrator.getFriction().value_in_unit(u.picosecond**-1) == pytest.approx(1.0)


def test_settings_round_trip_and_validation():
    settings = RelaxSettings(velocities="kept", friction_per_ps=5.0, clash_iterations=10)
    assert RelaxSettings(**settings.describe()) == settings
    # A run.json written before these fields existed still loads, with the new defaults.
    old = {k: v for k, v in RelaxSettings().describe().items()
           if k not in ("clash_iterations", "clash_force", "clash_step_nm", "velocities", "friction_per_ps")}
    assert RelaxSettings(**old) == RelaxSettings()
    retry = RelaxSettings(minimize_iterations=50, retry_minimize_iterations=400).retry()
    assert retry == RelaxSettings(minimize_iterations=400, retry_minimize_iterations=0)
    assert retry.retry() is None and RelaxSettings(retry_minimize_iterations=0).retry() is None  # one retry at most
    for bad in ({"velocities": "hot"}, {"friction_per_ps": 0.0}, {"clash_iterations": -1}, {"clash_force": 0.0},
                {"retry_minimize_iterations": -1}):
        with pytest.raises(StarMDError):
            RelaxSettings(**bad)
