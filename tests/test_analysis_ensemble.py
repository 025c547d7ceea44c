"""Known-answer tests of the ensemble metrics, atom matching and the distribution distances."""

from pathlib import Path

import mdtraj as md
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from openmm_starmd.analysis import divergences as dv
from openmm_starmd.analysis.ensemble import (
    backbone_torsions,
    ca_rmsf,
    compare_ensemble,
    ensemble_metrics,
    fit_ensemble_reference,
)
from openmm_starmd.analysis.matching import match_atoms, matched_pair
from openmm_starmd.errors import StarMDError

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def cln(cln025_traj) -> md.Trajectory:
    return cln025_traj


def test_identical_trajectories_give_zero_divergence(cln):
    m = ensemble_metrics(cln, cln)
    assert m["pc_jsd"] == 0.0
    assert m["torsion_jsd"] == 0.0
    assert m["pairwise_rmsd_jsd"] == 0.0
    assert m["pc_recall"] == 1.0
    assert m["rmsf_pearson_r"] == pytest.approx(1.0, abs=1e-9)
    assert m["pc_w2_nm"] == pytest.approx(0.0, abs=1e-6)
    assert m["rmsf_mae_nm"] == pytest.approx(0.0, abs=1e-7)


def test_rigid_motion_of_the_sample_leaves_every_metric_unchanged(cln):
    ref = fit_ensemble_reference(cln[:150])
    sample = cln[150:]
    moved = md.Trajectory(sample.xyz.copy(), sample.topology)
    rot = Rotation.from_euler("zyx", [70, -35, 120], degrees=True).as_matrix().astype(np.float32)
    moved.xyz = moved.xyz @ rot.T + np.array([3.0, -1.0, 2.0], dtype=np.float32)
    plain, rotated = compare_ensemble(ref, sample), compare_ensemble(ref, moved)
    assert plain["pc_jsd"] > 0.01  # two different halves: a non-trivial value to reproduce
    for key, value in plain.items():
        assert rotated[key] == pytest.approx(value, abs=0.01), key
    np.testing.assert_allclose(ca_rmsf(moved), ca_rmsf(sample), atol=1e-4)


def test_different_ensembles_are_told_apart(cln):
    # Residues frozen at one frame: fluctuations vanish and the PC density collapses to a point.
    frozen = md.Trajectory(np.repeat(cln.xyz[:1], 100, axis=0), cln.topology)
    m = ensemble_metrics(frozen, cln)
    assert m["pc_recall"] < 0.05
    assert m["pc_jsd"] > 0.5
    assert m["pc_w2_nm"] > 0.05
    assert np.all(ca_rmsf(frozen) < 1e-3)


def test_w2_of_two_gaussian_samples_matches_the_analytic_value():
    rng = np.random.default_rng(0)
    mean, sd = np.array([1.0, -0.5]), np.array([2.0, 0.5])
    a = rng.standard_normal((1000, 2))
    b = mean + sd * rng.standard_normal((1000, 2))
    # Gaussians with diagonal covariances: W2² = |Δμ|² + Σ (σ_a − σ_b)².
    exact = np.sqrt(np.sum(mean**2) + np.sum((1.0 - sd) ** 2))
    assert dv.wasserstein2(a, b) == pytest.approx(exact, abs=0.1)
    assert dv.wasserstein2(a, a) == 0.0


def test_jsd_and_recall_bounds():
    edges = [np.linspace(0, 2, 3)]
    left, right = dv.histogram(np.full(10, 0.5), edges), dv.histogram(np.full(10, 1.5), edges)
    assert dv.jensen_shannon(left, right) == pytest.approx(1.0)
    assert dv.jensen_shannon(left, left) == 0.0
    assert dv.recall(left, left + right) == pytest.approx(0.5)
    # A point outside the edges still counts (in the edge bin), so it is never silently dropped.
    assert dv.histogram(np.array([5.0]), edges).sum() == pytest.approx(1.0)


def _backbone_reversed(traj: md.Trajectory) -> md.Trajectory:
    """Backbone-only copy whose atoms come in reverse order (O, C, CA, N) within each residue."""
    top = md.Topology()
    chain = top.add_chain()
    order = []
    for res in traj.topology.residues:
        new_res = top.add_residue(res.name, chain, res.resSeq)
        for atom in reversed([a for a in res.atoms if a.name in ("N", "CA", "C", "O")]):
            top.add_atom(atom.name, atom.element, new_res)
            order.append(atom.index)
    return md.Trajectory(traj.xyz[:, order], top)


def test_backbone_only_sample_is_matched_by_residue_and_atom_name(cln):
    gen = _backbone_reversed(cln)
    backbone = sorted(a.index for a in cln.topology.atoms if a.name in ("N", "CA", "C", "O"))
    gen_idx, ref_idx = match_atoms(gen.topology, cln.topology)
    np.testing.assert_array_equal(ref_idx, backbone)
    gen_cut, ref_cut = matched_pair(gen, cln, gen_idx, ref_idx)
    # Same coordinates atom for atom although the generated file lists them in another order.
    np.testing.assert_array_equal(gen_cut.xyz, ref_cut.xyz)
    m = ensemble_metrics(gen_cut[:100], ref_cut[:100])
    assert m["torsion_jsd"] == 0.0 and m["pc_jsd"] == 0.0
    assert len(backbone_torsions(gen_cut[:1])[1]) == 2 * (cln.topology.n_residues - 1)


def test_unmatched_atom_sets_raise_a_clear_error(cln):
    amrv = md.load(DATA / "amrv.pdb")
    with pytest.raises(StarMDError, match="residues"):
        match_atoms(amrv.topology, cln.topology)
    renamed = cln.topology.copy()
    renamed.residue(3).name = "ALA"
    with pytest.raises(StarMDError, match="cannot be matched"):
        match_atoms(renamed, cln.topology)
