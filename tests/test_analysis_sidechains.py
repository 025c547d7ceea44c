"""Side-chain metrics: rotamer wells, transition rates and χ JSD against a reference."""

import mdtraj as md
import numpy as np
import pytest

from openmm_starmd.analysis.sidechains import (
    chi_angles,
    compare_sidechains,
    fit_sidechain_reference,
    rotamer_wells,
    transition_rates,
)


def test_rotamer_wells_follow_the_g_plus_t_g_minus_boundaries():
    deg = np.array([60.0, 119.0, 121.0, 180.0, -179.0, -121.0, -60.0, -1.0, 0.0])
    assert rotamer_wells(np.radians(deg)).tolist() == [0, 0, 1, 1, 1, 1, 2, 2, 0]


def test_transition_rate_counts_well_changes_per_ns():
    # residue 0 flips g+ -> t -> g- (2 changes), residue 1 wobbles inside t, residue 2 is a proline
    chi = np.radians(np.array([[60.0, 170.0, 30.0], [180.0, -170.0, -30.0], [-60.0, 175.0, 30.0]]))
    rates = transition_rates([chi], frame_ps=100.0, residues=["TYR1", "TRP2", "PRO3"])
    assert rates[0] == pytest.approx(2 / 0.2)  # 2 changes over 2 steps of 100 ps
    assert rates[1] == 0.0
    assert np.isnan(rates[2])
    # two trajectories: no change is counted across the boundary between them
    assert transition_rates([chi[:1], chi[1:]], 100.0)[0] == pytest.approx(1 / 0.1)


def test_identical_sample_matches_and_a_frozen_sample_does_not(cln025_traj):
    ref = fit_sidechain_reference(cln025_traj, cln025_traj, 10.0)
    same, per_res = compare_sidechains(ref, cln025_traj)
    assert same["chi1_jsd"] == pytest.approx(0.0, abs=1e-12) and same["chi2_jsd"] == pytest.approx(0.0, abs=1e-12)
    assert same["rotamer_rate_ratio"] == pytest.approx(1.0)
    assert len(per_res["chi1_jsd"]) == len(ref.chi1_residues) == 9  # chignolin: every residue but GLY7
    assert "PRO4" in ref.chi1_residues and np.isnan(ref.rates_per_ns[ref.chi1_residues.index("PRO4")])
    assert np.nanmax(ref.rates_per_ns) > 0  # MD flips χ1 within 3 ns
    frozen = md.Trajectory(np.repeat(cln025_traj.xyz[:1], 50, axis=0), cln025_traj.topology)
    stuck, _ = compare_sidechains(ref, frozen)
    assert stuck["rotamer_rate_per_ns"] == 0.0
    assert stuck["chi1_jsd"] > 0.3


def test_backbone_only_sample_has_no_chi_and_gives_nan(cln025_traj):
    ref = fit_sidechain_reference(cln025_traj, cln025_traj, 10.0)
    bb = cln025_traj.atom_slice(cln025_traj.topology.select("name N CA C O"))
    angles, residues = chi_angles(bb, 1)
    assert residues == [] and angles[0].shape == (bb.n_frames, 0)
    metrics, per_res = compare_sidechains(ref, bb)
    assert np.isnan(metrics["chi1_jsd"]) and np.isnan(metrics["rotamer_rate_ratio"])
    assert np.isfinite(metrics["rotamer_rate_ref_per_ns"])
    assert np.isnan(per_res["chi1_jsd"]).all()
