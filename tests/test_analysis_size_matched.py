"""Size-matched comparison: N generated frames and N first-half MD frames against the second half."""

import mdtraj as md
import numpy as np
import pytest

from openmm_starmd.analysis.size_matched import size_matched
from openmm_starmd.errors import StarMDError


def test_md_first_half_as_the_sample_scores_exactly_like_the_floor(cln025_traj):
    first = cln025_traj[:150]
    result = size_matched([first], [cln025_traj], dt_ps=10.0, lag_ps=50.0)
    assert result.frames == 150
    for key in ("torsion_jsd", "chi1_jsd", "pc_jsd", "rmsf_pearson_r", "decorrelation_ratio"):
        assert result.generated[key] == pytest.approx(result.md[key]), key
        assert result.ratio(key) == pytest.approx(1.0), key
    assert result.target["frames"] == 150


def test_frozen_sample_is_far_worse_than_md_at_the_same_size(cln025_traj):
    frozen = md.Trajectory(np.repeat(cln025_traj.xyz[:1], 60, axis=0), cln025_traj.topology,
                           time=np.arange(60) * 10.0)
    result = size_matched([frozen], [cln025_traj], dt_ps=10.0, lag_ps=50.0)
    assert result.frames == 60
    assert result.ratio("torsion_jsd") > 2.0 and result.ratio("pc_jsd") > 1.2
    assert result.generated["rotamer_rate_per_ns"] == 0.0 and result.md["rotamer_rate_per_ns"] > 0.0


def test_longer_sample_is_thinned_to_the_first_half_and_energies_are_compared(cln025_traj):
    sample = cln025_traj[::-1]  # 300 frames, more than the 150 of the first half
    energies = np.linspace(-1000.0, -900.0, 300)
    shifted = energies[::-1] + 500.0  # the sample's energies: far above every reference frame
    result = size_matched([sample], [cln025_traj], dt_ps=10.0, lag_ps=50.0, sample_energies=[shifted],
                          reference_energies=[energies])
    assert result.frames == 150
    assert result.generated["energy_ks"] == pytest.approx(1.0)
    assert result.md["energy_ks"] == pytest.approx(1.0)  # linear ramp: first half never overlaps the second
    assert result.generated["energy_sd_ratio"] == pytest.approx(2.0, rel=0.05)  # 100 vs 50 kJ/mol range


def test_pooled_replicas_and_too_few_frames(cln025_traj):
    result = size_matched([cln025_traj[:40]], [cln025_traj[:200], cln025_traj[200:]], dt_ps=10.0)
    assert result.frames == 40 and result.target["frames"] == 100 + 50
    with pytest.raises(StarMDError, match="at least"):
        size_matched([cln025_traj[:5]], [cln025_traj], dt_ps=10.0)


def test_md_dynamics_frame_count_is_reported_and_flagged_when_too_few(cln025_traj):
    from openmm_starmd.analysis.size_matched import MIN_DYNAMICS_FRAMES, size_matched_markdown

    # generated frames 100 ps apart: the 150 first-half MD frames 10 ps apart give 15 at the common interval
    sparse = size_matched([cln025_traj[::10]], [cln025_traj], dt_ps=100.0, reference_stride=10, lag_ps=100.0)
    assert sparse.target["md_dynamics_frames"] == 15 < MIN_DYNAMICS_FRAMES
    assert any("too few to measure" in line for line in size_matched_markdown(sparse))
    dense = size_matched([cln025_traj[:150]], [cln025_traj], dt_ps=10.0, lag_ps=50.0)
    assert dense.target["md_dynamics_frames"] == 150
    assert not any("too few to measure" in line for line in size_matched_markdown(dense))
