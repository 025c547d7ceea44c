"""Explicit solvent in the hybrid: protein-only view, solvent kept in place, periodic guards, resume."""

import json
from pathlib import Path

import mdtraj as md
import numpy as np
import openmm
import openmm.app as app
import openmm.unit as u
import pytest

from openmm_starmd import RelaxSettings, StarMDSimulation
from openmm_starmd.cli import main
from openmm_starmd.data.featurize import featurize_topology
from openmm_starmd.errors import StarMDError
from openmm_starmd.forcefields import build_system, solvate
from openmm_starmd.simulation.guards import SOLVENT_CLASH, Guard
from openmm_starmd.simulation.run import run_simulation
from openmm_starmd.simulation.solvent import SolventLayout, closest_distances, minimum_image

DATA = Path(__file__).parent / "data"
FAST = RelaxSettings(time_ps=0.1, ramp_stages=2, minimize_iterations=20, clash_iterations=50)


@pytest.fixture(scope="module")
def box(one_cpu_thread):
    """AMRV in a 0.6 nm TIP3P box (about 1,000 atoms), PME at 0.8 nm."""
    pdb = app.PDBFile(str(DATA / "amrv.pdb"))
    forcefield = app.ForceField("amber14-all.xml", "amber14/tip3p.xml")
    modeller = app.Modeller(pdb.topology, pdb.positions)
    modeller.addSolvent(forcefield, model="tip3p", padding=0.6 * u.nanometer)
    system = forcefield.createSystem(modeller.topology, nonbondedMethod=app.PME, nonbondedCutoff=0.8 * u.nanometer,
                                     constraints=app.HBonds)
    positions = np.asarray(modeller.positions.value_in_unit(u.nanometer))
    return pdb.topology, modeller.topology, system, positions


def test_model_and_guards_see_the_protein_only(box):
    dry, wet, system, _ = box
    layout = SolventLayout(wet, system)
    assert featurize_topology(layout.protein_topology).sequence == featurize_topology(dry).sequence == "AMRV"
    assert layout.solvated and layout.periodic
    assert len(layout.protein_atoms) == dry.getNumAtoms() == layout.protein_topology.getNumAtoms()
    assert [r.name for r in layout.protein_topology.residues()] == [r.name for r in dry.residues()]
    assert len(layout.molecules) == sum(1 for r in wet.residues()) - 4
    assert {len(m) for m in layout.molecules} <= {1, 3}  # waters and ions


def test_water_without_a_box_and_ligands_are_refused(box):
    _, wet, system, _ = box
    nonperiodic = openmm.System()
    for _ in range(wet.getNumAtoms()):
        nonperiodic.addParticle(1.0)
    with pytest.raises(StarMDError, match="no periodic box"):
        SolventLayout(wet, nonperiodic)
    lig = app.Topology()
    lig.addAtom("C1", app.element.carbon, lig.addResidue("LIG", lig.addChain()))
    modeller = app.Modeller(wet, np.zeros((wet.getNumAtoms(), 3)) * u.nanometer)
    modeller.add(lig, np.zeros((1, 3)) * u.nanometer)  # a new Topology: ``wet`` is not changed
    with_ligand = _clone(system)
    with_ligand.addParticle(12.0)
    with pytest.raises(StarMDError, match="LIG"):
        SolventLayout(modeller.topology, with_ligand)


def _clone(system):
    return openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))


def test_minimum_image_distances():
    cube = np.diag([2.0, 2.0, 2.0])
    delta = minimum_image(np.array([[1.9, 0.0, -1.95]]), cube)
    np.testing.assert_allclose(delta, [[-0.1, 0.0, 0.05]], atol=1e-12)
    d = closest_distances(np.array([[0.05, 1.0, 1.0]]), np.array([[1.95, 1.0, 1.0], [1.0, 1.0, 1.0]]), cube)
    assert d[0] == pytest.approx(0.1)
    # Without a box the plain distance counts.
    d = closest_distances(np.array([[0.05, 1.0, 1.0]]), np.array([[1.95, 1.0, 1.0], [1.0, 1.0, 1.0]]), None)
    assert d[0] == pytest.approx(0.95)


