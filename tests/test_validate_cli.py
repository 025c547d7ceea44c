"""End-to-end ``starmd validate``: a report folder from small real files, and exit 2 on bad input."""

import json
from pathlib import Path

import mdtraj as md
import numpy as np
import pytest

from openmm_starmd.analysis.report import common_interval, parse_lag
from openmm_starmd.cli import main
from openmm_starmd.errors import StarMDError

DATA = Path(__file__).parent / "data"
TOP = str(DATA / "cln025.pdb")
REF = str(DATA / "cln025_3ns.xtc")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def backbone_gen(tmp_path_factory) -> tuple[str, str]:
    """A backbone-only 'generated' trajectory (second half of the MD) with its own topology."""
    folder = tmp_path_factory.mktemp("gen")
    traj = md.load(REF, top=TOP)
    bb = traj.topology.select("name N CA C O")
    gen = traj.atom_slice(bb)[150:]
    # A bogus 1 nm box, as a stray CRYST1 record would give: it must not create clashes.
    gen.unitcell_vectors = np.tile(np.eye(3, dtype=np.float32), (gen.n_frames, 1, 1))
    gen[0].save_pdb(str(folder / "gen.pdb"))
    gen.save_xtc(str(folder / "gen.xtc"))
    return str(folder / "gen.xtc"), str(folder / "gen.pdb")


def test_validate_writes_metrics_report_and_plots(tmp_path, backbone_gen, capsys):
    gen, gen_top = backbone_gen
    out = tmp_path / "report"
    rc = main(["validate", gen, "--gen-top", gen_top, "--ref", REF, "--top", TOP, "--out", str(out),
               "--lag", "50ps", "--windows", "3"])
    assert rc == 0, capsys.readouterr().err
    data = json.loads((out / "metrics.json").read_text())
    m = data["metrics"]
    assert data["info"]["atoms_matched"] == 40  # N, CA, C, O of 10 residues
    assert data["info"]["lag_frames"] == 5
    assert "half" in data["floor_method"]
    for key in ("pc_jsd", "pc_w2_nm", "torsion_jsd", "rmsf_pearson_r", "tic_jsd", "acf_area_ps",
                "vamp2_diff", "break_rate", "heavy_clash_rate_rel"):
        assert m[key]["value"] is not None and m[key]["md_vs_md_floor"] is not None, key
    assert 0.0 <= m["pc_jsd"]["value"] <= 1.0
    assert m["break_rate"]["value"] == 0.0 and m["heavy_clash_rate"]["value"] == 0.0  # box ignored
    assert len(data["windows"]) == 3
    assert len(data["per_residue"]["rmsf_sample_nm"]) == 10
    # only matched atoms are compared: a backbone-only sample leaves no χ on either side
    assert m["chi1_jsd"]["value"] is None and m["chi1_jsd"]["md_vs_md_floor"] is None
    assert data["size_matched"]["frames"] == 150 and data["size_matched"]["md"]["torsion_jsd"] > 0
    assert "energy" not in data and "run" not in data
    report = (out / "report.md").read_text()
    assert "| Ensemble | PC1/PC2 JSD |" in report and "half" in report
    for name in ("rmsf", "pca_density", "tica_fes", "ramachandran", "autocorrelation", "validity", "drift",
                 "sidechains"):
        assert (out / f"{name}.png").read_bytes()[:8] == PNG_MAGIC, name
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left over


