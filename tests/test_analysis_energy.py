"""Potential energies of saved frames: same numbers as a hand-built OpenMM System, box ignored, comparison."""

from pathlib import Path

import mdtraj as md
import numpy as np
import openmm
import openmm.app as app
import openmm.unit as u
import pytest

from openmm_starmd.analysis.energy import compare_energies, potential_energies, trajectory_energies
from openmm_starmd.errors import StarMDError

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def pdb() -> app.PDBFile:
    return app.PDBFile(str(DATA / "cln025.pdb"))


def test_energy_matches_a_hand_built_obc_system(pdb, cln025_traj):
    xyz = cln025_traj.xyz[:3].astype(np.float64)
    energies = potential_energies(xyz, pdb.topology, "implicit-fast", platform="Reference")
    ff = app.ForceField("amber99sbildn.xml", "amber99_obc.xml")
    system = ff.createSystem(pdb.topology, nonbondedMethod=app.NoCutoff, constraints=app.HBonds)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    for t in range(3):
        context.setPositions(xyz[t])
        expected = context.getState(energy=True).getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
        assert energies[t] == pytest.approx(expected, abs=1e-6)
    # The other implicit preset (amber14 + GBn2) is a different force field.
    other = potential_energies(xyz, pdb.topology, "implicit", platform="Reference")
    assert np.all(np.abs(other - energies) > 10.0)


def test_md_frames_sit_above_the_minimum_and_a_clash_is_costly(pdb, cln025_traj):
    xyz = cln025_traj.xyz[:20].astype(np.float64)
    energies = potential_energies(xyz, pdb.topology, "implicit-fast")
    ff = app.ForceField("amber99sbildn.xml", "amber99_obc.xml")
    system = ff.createSystem(pdb.topology, nonbondedMethod=app.NoCutoff, constraints=app.HBonds)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001))
    context.setPositions(xyz[0])
    openmm.LocalEnergyMinimizer.minimize(context, 1.0, 0)
    minimum = context.getState(energy=True).getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
    # 300 K frames carry thermal potential energy above a nearby minimum (about 0.5 kT per degree of freedom).
    assert np.all(energies > minimum + 50.0)
    clash = xyz[:1].copy()
    heavy = [a.index for a in pdb.topology.atoms() if a.element.symbol != "H"]
    clash[0, heavy[30]] = clash[0, heavy[60]] + 0.05
    assert potential_energies(clash, pdb.topology, "implicit-fast")[0] > energies[0] + 1e4


def test_a_box_in_the_file_is_ignored(tmp_path, cln025_traj):
    traj = cln025_traj[:5]
    plain = trajectory_energies(DATA / "cln025_3ns.xtc", DATA / "cln025.pdb", "implicit-fast", stride=60)
    boxed = md.Trajectory(traj.xyz, traj.topology)
    # A box far smaller than the protein: minimum-image distances would invent clashes everywhere.
    boxed.unitcell_vectors = np.tile(np.eye(3, dtype=np.float32) * 1.0, (traj.n_frames, 1, 1))
    path = tmp_path / "boxed.xtc"
    boxed.save_xtc(str(path))
    assert np.allclose(trajectory_energies(path, DATA / "cln025.pdb", "implicit-fast"),
                       potential_energies(traj.xyz.astype(np.float64), app.PDBFile(str(DATA / "cln025.pdb")).topology,
                                          "implicit-fast"), atol=1e-3)
    assert plain.shape == (5,) and np.isfinite(plain).all()


def test_bad_input_is_refused(pdb, cln025_traj):
    with pytest.raises(StarMDError, match="implicit-solvent"):
        potential_energies(cln025_traj.xyz[:1], pdb.topology, "explicit")
    with pytest.raises(StarMDError, match="atoms"):
        potential_energies(cln025_traj.xyz[:1, :-1], pdb.topology, "implicit-fast")
    with pytest.raises(StarMDError, match="unknown force-field preset"):
        potential_energies(cln025_traj.xyz[:1], pdb.topology, "nope")


def test_compare_energies_known_answers():
    rng = np.random.default_rng(0)
    reference = rng.normal(-1200.0, 40.0, 2000)
    same = compare_energies(reference, reference)
    assert same["ks_statistic"] == 0.0 and same["sd_ratio"] == 1.0 and same["mean_diff_in_ref_sd"] == 0.0
    shifted = compare_energies(reference * 2.0 + 40.0 + 1200.0, reference)
    assert shifted["sd_ratio"] == pytest.approx(2.0)
    expected = (shifted["mean_reference"] + 1240.0) / shifted["sd_reference"]
    assert shifted["mean_diff_in_ref_sd"] == pytest.approx(expected, rel=1e-9)
    drawn = compare_energies(np.append(rng.normal(-1200.0, 40.0, 500), np.nan), reference)
    assert drawn["n_nonfinite_sample"] == 1 and drawn["n_sample"] == 500
    assert drawn["ks_pvalue"] > 1e-3 and abs(drawn["sd_ratio"] - 1.0) < 0.15
    wide = compare_energies(rng.normal(-1200.0, 80.0, 500), reference)
    assert wide["ks_pvalue"] < 1e-6
