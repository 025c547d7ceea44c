"""Reference MD (``starmd md``): ATLAS layout, recorded settings, kill-and-resume, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mdtraj
import numpy as np
import openmm
import pytest

from openmm_starmd import cli, reference
from openmm_starmd.forcefields import PRESETS
from openmm_starmd.reference import work_dir

PDB = Path(__file__).parent / "data" / "cln025.pdb"
# Small and fast: the OBC preset with a 4 fs step on one CPU thread.
FAST = ["--forcefield", "implicit-fast", "--platform", "CPU", "--no-progress"]
# Keys of the shared reference data's NAME_R1.json that the rest of the project reads.
REFERENCE_KEYS = {
    "name", "source", "sequence", "chain", "forcefield", "nonbonded", "constraints", "hydrogen_mass_amu",
    "temperature_K", "friction_per_ps", "timestep_ps", "integrator", "equilibration_ps", "stride_ps",
    "frames", "ns", "seed", "replica", "n_atoms", "n_residues", "platform", "openmm", "wall_s", "ns_per_day",
}


pytestmark = pytest.mark.usefixtures("one_cpu_thread")  # conftest: OpenMM CPU platform on one thread


def _md_args(out: Path, name: str, *extra: str) -> list[str]:
    return ["md", str(PDB), "-o", str(out), "--name", name, *FAST, *extra]


def _load(folder: Path, name: str, k: int) -> mdtraj.Trajectory:
    return mdtraj.load(str(folder / f"{name}_R{k}.xtc"), top=str(folder / f"{name}.pdb"))


def test_atlas_layout_settings_and_refusals(tmp_path, capsys):
    out = tmp_path / "md"
    args = _md_args(out, "CLN", "--time", "2ps", "--stride", "0.4ps", "--equilibration", "0.4ps",
                    "--replicas", "2", "--seed", "5")
    assert cli.main(args) == 0
    folder = out / "CLN"
    assert sorted(p.name for p in out.iterdir()) == ["CLN"]  # the work folder was moved, not left behind
    assert sorted(p.name for p in folder.iterdir()) == [
        "CLN.pdb", "CLN_R1.json", "CLN_R1.xtc", "CLN_R2.json", "CLN_R2.xtc"]
    assert "CRYST1" not in (folder / "CLN.pdb").read_text()

    trajs = [_load(folder, "CLN", k) for k in (1, 2)]
    start = mdtraj.load(str(PDB))
    for traj in trajs:
        assert traj.n_frames == 5 and traj.n_atoms == 166 and traj.n_residues == 10
        assert traj.unitcell_vectors is None
        np.testing.assert_allclose(traj.time, [0.4, 0.8, 1.2, 1.6, 2.0], atol=1e-4)
        # Real dynamics happened, and the protein stayed whole near its start.
        assert np.abs(traj.xyz[1:] - traj.xyz[:-1]).max() > 0.01
        assert mdtraj.rmsd(traj[:], start[:]).max() < 0.3  # copies: mdtraj.rmsd centres in place
    assert np.abs(trajs[0].xyz - trajs[1].xyz).max() > 0.01  # replicas use different seeds
    topology = mdtraj.load(str(folder / "CLN.pdb"))
    np.testing.assert_allclose(topology.xyz[0], trajs[0].xyz[0], atol=2e-3)  # first frame of R1
    assert [a.name for a in topology.topology.atoms] == [a.name for a in start.topology.atoms]

    preset = PRESETS["implicit-fast"]
    for k in (1, 2):
        meta = json.loads((folder / f"CLN_R{k}.json").read_text())
        assert REFERENCE_KEYS <= meta.keys()
        assert meta["forcefield"] == list(preset.files) and meta["preset"] == "implicit-fast"
        assert (meta["nonbonded"], meta["constraints"]) == (preset.nonbonded_method, preset.constraints)
        assert meta["hydrogen_mass_amu"] == preset.hydrogen_mass_amu
        assert meta["timestep_ps"] == preset.timestep_ps and meta["integrator"] == "LangevinMiddleIntegrator"
        assert (meta["temperature_K"], meta["friction_per_ps"]) == (300.0, 1.0)
        assert (meta["equilibration_ps"], meta["stride_ps"], meta["frames"]) == (0.4, 0.4, 5)
        assert meta["ns"] == pytest.approx(0.002)
        assert (meta["seed"], meta["replica"], meta["name"], meta["source"]) == (5 + k, k, "CLN", "cln025.pdb")
        assert (meta["n_atoms"], meta["n_residues"]) == (166, 10)
        assert meta["platform"] == "CPU" and meta["openmm"] == openmm.__version__
        assert meta["wall_s"] > 0 and meta["ns_per_day"] > 0

    # An existing output is refused with one line, and left as it was.
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    capsys.readouterr()
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("starmd: error:") and err.count("\n") == 1 and "--overwrite" in err
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    # --resume of a finished run has nothing to do.
    assert cli.main([*args, "--resume"]) == 0
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    # --overwrite replaces the whole folder (the old second replica goes); the progress bar reports speed.
    overwrite = _md_args(out, "CLN", "--time", "0.8ps", "--stride", "0.4ps", "--equilibration", "0",
                         "--replicas", "1", "--overwrite")
    assert cli.main([arg for arg in overwrite if arg != "--no-progress"]) == 0
    bar = capsys.readouterr().err
    assert "CLN R1" in bar and "ns/day" in bar and "0.8/0.8" in bar
    assert sorted(p.name for p in folder.iterdir()) == ["CLN.pdb", "CLN_R1.json", "CLN_R1.xtc"]
    assert _load(folder, "CLN", 1).n_frames == 2
    assert sorted(p.name for p in out.iterdir()) == ["CLN"]


def test_sigkill_then_resume_gives_every_frame_once(tmp_path):
    out = tmp_path / "md"
    run = ["--time", "6ps", "--stride", "0.2ps", "--equilibration", "0.2ps", "--replicas", "1", "--seed", "3",
           "--checkpoint-interval", "0"]
    env = {**os.environ, "OPENMM_CPU_THREADS": "1"}
    progress = work_dir(out, "K") / "R1" / "progress.json"
    proc = subprocess.Popen([sys.executable, "-m", "openmm_starmd.cli", *_md_args(out, "K", *run)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if progress.is_file() and json.loads(progress.read_text())["frames"] >= 4:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished (or failed) before it could be killed"
    assert not (out / "K").exists()  # nothing at the final name while the run is incomplete
    saved = json.loads(progress.read_text())
    assert 4 <= saved["frames"] < 30
    chunks = [mdtraj.load(str(progress.parent / chunk), top=str(PDB)) for chunk in saved["chunks"]]
    before_kill = mdtraj.join(chunks)
    assert before_kill.n_frames == saved["frames"]

    # Resuming with different physics is refused, and the interrupted run is kept.
    assert cli.main([*_md_args(out, "K", *run, "--temperature", "310"), "--resume"]) == 2
    assert progress.is_file()
    assert cli.main([*_md_args(out, "K", *run), "--resume"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["K"]
    resumed = _load(out / "K", "K", 1)
    assert resumed.n_frames == 30
    steps = np.diff(resumed.time)
    assert np.all(steps > 0)
    np.testing.assert_allclose(steps, 0.2, atol=1e-4)
    np.testing.assert_allclose(resumed.time[0], 0.2, atol=1e-4)
    np.testing.assert_array_equal(resumed.xyz[: saved["frames"]], before_kill.xyz)
    meta = json.loads((out / "K" / "K_R1.json").read_text())
    assert meta["frames"] == 30 and meta["sessions"] == 2

    # The OpenMM checkpoint continues the same trajectory (random stream included): the killed and
    # resumed run equals an uninterrupted one, so no frame was lost, repeated or re-simulated differently.
    assert cli.main(_md_args(out, "U", *run)) == 0
    uninterrupted = _load(out / "U", "U", 1)
    np.testing.assert_array_equal(resumed.xyz, uninterrupted.xyz)


def test_ctrl_c_then_resume_on_another_platform(tmp_path, monkeypatch, capsys):
    out = tmp_path / "md"
    write_xtc, calls = reference._write_xtc, []

    def interrupt_third_chunk(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 3:
            raise KeyboardInterrupt
        write_xtc(*args, **kwargs)

    monkeypatch.setattr(reference, "_write_xtc", interrupt_third_chunk)
    args = _md_args(out, "C", "--time", "1.2ps", "--stride", "0.2ps", "--equilibration", "0", "--replicas", "1",
                    "--checkpoint-interval", "0")
    assert cli.main(args) == 130
    monkeypatch.setattr(reference, "_write_xtc", write_xtc)
    progress = work_dir(out, "C") / "R1" / "progress.json"
    saved = json.loads(progress.read_text())
    assert saved["frames"] == 2 and not (out / "C").exists()
    first = mdtraj.join([mdtraj.load(str(progress.parent / chunk), top=str(PDB)) for chunk in saved["chunks"]])

    # A CPU checkpoint cannot load on the Reference platform: the run goes on from the portable XML state.
    capsys.readouterr()
    assert cli.main([*args, "--platform", "Reference", "--resume"]) == 0
    assert "fresh random stream" in capsys.readouterr().err
    traj = _load(out / "C", "C", 1)
    assert traj.n_frames == 6
    np.testing.assert_allclose(traj.time, 0.2 * np.arange(1, 7), atol=1e-4)
    np.testing.assert_array_equal(traj.xyz[:2], first.xyz)
    assert np.abs(traj.xyz[2] - traj.xyz[1]).max() < 0.2  # continues from frame 2, not from the start
    meta = json.loads((out / "C" / "C_R1.json").read_text())
    assert meta["platform"] == "CPU+Reference" and meta["sessions"] == 2


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--time", "10"], "unit"),
        (["--time=-5ps"], "positive"),
        (["--time", "1ps", "--stride", "0.3ps"], "multiple"),
        (["--time", "1ps", "--stride", "2ps"], "stride"),
        (["--name", "../escape"], "--name"),
        (["--platform", "NoSuchPlatform"], "platform"),
    ],
)
def test_bad_options_exit_2_with_one_line_and_no_output(tmp_path, capsys, extra, message):
    out = tmp_path / "md"
    assert cli.main([*_md_args(out, "cln025"), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("starmd: error:") and err.count("\n") == 1 and message in err
    assert not out.exists()


def test_missing_input_and_existing_folders_are_refused(tmp_path, capsys):
    out = tmp_path / "md"
    assert cli.main(["md", str(tmp_path / "missing.pdb"), "-o", str(out), *FAST]) == 2
    err = capsys.readouterr().err
    assert err.startswith("starmd: error:") and err.count("\n") == 1 and "missing.pdb" in err
    assert not out.exists()

    (out / "cln025").mkdir(parents=True)
    (out / "cln025" / "keep.txt").write_text("old")
    assert cli.main(_md_args(out, "cln025")) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert (out / "cln025" / "keep.txt").read_text() == "old"
    assert sorted(p.name for p in out.iterdir()) == ["cln025"]

    work_dir(out, "other").mkdir()
    assert cli.main(_md_args(out, "other")) == 2
    assert "--resume" in capsys.readouterr().err
    assert not (out / "other").exists()
