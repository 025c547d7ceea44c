"""Run records: rejection rate and raw validity from run.json, whatever the simulator's version."""

import json

import pytest

from openmm_starmd.analysis.run_record import find_run_record, load_run_record, run_summary
from openmm_starmd.errors import StarMDError


def test_summary_of_a_record_with_and_without_raw_validity(tmp_path):
    old = {"jumps_done": 90, "rejections": {"ca_clash": 8, "ca_break": 2}, "halvings": 1, "status": "complete"}
    s = run_summary(old)
    assert s["proposals"] == 100 and s["rejected_proposals"] == 10
    assert s["rejection_rate"] == pytest.approx(0.1)
    assert not any(k.startswith("raw_") for k in s)
    new = {**old, "validity": {"raw_proposals": 104, "raw_valid": 91, "raw_valid_fraction": 0.875,
                               "rejection_rate": 0.125, "relaxed_valid_fraction": 1.0}}
    s = run_summary(new)
    assert s["raw_valid_fraction"] == 0.875 and s["raw_proposals"] == 104.0
    assert s["rejection_rate"] == 0.125  # the simulator's own count wins
    causes = {"nonfinite_proposal": 0, "bad_rotation": 0, "ca_break": 2, "ca_clash": 0, "heavy_clash": 11}
    s = run_summary({**new, "validity": {**new["validity"], "raw_failures": causes}})
    assert s["raw_failures"] == causes and s["raw_valid_fraction"] == 0.875


def test_record_is_found_beside_the_trajectory_and_bad_records_are_refused(tmp_path):
    (tmp_path / "traj.xtc").write_bytes(b"")
    assert find_run_record(tmp_path / "traj.xtc") is None
    (tmp_path / "run.json").write_text(json.dumps({"jumps_done": 3}))
    assert find_run_record(tmp_path / "traj.xtc") == tmp_path / "run.json"
    assert load_run_record(tmp_path)["jumps_done"] == 3
    (tmp_path / "run.json").write_text("[1, 2")
    with pytest.raises(StarMDError, match="cannot read run record"):
        load_run_record(tmp_path / "run.json")
    with pytest.raises(StarMDError, match="not found"):
        load_run_record(tmp_path / "missing.json")
