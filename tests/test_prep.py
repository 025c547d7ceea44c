"""Structure preparation on real PDB entries (shipped in tests/data) and on bad input."""

from __future__ import annotations

import math
import random
import urllib.request
from pathlib import Path

import numpy as np
import openmm
import openmm.unit as u
import pytest

from openmm_starmd import prep
from openmm_starmd.cli import main
from openmm_starmd.errors import StarMDError
from openmm_starmd.forcefields import build_system, make_integrator

DATA = Path(__file__).parent / "data"


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Preparation must never reach the network: any attempt fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("prep tried to reach the network")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr("pdbfixer.pdbfixer.urlopen", refuse)


def _minimised_energy(prepared: prep.PreparedStructure, iterations: int = 50) -> tuple[float, float]:
    system, _, positions = build_system(prepared.topology, prepared.positions, "implicit-fast")
    context = openmm.Context(system, make_integrator("implicit-fast", seed=1),
                             openmm.Platform.getPlatformByName("CPU"), {"Threads": "1"})
    context.setPositions(positions)
    before = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
    openmm.LocalEnergyMinimizer.minimize(context, 10.0, iterations)
    after = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
    return before, after


def _residue_names(prepared: prep.PreparedStructure) -> list[str]:
    return [r.name for r in prepared.topology.residues()]


def test_nmr_entry_takes_requested_model_and_minimises():
    first = prep.prepare(DATA / "2jof_2models.pdb")
    second = prep.prepare(DATA / "2jof_2models.pdb", model=2)
    assert "took model 1 of 2" in first.report
    assert first.topology.getNumResidues() == 20
    # Trp-cage: the two NMR models are different conformations of the same atoms.
    p1 = first.positions.value_in_unit(u.nanometer)
    p2 = second.positions.value_in_unit(u.nanometer)
    assert len(p1) == len(p2)
    assert max(abs(a[0] - b[0]) for a, b in zip(p1, p2, strict=True)) > 0.01
    before, after = _minimised_energy(first)
    assert math.isfinite(after) and after < before
    with pytest.raises(StarMDError, match="has 2 model"):
        prep.prepare(DATA / "2jof_2models.pdb", model=3)


def test_altlocs_waters_and_norleucine_are_handled():
    prepared = prep.prepare(DATA / "2f4k.pdb")
    names = _residue_names(prepared)
    assert len(names) == 35
    assert "NLE" not in names and "HOH" not in names
    assert any("NLE by LEU" in line for line in prepared.report)
    assert any("water" in line for line in prepared.report)
    # One position per atom: alternate locations collapsed, hydrogens added.
    elements = [a.element.symbol for a in prepared.topology.atoms()]
    assert "H" in elements
    assert prepared.topology.getPeriodicBoxVectors() is None
    _, after = _minimised_energy(prepared)
    assert math.isfinite(after)


def test_one_file_prepares_to_the_same_coordinates_and_the_caller_keeps_its_random_state():
    cpu = openmm.Platform.getPlatformByName("CPU")
    threads = cpu.getPropertyDefaultValue("Threads")
    random.seed(123)
    expected_next = random.random()
    random.seed(123)
    # villin: norleucines rebuilt as leucines (new heavy atoms) and hydrogens added, both placed by OpenMM
    # minimisations that used to start from random positions and seeds
    first = prep.prepare(DATA / "2f4k.pdb")
    assert random.random() == expected_next  # the global random stream is the caller's, untouched
    assert cpu.getPropertyDefaultValue("Threads") == threads
    second = prep.prepare(DATA / "2f4k.pdb")
    a, b = (np.asarray(p.positions.value_in_unit(u.nanometer)) for p in (first, second))
    np.testing.assert_array_equal(a, b)


def test_keep_water_keeps_crystal_waters():
    prepared = prep.prepare(DATA / "2f4k.pdb", keep_water=True)
    assert "HOH" in _residue_names(prepared)


def test_chain_selection_and_terminal_residues():
    chain_a = prep.prepare(DATA / "nug2.pdb", chains=["A"])
    assert [c.id for c in chain_a.topology.chains()] == ["A"]
    assert any("left out" in line and "terminal" in line for line in chain_a.report)
    both = prep.prepare(DATA / "nug2.pdb")
    assert both.topology.getNumChains() == 2
    built = prep.prepare(DATA / "nug2.pdb", chains=["A"], add_terminal_residues=True)
    assert built.topology.getNumResidues() > chain_a.topology.getNumResidues()
    with pytest.raises(StarMDError, match="unknown chain Z"):
        prep.prepare(DATA / "nug2.pdb", chains=["Z"])


@pytest.mark.parametrize("sequence", ["AKWD", "ACDEFGHIKLMNPQRSTVWY"])
def test_sequence_builds_peptide(sequence):
    prepared = prep.prepare(sequence=sequence)
    codes = {v: k for k, v in prep.ONE_TO_THREE.items()}
    assert "".join(codes[n] for n in _residue_names(prepared)) == sequence
    _, after = _minimised_energy(prepared, iterations=20)
    assert math.isfinite(after)


def test_bad_sequence_is_refused():
    with pytest.raises(StarMDError, match="letters BXZ"):
        prep.prepare(sequence="AKBXZ")



def test_cli_writes_pdb_and_refuses_overwrite(tmp_path, capsys):
    out = tmp_path / "x.pdb"
    assert main(["prepare", "--sequence", "GAG", "-o", str(out)]) == 0
    assert prep.load_pdb(out).topology.getNumResidues() == 3
    assert main(["prepare", "--sequence", "GAG", "-o", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["prepare", "--sequence", "GAG", "-o", str(out), "--overwrite"]) == 0


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _unknown_residue_pdb(tmp_path: Path) -> Path:
    """Chignolin with residue 5 renamed to a name no template knows."""
    lines = []
    for line in (DATA / "cln025.pdb").read_text().splitlines():
        if line.startswith("ATOM") and line[22:26].strip() == "5":
            line = line[:17] + "XYZ" + line[20:]
        lines.append(line)
    return _write(tmp_path, "unknown.pdb", "\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing.pdb", "does not exist"),
        (lambda p: _write(p, "empty.pdb", ""), "is empty"),
        (lambda p: _write(p, "notes.pdb", "this is not a structure\njust some text\n"), "cannot read"),
        (lambda p: _write(p, "water.pdb",
                          "HETATM    1  O   HOH A   1       0.000   0.000   0.000  1.00  0.00           O\nEND\n"),
         "no protein"),
        (_unknown_residue_pdb, "XYZ 5"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_no_output(tmp_path, capsys, make, message):
    source = make(tmp_path)
    out = tmp_path / "out.pdb"
    assert main(["prepare", str(source), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("starmd: error:") and message in err
    assert len(err.splitlines()) == 1
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.pdb")]


def test_unknown_chain_exits_2(tmp_path, capsys):
    assert main(["prepare", str(DATA / "nug2.pdb"), "--chain", "Q", "-o", str(tmp_path / "o.pdb")]) == 2
    assert "chains A, B" in capsys.readouterr().err
