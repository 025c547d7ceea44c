"""`starmd rollout`: model-only run folders, raw validity in the log, exact resume, one-line errors."""

import csv
import json
from pathlib import Path

import mdtraj as md
import numpy as np
import pytest
import torch

from openmm_starmd.analysis.validity import frame_validity
from openmm_starmd.cli import main
from openmm_starmd.generate import run_rollout
from openmm_starmd.model.checkpoint import save_model
from openmm_starmd.model.config import preset
from openmm_starmd.model.network import StarMDNetwork

DATA = Path(__file__).parent / "data"
INPUT = str(DATA / "cln025.pdb")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    """A randomised `tiny` checkpoint (4 sampler steps): fast, and its draws move the protein."""
    torch.manual_seed(0)
    net = StarMDNetwork(preset("tiny", num_sampler_steps=4))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return str(save_model(tmp_path_factory.mktemp("model"), net))


def rollout(out, model, time_ps, resume=False, **kw):
    return run_rollout(INPUT, out, time_ps=time_ps, jump_ps=1000.0, model=model, device="cpu", progress=False,
                       resume=resume, save_every_s=0.0, **kw)


def rows(out):
    with open(out / "log.csv", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_cli_writes_replica_trajectories_with_their_raw_validity(tmp_path, tiny_model, capsys):
    out = tmp_path / "run"
    args = ["rollout", INPUT, "--time", "60ps", "--jump", "10ps", "-o", str(out), "--replicas", "2", "--seed", "4",
            "--model", tiny_model, "--device", "cpu", "--no-progress"]
    assert main(args) == 0
    assert "raw-valid" in capsys.readouterr().out
    top = md.load(str(out / "topology.pdb")).topology
    assert sorted({a.name for a in top.atoms}) == ["C", "CA", "N", "O"] and top.n_residues == 10
    trajs = [md.load(str(out / f"traj_R{k}.xtc"), top=str(out / "topology.pdb")) for k in (0, 1)]
    log = rows(out)
    assert [(int(r["jump"]), int(r["replica"])) for r in log] == [(j, k) for j in range(1, 7) for k in (0, 1)]
    for k, traj in enumerate(trajs):
        assert traj.time.tolist() == pytest.approx([10.0, 20.0, 30.0, 40.0, 50.0, 60.0])
        validity = frame_validity(traj)
        mine = [r for r in log if int(r["replica"]) == k]
        assert [int(r["valid"]) for r in mine] == validity.valid.astype(int).tolist()
        assert [float(r["max_ca_bond_nm"]) for r in mine] == pytest.approx(validity.max_ca_bond_nm, abs=2e-3)
    start = md.load(str(out / "start.pdb")).atom_slice(md.load(str(out / "start.pdb")).topology.select("name CA"))
    moved = np.linalg.norm(trajs[0].atom_slice(top.select("name CA")).xyz[0] - start.xyz[0], axis=-1).mean()
    assert moved > 1e-2  # the model moved the protein
    assert not np.allclose(trajs[0].xyz, trajs[1].xyz, atol=1e-3)  # replicas differ
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "complete" and record["jumps_done"] == 6
    assert record["settings"]["replicas"] == 2 and record["settings"]["device"] == "cpu"
    assert record["settings"]["model_max_step_ps"] == 0.0  # the test model draws each jump in one step
    assert record["raw_validity"]["frames"] == 12
    assert record["raw_validity"]["valid_fraction"] == pytest.approx(np.mean([int(r["valid"]) for r in log]))
    assert record["speed"]["model_s_per_jump"] > 0 and record["speed"]["ns_per_day_aggregate"] > 0
    # `starmd validate` scores the output against the MD slice, as any trajectory
    report = tmp_path / "report"
    assert main(["validate", str(out / "traj_R0.xtc"), str(out / "traj_R1.xtc"), "--ref", str(DATA / "cln025_3ns.xtc"),
                 "--top", INPUT, "--gen-top", str(out / "topology.pdb"), "--out", str(report), "--lag", "1",
                 "--windows", "1"]) == 0
    assert json.loads((report / "metrics.json").read_text())


def test_a_resumed_rollout_continues_exactly(tmp_path, tiny_model):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    rollout(straight, tiny_model, 4000.0, replicas=2, seed=1)
    rollout(resumed, tiny_model, 2000.0, replicas=2, seed=1)
    # a crash after frames were written but before the state was saved leaves extra frames and rows
    with open(resumed / "log.csv", "a", encoding="utf-8") as handle:
        handle.write("3,0,3000,1,0,0,0,0.4,0.4,0.3,0.1\n")
    run_rollout(None, resumed, time_ps=4000.0, device="cpu", progress=False, resume=True, save_every_s=0.0)
    for k in (0, 1):
        a = md.load(str(straight / f"traj_R{k}.xtc"), top=str(straight / "topology.pdb"))
        b = md.load(str(resumed / f"traj_R{k}.xtc"), top=str(resumed / "topology.pdb"))
        assert b.n_frames == 4 and np.array_equal(a.xyz, b.xyz)
    assert [r["valid"] for r in rows(straight)] == [r["valid"] for r in rows(resumed)]
    assert len(rows(resumed)) == 8


def test_all_atom_frames_move_each_residue_rigidly(tmp_path, tiny_model):
    out = tmp_path / "all"
    rollout(out, tiny_model, 2000.0, atoms="all")
    start = md.load(str(out / "start.pdb"))
    traj = md.load(str(out / "traj.xtc"), top=str(out / "topology.pdb"))
    assert traj.n_atoms == start.n_atoms and traj.n_frames == 2
    res = start.topology.residue(3)  # side chain and hydrogens keep their distances to CA
    idx = [a.index for a in res.atoms if a.name != "O"]
    ca = next(a.index for a in res.atoms if a.name == "CA")
    d0 = np.linalg.norm(start.xyz[0, idx] - start.xyz[0, ca], axis=-1)
    d1 = np.linalg.norm(traj.xyz[-1, idx] - traj.xyz[-1, ca], axis=-1)
    assert np.allclose(d0, d1, atol=2e-3)
    assert np.linalg.norm(traj.xyz[-1, ca] - start.xyz[0, ca]) > 1e-3


@pytest.mark.parametrize("extra, message", [
    (["--replicas", "0"], "--replicas must be at least 1"),
    (["--seed", "-1"], "--seed must be"),
    (["--time", "10ps"], "shorter than one"),
    (["--device", "cuda:7"], "device 'cuda:7'"),
    (["--device", "tpu"], "device"),
    (["--model", "MISSING"], "model MISSING not found: give a STAR-MD checkpoint folder"),
])
def test_bad_arguments_are_one_line_errors_before_anything_is_written(tmp_path, capsys, extra, message):
    out = tmp_path / "run"
    args = ["rollout", INPUT, "--time", "2ns", "-o", str(out), "--no-progress", *extra]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("starmd: error:") and message in err and err.count("\n") == 1
    assert not out.exists()


def test_missing_input_and_existing_output_are_refused(tmp_path, capsys, tiny_model):
    assert main(["rollout", str(tmp_path / "nope.pdb"), "--time", "1ns", "-o", str(tmp_path / "a")]) == 2
    assert "not found" in capsys.readouterr().err and not (tmp_path / "a").exists()
    assert main(["rollout", "--time", "1ns", "-o", str(tmp_path / "a")]) == 2
    assert "input" in capsys.readouterr().err
    out = tmp_path / "b"
    rollout(out, tiny_model, 1000.0)
    before = (out / "traj.xtc").read_bytes()
    assert main(["rollout", INPUT, "--time", "1ns", "-o", str(out), "--model", tiny_model]) == 2
    assert "already exists" in capsys.readouterr().err and (out / "traj.xtc").read_bytes() == before
    assert main(["rollout", "--time", "1ns", "-o", str(tmp_path / "c"), "--resume"]) == 2
    assert "no rollout to resume" in capsys.readouterr().err