def test_merge_keeps_solvent_and_moves_overlapping_waters_whole(box):
    _, wet, system, positions = box
    layout = SolventLayout(wet, system)
    cell = np.diag([system.getDefaultPeriodicBoxVectors()[k][k].value_in_unit(u.nanometer) for k in range(3)])
    target_protein = layout.protein(positions) + np.array([0.35, 0.0, 0.0])  # the protein slides into water
    target, report = layout.merge(positions, target_protein, cell, overlap_nm=0.22)
    np.testing.assert_array_equal(target[layout.protein_atoms], target_protein)
    inside = layout.solvent_distances(_with_protein(layout, positions, target_protein), cell) < 0.22
    assert report.overlapping == int(inside.sum()) > 0 and 0 < report.moved <= report.overlapping
    after = layout.solvent_distances(target, cell)
    for k, atoms in enumerate(layout.molecules):
        shift = target[atoms] - positions[atoms]
        if not inside[k]:
            np.testing.assert_array_equal(shift, 0.0)  # solvent out of the way stays exactly where it was
        else:
            np.testing.assert_allclose(shift, shift[:1].repeat(len(atoms), 0), atol=1e-12)  # moved whole
            if np.abs(shift).max() > 0:
                assert after[k] >= 0.22
    # Counting only: nothing moves.
    counted, report = layout.merge(positions, target_protein, cell, overlap_nm=0.22, relocate=False)
    assert report.moved == 0 and np.array_equal(counted, _with_protein(layout, positions, target_protein))


def _with_protein(layout, positions, protein):
    out = positions.copy()
    out[layout.protein_atoms] = protein
    return out


def test_solvent_guard_uses_the_clash_distance():
    assert Guard.check_solvent(np.array([0.3, 0.21])) == SOLVENT_CLASH
    assert Guard.check_solvent(np.array([0.3, 0.25])) is None
    assert Guard.check_solvent(np.zeros(0)) is None


def test_hybrid_in_a_water_box_keeps_box_barostat_and_whole_waters(box):
    _, wet, system, positions = box
    system = _clone(system)
    system.addForce(openmm.MonteCarloBarostat(1.0 * u.bar, 300.0 * u.kelvin, 5))
    sim = StarMDSimulation(wet, system, "perturb", jump=1000.0, relax=FAST, seed=2, platform="CPU")
    assert sim.proposer is not None and sim.atom_map.num_residues == 4
    sim.context.setPositions(positions)
    openmm.LocalEnergyMinimizer.minimize(sim.context, 10.0, 100)
    volume0 = sim.context.getState().getPeriodicBoxVolume().value_in_unit(u.nanometer**3)
    sim.step(2)
    state = sim.context.getState(positions=True)
    x = state.getPositions(asNumpy=True).value_in_unit(u.nanometer)
    assert np.isfinite(x).all() and sim.currentStep == 2
    assert state.getPeriodicBoxVolume().value_in_unit(u.nanometer**3) != pytest.approx(volume0, rel=1e-9)
    assert any(isinstance(f, openmm.MonteCarloBarostat) for f in sim.system.getForces())
    waters = [m for m in sim.solvent.molecules if len(m) == 3]
    oh = np.linalg.norm(x[[m[1] for m in waters]] - x[[m[0] for m in waters]], axis=1)
    np.testing.assert_allclose(oh, 0.09572, atol=2e-3)  # unwrapped: every water whole
    assert sim.validity()["raw_proposals"] >= 2
    assert min(sim.solvent.solvent_distances(x, np.asarray(
        state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(u.nanometer)))) >= 0.22


def _simulate(out, time_ps, resume=False, protein_only=False):
    return run_simulation(DATA / "amrv.pdb", out, time_ps=time_ps, jump_ps=1000.0, model="default", relax=FAST,
                          seed=4, platform="CPU", forcefield="explicit", resume=resume, progress=False,
                          device="cpu", protein_only=protein_only)


