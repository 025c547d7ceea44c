"""Known-answer tests of the dynamics metrics (TICA/VAMP via deeptime, autocorrelation, RMSD vs lag)."""


import mdtraj as md
import numpy as np
import pytest

from openmm_starmd.analysis.dynamics import (
    autocorrelation,
    compare_dynamics,
    decorrelation_time,
    fit_dynamics_reference,
)


@pytest.fixture(scope="module")
def cln(cln025_traj) -> md.Trajectory:
    return cln025_traj


@pytest.fixture(scope="module")
def ref(cln):
    return fit_dynamics_reference(cln, lag=5, dt_ps=10.0, kind="distances", max_lag=100)


def test_identical_trajectory_gives_zero_differences(cln, ref):
    m, curves = compare_dynamics(ref, cln)
    assert m["tic_jsd"] == 0.0 and m["tic1_jsd"] == 0.0
    assert m["acf_area_ps"] == pytest.approx(0.0, abs=1e-9)
    assert m["vamp2_diff"] == pytest.approx(0.0, abs=1e-9)
    assert m["rmsd_lag_diff_nm"] == pytest.approx(0.0, abs=1e-7)
    assert np.isfinite(ref.tau_ps) and m["decorrelation_ratio"] == pytest.approx(1.0)
    assert curves["acf"][0] == pytest.approx(1.0)


def test_shuffled_frames_keep_the_ensemble_but_lose_the_dynamics(cln, ref):
    order = np.random.default_rng(1).permutation(cln.n_frames)
    shuffled = md.Trajectory(cln.xyz[order], cln.topology)
    m, curves = compare_dynamics(ref, shuffled)
    assert m["tic_jsd"] == pytest.approx(0.0, abs=1e-12)  # same frames, same histogram
    assert m["decorrelation_ratio"] < 0.3
    assert m["acf_area_ps"] > 50.0
    assert m["vamp2_diff"] > 0.1
    assert m["rmsd_lag_diff_nm"] > 0.002
    # Shuffled neighbours are as far apart as any two frames: the 1-frame RMSD jumps up.
    assert curves["rmsd_curve"][0] > ref.rmsd_curve[0] + 0.005


def test_autocorrelation_of_an_ar1_process():
    a, n = 0.9, 20000
    rng = np.random.default_rng(0)
    x = np.zeros(n)
    noise = rng.standard_normal(n)
    for t in range(1, n):
        x[t] = a * x[t - 1] + noise[t]
    acf = autocorrelation([x[: n // 2], x[n // 2:]], 20)
    np.testing.assert_allclose(acf[:11], a ** np.arange(11), atol=0.04)
    # C(τ) = a^τ falls below 1/e at τ = −1/ln a frames.
    assert decorrelation_time(acf, dt_ps=2.0) == pytest.approx(-2.0 / np.log(a), rel=0.1)
