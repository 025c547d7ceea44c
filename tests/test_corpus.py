"""Corpus builder (``starmd md`` with many inputs): N shards build the same corpus as one process,
systems resume one by one, and bad requests are refused before anything is written."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import mdtraj
import numpy as np
import pytest

from openmm_starmd import cli, corpus, reference
from openmm_starmd.errors import StarMDError

DATA = Path(__file__).parent / "data"
# Two tetrapeptides from sequence and one structure file; a few ps each on one CPU thread.
RUN = ["--time", "1.2ps", "--stride", "0.4ps", "--equilibration", "0.4ps", "--replicas", "2", "--seed", "7",
       "--forcefield", "implicit-fast", "--platform", "CPU", "--no-progress"]


pytestmark = pytest.mark.usefixtures("one_cpu_thread")  # conftest: OpenMM CPU platform on one thread


@pytest.fixture(scope="module")
def listing(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("inputs")
    (folder / "amrv.pdb").write_bytes((DATA / "amrv.pdb").read_bytes())
    path = folder / "systems.txt"
    path.write_text("# two peptides from sequence, one structure\nAKWD\n\nGSEL   # a comment\namrv.pdb\n")
    return path


@pytest.fixture(scope="module")
def single(listing, tmp_path_factory, one_cpu_thread) -> Path:
    """The corpus built by one process (the reference every sharded build must equal)."""
    out = tmp_path_factory.mktemp("single") / "corpus"
    assert cli.main(["md", str(listing), "-o", str(out), *RUN]) == 0
    return out


def _without_timing(entry: dict) -> dict:
    return {key: value for key, value in entry.items() if key not in corpus.TIMING_KEYS}


def _assert_same_corpus(built: Path, expected: Path) -> None:
    """Same systems, the same frames bit for bit, the same settings and manifest up to timing fields."""
    names = ["AKWD", "GSEL", "amrv"]
    for root in (built, expected):
        assert sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) == names
        assert not list(root.glob(".*.work"))
    for name in names:
        atoms_a, atoms_b = ([line for line in (root / name / f"{name}.pdb").read_text().splitlines()
                             if not line.startswith("REMARK")] for root in (built, expected))  # REMARK: a date
        assert atoms_a == atoms_b
        for k in (1, 2):
            a, b = (reference._read_xtc(root / name / f"{name}_R{k}.xtc") for root in (built, expected))
            assert a[0].shape == (3, a[0].shape[1], 3)
            for x, y in zip(a, b, strict=True):
                np.testing.assert_array_equal(x, y)
            meta_a, meta_b = (json.loads((root / name / f"{name}_R{k}.json").read_text())
                              for root in (built, expected))
            skip = {"wall_s", "ns_per_day", "sessions"}
            assert {k: v for k, v in meta_a.items() if k not in skip} == {
                k: v for k, v in meta_b.items() if k not in skip}
    built_manifest = [_without_timing(e) for e in corpus.read_manifest(built / "manifest.jsonl")]
    assert built_manifest == [_without_timing(e) for e in corpus.read_manifest(expected / "manifest.jsonl")]
    assert [_without_timing(e) for e in corpus.merge_manifests(built)] == built_manifest


def test_single_process_corpus_layout_and_manifest(single, listing):
    manifest = corpus.read_manifest(single / "manifest.jsonl")
    assert [e["name"] for e in manifest] == ["AKWD", "GSEL", "amrv"]
    assert [e["index"] for e in manifest] == [0, 1, 2]
    assert [e["kind"] for e in manifest] == ["sequence", "sequence", "structure"]
    assert manifest[2]["source"] == str((listing.parent / "amrv.pdb").resolve())
    for entry in manifest:
        name = entry["name"]
        traj = mdtraj.load(str(single / name / f"{name}_R1.xtc"), top=str(single / name / f"{name}.pdb"))
        assert traj.n_residues == 4 == entry["n_residues"] and traj.n_atoms == entry["n_atoms"]
        np.testing.assert_allclose(traj.time, [0.4, 0.8, 1.2], atol=1e-4)
        assert entry["frames"] == 6 and entry["frames_per_replica"] == [3, 3] and entry["ns"] == pytest.approx(0.0024)
        assert entry["seed"] == corpus.system_seed(7, name)
        assert entry["replica_seeds"] == [entry["seed"] + 1, entry["seed"] + 2]
        assert entry["settings"]["preset"] == "implicit-fast" and entry["settings"]["stride_ps"] == 0.4
        assert entry["ns_per_day"] > 0 and entry["wall_s"] >= 0
        meta = json.loads((single / name / f"{name}_R1.json").read_text())
        assert meta["name"] == name and meta["base_seed"] == entry["seed"]
        if entry["kind"] == "sequence":
            assert (meta["source"], meta["sequence"]) == (None, name)  # as in the shared reference data
            assert entry["sequence"] == name
        else:
            assert (meta["source"], meta["sequence"]) == ("amrv.pdb", None)
    # Per-system seeds differ, so the peptides' replicas are independent draws.
    assert len({e["seed"] for e in manifest}) == 3
    assert (single / "manifest.shard-1-of-1.jsonl").read_bytes() == (single / "manifest.jsonl").read_bytes()
    # Rerunning the finished corpus is a no-op (every system is skipped).
    stamps = {p: p.stat().st_mtime_ns for p in single.rglob("*.xtc")}
    assert cli.main(["md", str(listing), "-o", str(single), *RUN]) == 0
    assert {p: p.stat().st_mtime_ns for p in single.rglob("*.xtc")} == stamps


def test_two_concurrent_shards_equal_one_process(single, listing, tmp_path):
    out = tmp_path / "corpus"
    env = {**os.environ, "OPENMM_CPU_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "openmm_starmd.cli", "md", str(listing), "-o", str(out),
                               *RUN, "--shard", f"{i}/2"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in (1, 2)]
    results = [proc.communicate(timeout=120) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], results
    # Round robin in list order: shard 1 has systems 0 and 2, shard 2 has system 1.
    assert [e["name"] for e in corpus.read_manifest(out / "manifest.shard-1-of-2.jsonl")] == ["AKWD", "amrv"]
    assert [e["name"] for e in corpus.read_manifest(out / "manifest.shard-2-of-2.jsonl")] == ["GSEL"]
    _assert_same_corpus(out, single)


def test_interrupted_shard_resumes_system_by_system(single, listing, tmp_path, monkeypatch):
    out = tmp_path / "corpus"
    args = ["md", str(listing), "-o", str(out), *RUN, "--checkpoint-interval", "0"]
    write_xtc, calls = reference._write_xtc, []

    def interrupt(path, *rest):
        calls.append(path)
        if "amrv" in str(path) and sum("amrv" in str(p) for p in calls) == 2:  # amrv R1, after its first frame
            raise KeyboardInterrupt
        write_xtc(path, *rest)

    monkeypatch.setattr(reference, "_write_xtc", interrupt)
    assert cli.main([*args, "--shard", "1/2"]) == 130
    monkeypatch.setattr(reference, "_write_xtc", write_xtc)
    assert corpus.is_finished(out, "AKWD") and not corpus.is_finished(out, "amrv")
    progress = json.loads((reference.work_dir(out, "amrv") / "R1" / "progress.json").read_text())
    assert progress["frames"] == 1
    assert not (out / "manifest.jsonl").exists()

    stamps = {p: p.stat().st_mtime_ns for p in (out / "AKWD").iterdir()}
    built = []
    run_md = reference.run_reference_md
    monkeypatch.setattr(reference, "run_reference_md", lambda *a, **k: built.append(k["name"]) or run_md(*a, **k))
    assert cli.main([*args, "--shard", "1/2"]) == 0
    assert built == ["amrv"]  # the finished system was skipped, the interrupted one resumed
    assert {p: p.stat().st_mtime_ns for p in (out / "AKWD").iterdir()} == stamps
    assert json.loads((out / "amrv" / "amrv_R1.json").read_text())["sessions"] == 2
    assert not (out / "manifest.jsonl").exists()  # shard 2's system is still missing
    assert cli.main([*args, "--shard", "2/2"]) == 0
    assert built == ["amrv", "GSEL"]
    # The OpenMM checkpoint continued amrv exactly: the corpus equals the uninterrupted one.
    _assert_same_corpus(out, single)


def test_refusals_write_nothing(listing, tmp_path, capsys):
    out = tmp_path / "corpus"
    bad_list = tmp_path / "bad.txt"
    bad_list.write_text("AKWD\nnot-a-thing\n")
    dup_list = tmp_path / "dup.txt"
    dup_list.write_text("AKWD\nAKWD\n")
    cases = [
        ([str(listing), "--shard", "3/2"], "between 1 and N"),
        ([str(listing), "--shard", "0/2"], "SLURM"),
        ([str(listing), "--shard", "half"], "I/N"),
        ([str(bad_list)], "line 2"),
        ([str(dup_list)], "AKWD"),
        (["AKWD", "GSEL", "--name", "x"], "--name"),
        (["AKWD", "--overwrite"], "--overwrite"),
        ([str(tmp_path / "missing.pdb"), "AKWD"], "missing.pdb"),
        (["AKWX"], "not a sequence"),
        ([str(listing), "--time", "1ps", "--stride", "0.3ps"], "multiple"),
        ([str(listing), "--platform", "NoSuchPlatform"], "platform"),
        ([str(DATA / "amrv.pdb"), "AKWD", "--forcefield", "implicit-fast", "--time", "10"], "unit"),
    ]
    for extra, message in cases:
        assert cli.main(["md", *extra, "-o", str(out)]) == 2, extra
        err = capsys.readouterr().err
        assert err.startswith("starmd: error:") and err.count("\n") == 1 and message in err, (extra, err)
        assert not out.exists(), extra

    # A started corpus refuses other settings or other inputs, and is left as it was.
    small = ["--time", "0.4ps", "--stride", "0.4ps", "--equilibration", "0", "--replicas", "1",
             "--platform", "CPU", "--no-progress"]
    assert cli.main(["md", "AKWD", "-o", str(out), *small]) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    for extra, message in [(["AKWD", *small, "--temperature", "310"], "temperature_k"),
                           (["AKWD", "GSEL", *small], "other inputs")]:
        assert cli.main(["md", *extra, "-o", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err and "--output" in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    # A folder that is not a corpus but holds a system's name is refused.
    other = tmp_path / "other"
    (other / "AKWD").mkdir(parents=True)
    assert cli.main(["md", "AKWD", "-o", str(other), *small]) == 2
    assert "corpus.json" in capsys.readouterr().err
    assert sorted(p.name for p in other.iterdir()) == ["AKWD"]


def test_bad_structure_is_refused_before_any_md(tmp_path, capsys):
    bad = tmp_path / "water.pdb"
    bad.write_text("HETATM    1  O   HOH A   1       0.000   0.000   0.000  1.00  0.00           O\nEND\n")
    out = tmp_path / "corpus"
    assert cli.main(["md", "AKWD", str(bad), "-o", str(out), "--platform", "CPU", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "system water" in err and "protein" in err
    assert not out.exists()


@pytest.mark.skipif(importlib.util.find_spec("bioemu_benchmarks") is None, reason="bioemu-benchmarks not installed")
def test_bioemu_source_lists_designed_proteins_only():
    every = corpus.bioemu_systems("")
    names = [s.name for s in every]
    assert "EHEE_rd3_0053" in names and len(names) >= 40
    assert all(name.startswith(corpus.DESIGNED_PREFIXES) for name in names)
    assert all(Path(s.path).is_file() and s.source == f"bioemu:{s.name}" for s in every)
    assert [s.name for s in corpus.bioemu_systems("EHEE_*")] == ["EHEE_rd3_0053"]
    for reserved in ("1ENH", "1PGA_*", "*"):
        with pytest.raises(StarMDError, match="reserved for evaluation: only designed mini-proteins"):
            corpus.bioemu_systems(reserved)
    with pytest.raises(StarMDError, match="matches no"):
        corpus.bioemu_systems("NOPE_*")


def test_bioemu_without_the_package_names_the_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert cli.main(["md", "bioemu:EHEE_*", "-o", str(tmp_path / "c"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "pip install --no-deps bioemu-benchmarks" in err and err.count("\n") == 1
    assert not (tmp_path / "c").exists()