def test_explicit_run_resumes_exactly_and_writes_protein_only(tmp_path, one_cpu_thread):
    straight = _simulate(tmp_path / "straight", 2000.0)
    part = _simulate(tmp_path / "part", 1000.0)
    _simulate(part, 2000.0, resume=True)
    top = md.load(str(straight / "topology.pdb")).topology
    a = md.load(str(straight / "traj.xtc"), top=top)
    b = md.load(str(part / "traj.xtc"), top=top)
    assert a.n_frames == b.n_frames == 2 and a.n_atoms > 500
    # Equal within one XTC quantum: with PME on the CPU platform, two identical runs in one process differed
    # at a few water atoms by one quantum unless OPENMM_CPU_THREADS=1 was set at start-up (the Threads
    # default set by the fixture did not make them bit-identical), and the resumed jump rebuilds the
    # neighbour list from the checkpoint besides.
    np.testing.assert_allclose(a.xyz[0], b.xyz[0], atol=1.5e-3)
    np.testing.assert_allclose(a.xyz[1], b.xyz[1], atol=1.5e-3)
    record = json.loads((part / "run.json").read_text())
    assert record["status"] == "complete" and record["validity"]["relaxed_valid_fraction"] == 1.0
    assert record["validity"]["frames"] == 2 and "solvent" in record
    protein = md.load(str(straight / "protein.pdb"))
    assert protein.n_atoms == md.load(str(DATA / "amrv.pdb")).n_atoms

    only = _simulate(tmp_path / "only", 1000.0, protein_only=True)
    traj = md.load(str(only / "traj.xtc"), top=str(only / "protein.pdb"))
    assert traj.n_atoms == protein.n_atoms and traj.n_frames == 1
    assert json.loads((only / "run.json").read_text())["settings"]["protein_only"] is True


def test_solvated_input_errors_are_one_line(tmp_path, capsys, box):
    _, wet, _, positions = box
    no_box = tmp_path / "wet_no_box.pdb"
    wet_copy = app.Modeller(wet, positions * u.nanometer).topology
    wet_copy.setPeriodicBoxVectors(None)
    with open(no_box, "w") as handle:
        app.PDBFile.writeFile(wet_copy, positions * u.nanometer, handle)
    pdb = app.PDBFile(str(no_box))
    pdb.topology.setPeriodicBoxVectors(None)
    with pytest.raises(StarMDError, match="no periodic box"):
        build_system(pdb.topology, pdb.positions, "explicit")
    with pytest.raises(StarMDError, match="implicit solvent"):
        build_system(pdb.topology, pdb.positions, "implicit-fast")
    with pytest.raises(StarMDError, match="implicit solvent"):
        solvate(pdb.topology, pdb.positions, "implicit")
    # A solvated PDB on the command line is prepared (water dropped) and re-solvated, or refused in one line.
    assert main(["simulate", str(no_box), "-o", str(tmp_path / "x"), "--time", "1ns", "--model", "nothing"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("starmd: error:")
    with pytest.raises(StarMDError, match="--protein-only"):
        run_simulation(DATA / "amrv.pdb", tmp_path / "y", time_ps=1000.0, model="perturb", forcefield="implicit-fast",
                       protein_only=True, progress=False)
    assert not (tmp_path / "y").exists()


def test_ensemble_batches_the_protein_of_solvated_replicas(tmp_path, one_cpu_thread):
    out = run_simulation(DATA / "amrv.pdb", tmp_path / "ens", time_ps=1000.0, jump_ps=1000.0, model="default",
                         relax=FAST, seed=1, platform="CPU", forcefield="explicit", progress=False, device="cpu",
                         replicas=2)
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "complete" and record["validity"]["frames"] == 2
    assert record["validity"]["raw_proposals"] >= 2


def test_solvated_relaxation_takes_the_solvent_friction():
    settings = RelaxSettings()
    assert settings.for_system(False) is settings
    assert settings.for_system(True).friction_per_ps == settings.solvent_friction_per_ps == 10.0
    assert RelaxSettings(friction_per_ps=2.0).for_system(True).friction_per_ps == 2.0
    assert RelaxSettings(solvent_friction_per_ps=None).for_system(True).friction_per_ps is None
    with pytest.raises(StarMDError, match="solvent_friction_per_ps"):
        RelaxSettings(solvent_friction_per_ps=0.0)
