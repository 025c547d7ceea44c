"""`starmd simulate`: run folder contents, one-line errors, and resuming a killed run without losing frames."""

import csv
import json
from pathlib import Path

import mdtraj as md
import numpy as np
import pytest

from openmm_starmd.cli import main
from openmm_starmd.simulation import run as run_module
from openmm_starmd.simulation.hybrid import StarMDSimulation
from openmm_starmd.simulation.relax import RelaxSettings

DATA = Path(__file__).parent / "data"
INPUT = str(DATA / "cln025.pdb")
QUICK = RelaxSettings(time_ps=0.04, minimize_iterations=5, ramp_stages=2)


def simulate(out, time_ps, resume=False):
    return run_module.run_simulation(INPUT, out, time_ps=time_ps, jump_ps=1000.0, model="perturb", relax=QUICK,
                                     seed=3, platform="Reference", forcefield="implicit-fast", resume=resume,
                                     progress=False)


def load(out):
    return md.load(str(out / "traj.xtc"), top=str(out / "topology.pdb"))


def log_rows(out):
    with open(out / "log.csv", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_cli_writes_a_complete_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["simulate", INPUT, "--time", "2ns", "--jump", "1ns", "-o", str(out), "--model", "perturb",
            "--relax", "0.04ps", "--platform", "Reference", "--forcefield", "implicit-fast", "--seed", "1"]
    assert main(args) == 0
    traj = load(out)
    assert traj.n_frames == 2 and traj.time.tolist() == pytest.approx([1000.0, 2000.0])
    rows = log_rows(out)
    assert [float(r["time_ps"]) for r in rows] == pytest.approx([1000.0, 2000.0])
    assert all(np.isfinite(float(r["potential_energy_kj_per_mol"])) and float(r["rmsd_ca_nm"]) > 0 for r in rows)
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "complete" and record["jumps_done"] == 2
    assert record["settings"]["jump_ps"] == 1000.0 and record["settings"]["relax"]["time_ps"] == 0.04
    assert record["settings"]["platform"] == "Reference" and record["versions"]["openmm"]
    assert record["settings"]["side_chains"] == "rigid"  # perturb draws no χ
    assert record["settings"]["model_max_step_ps"] is None  # and has no model steps
    assert record["speed"]["ns_per_day"] > 0
    # Raw validity (before guards and relaxation), rejection rate and relaxed validity side by side.
    validity = record["validity"]
    assert validity["raw_proposals"] == 2 + validity["rejections"] == sum(int(r["proposals"]) for r in rows)
    assert validity["raw_valid"] == sum(int(r["raw_valid"]) for r in rows)
    assert 0.0 <= validity["raw_valid_fraction"] <= 1.0 and 0.0 <= validity["rejection_rate"] < 1.0
    assert validity["frames"] == 2 and validity["relaxed_valid_fraction"] == 1.0
    assert record["device"] == "cpu"  # perturb runs on the CPU
    # An existing folder is refused, and --resume with a longer --time extends the run.
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err
    assert main([*args[:3], "3ns", *args[4:], "--resume"]) == 0
    assert load(out).time.tolist() == pytest.approx([1000.0, 2000.0, 3000.0])


def test_missing_model_is_a_one_line_error(tmp_path, capsys):
    base = ["simulate", INPUT, "--time", "1ns", "-o", str(tmp_path / "a")]
    assert main([*base, "--model", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("starmd: error: model") and "not found" in err and "\n" not in err
    assert not (tmp_path / "a").exists()  # nothing half-written


@pytest.mark.parametrize(("option", "message"), [
    (["--temperature", "-5"], "--temperature must be a positive number of kelvin"),
    (["--temperature", "nan"], "--temperature must be a positive number of kelvin"),
    (["--model", str(DATA / "cln025.pdb")], "is a file, not a STAR-MD checkpoint folder"),
    (["--seed", "-1"], "--seed must be a non-negative integer"),
    (["--relax=-1ps"], "--relax must be positive"),
    (["--platform", "NoSuchPlatform"], "OpenMM platform 'NoSuchPlatform' is not available"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--jump", "2ns"], "shorter than one 2 ns jump"),
    (["--replicas", "0"], "--replicas must be a whole number of at least 1"),
    (["--temperature", "350"], "the model was trained at 300 K without a temperature condition"),
    (["--temperature", "350", "--replicas", "2"], "the model was trained at 300 K without a temperature condition"),
])
def test_bad_arguments_fail_in_one_line_and_write_nothing(tmp_path, capsys, option, message):
    out = tmp_path / "R"
    assert main(["simulate", INPUT, "--time", "1ns", "-o", str(out), "--no-progress", *option]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("starmd: error: ") and message in err and "\n" not in err, err
    assert not out.exists()  # no topology.pdb, nothing at all


def test_killed_run_resumes_with_every_frame_exactly_once(tmp_path, monkeypatch):
    straight = simulate(tmp_path / "straight", 4000.0)

    calls = {"n": 0}
    original = StarMDSimulation.saveCheckpoint

    def dies_at_third_checkpoint(self, file):
        calls["n"] += 1
        if calls["n"] == 3:  # frame 3 and its log row are written, its checkpoint is not
            raise KeyboardInterrupt
        original(self, file)

    monkeypatch.setattr(StarMDSimulation, "saveCheckpoint", dies_at_third_checkpoint)
    out = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        simulate(out, 4000.0)
    assert load(out).n_frames == 3
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"
    monkeypatch.setattr(StarMDSimulation, "saveCheckpoint", original)

    simulate(out, 4000.0, resume=True)
    resumed, reference = load(out), load(straight)
    assert resumed.time.tolist() == pytest.approx([1000.0, 2000.0, 3000.0, 4000.0])
    assert [float(r["time_ps"]) for r in log_rows(out)] == pytest.approx(resumed.time.tolist())
    # The resumed run is the uninterrupted one (same seed, Reference platform): frame 3 redone identically.
    np.testing.assert_array_equal(resumed.xyz, reference.xyz)
    assert json.loads((out / "run.json").read_text())["status"] == "complete"