def test_validate_run_folder_with_energies_and_side_chains(tmp_path, capsys):
    """An all-atom trajectory in a run folder: χ metrics with floors, energies, and the run record."""
    run = tmp_path / "run"
    run.mkdir()
    md.load(REF, top=TOP)[100::4].save_xtc(str(run / "traj.xtc"))  # 50 frames, 40 ps apart
    (run / "run.json").write_text(json.dumps({
        "jumps_done": 50, "rejections": {"ca_clash": 5}, "status": "complete",
        "validity": {"raw_proposals": 55, "raw_valid": 44, "raw_valid_fraction": 0.8, "rejection_rate": 5 / 55,
                     "raw_failures": {"ca_break": 1, "heavy_clash": 10}}}))
    out = tmp_path / "report"
    rc = main(["validate", str(run / "traj.xtc"), "--ref", REF, "--top", TOP, "--out", str(out), "--lag", "40ps",
               "--forcefield", "implicit-fast"])
    assert rc == 0, capsys.readouterr().err
    data = json.loads((out / "metrics.json").read_text())
    m = data["metrics"]
    for key in ("chi1_jsd", "chi2_jsd", "rotamer_rate_per_ns", "rotamer_rate_ratio"):
        assert m[key]["value"] is not None and m[key]["md_vs_md_floor"] is not None, key
    side = data["per_residue_sidechains"]
    assert len(side["chi1_residues"]) == 9 and len(side["chi1_jsd_md_vs_md_floor"]) == 9
    energy = data["energy"]["generated_vs_reference"]
    assert energy["n_sample"] == 50 and energy["n_reference"] == 300
    assert -1400 < energy["mean_reference"] < -1000 and 0.5 < energy["sd_ratio"] < 2.0  # same MD on both sides
    sized = data["size_matched"]
    assert sized["frames"] == 50 and sized["generated"]["energy_ks"] is not None
    assert data["run"]["raw_valid_fraction"] == 0.8 and data["run"]["relaxed_valid_fraction"] == 1.0
    assert data["run"]["raw_failures"] == {"ca_break": 1, "heavy_clash": 10}
    report = (out / "report.md").read_text()
    assert "| invalid raw proposals by cause | ca_break 1, heavy_clash 10 |" in report
    for heading in ("## Side chains per residue", "## Size-matched comparison", "## Potential energy",
                    "## Hybrid run record"):
        assert heading in report, heading


def test_explicit_forcefield_for_energies_exits_2(tmp_path, capsys):
    out = tmp_path / "out"
    _fails_with(capsys, ["validate", REF, "--ref", REF, "--top", TOP, "--out", str(out), "--forcefield", "explicit"],
                "implicit")
    assert not out.exists()


def _fails_with(capsys, argv: list[str], text: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("starmd: error:") and "\n" not in err and text in err, err
    return err


def test_missing_file_exits_2(tmp_path, capsys):
    out = tmp_path / "out"
    _fails_with(capsys, ["validate", str(tmp_path / "nope.xtc"), "--ref", REF, "--top", TOP, "--out", str(out)],
                "not found")
    assert not out.exists()


def test_unmatched_atom_sets_exit_2(tmp_path, capsys):
    out = tmp_path / "out"
    _fails_with(capsys, ["validate", str(DATA / "amrv_3ns.xtc"), "--gen-top", str(DATA / "amrv.pdb"),
                         "--ref", REF, "--top", TOP, "--out", str(out)], "cannot be matched")
    assert not out.exists()


def test_wrong_topology_for_the_generated_file_exits_2(tmp_path, capsys):
    _fails_with(capsys, ["validate", str(DATA / "amrv_3ns.xtc"), "--ref", REF, "--top", TOP,
                         "--out", str(tmp_path / "out")], "--gen-top")


def test_existing_output_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    _fails_with(capsys, ["validate", REF, "--ref", REF, "--top", TOP, "--out", str(out)], "--overwrite")
    assert (out / "keep.txt").read_text() == "mine"


def test_frame_intervals_are_reconciled_by_striding():
    dt, gen_stride, ref_stride, _ = common_interval(20.0, 10.0)
    assert (dt, gen_stride, ref_stride) == (20.0, 1, 2)
    dt, gen_stride, ref_stride, _ = common_interval(10.0, 30.0)
    assert (dt, gen_stride, ref_stride) == (30.0, 3, 1)
    with pytest.raises(StarMDError, match="multiple"):
        common_interval(15.0, 10.0)
    assert parse_lag("100ps", 20.0) == 5 and parse_lag("7", None) == 7
    with pytest.raises(StarMDError, match="shorter than one frame"):
        parse_lag("1ps", 10.0)
