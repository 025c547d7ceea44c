"""Known-answer tests of per-frame validity: breaks, clashes, reference-relative rates, no periodicity."""


import mdtraj as md
import numpy as np
import pytest

from openmm_starmd.analysis.validity import (
    CA_BOND_BREAK_NM,
    fit_validity_reference,
    frame_validity,
    validity_rates,
)


@pytest.fixture(scope="module")
def cln(cln025_traj) -> md.Trajectory:
    return cln025_traj[:40]


def _atoms_of_residues(top: md.Topology, first: int) -> np.ndarray:
    return np.array([a.index for a in top.atoms if a.residue.index >= first])


def test_md_frames_are_valid(cln):
    v = frame_validity(cln)
    assert v.valid.shape == (cln.n_frames,)
    assert v.valid.all()
    assert np.all((v.max_ca_bond_nm > 0.36) & (v.max_ca_bond_nm < CA_BOND_BREAK_NM))


def test_stretched_ca_bond_is_counted_as_broken(cln):
    broken = md.Trajectory(cln.xyz.copy(), cln.topology)
    # Pull residues 6..10 away from 1..5 in frame 3 only: exactly one CA–CA bond (5–6) breaks.
    move = _atoms_of_residues(cln.topology, 5)
    direction = broken.xyz[3, move].mean(axis=0) - broken.xyz[3, :move[0]].mean(axis=0)
    broken.xyz[3, move] += 0.3 * direction / np.linalg.norm(direction)
    v = frame_validity(broken)
    assert v.ca_breaks[3] == 1
    assert v.ca_breaks.sum() == 1
    assert not v.valid[3] and v.valid[np.arange(cln.n_frames) != 3].all()
    assert v.max_ca_bond_nm[3] > CA_BOND_BREAK_NM


def test_non_finite_frame_is_invalid(cln):
    bad = md.Trajectory(cln.xyz[:3].copy(), cln.topology)
    bad.xyz[1, 7] = np.nan
    v = frame_validity(bad)
    assert list(v.valid) == [True, False, True]
    assert v.ca_breaks[1] >= 1


def test_residue_moved_onto_another_is_a_clash(cln):
    clashed = md.Trajectory(cln.xyz[:2].copy(), cln.topology)
    first = np.array([a.index for a in cln.topology.residue(0).atoms])
    ca0 = cln.topology.select("resid 0 and name CA")[0]
    ca6 = cln.topology.select("resid 6 and name CA")[0]
    clashed.xyz[1, first] += clashed.xyz[1, ca6] - clashed.xyz[1, ca0] + np.float32(0.05)
    v = frame_validity(clashed)
    assert v.ca_clashes[0] == 0 and v.heavy_clashes[0] == 0
    assert v.ca_clashes[1] >= 1 and v.heavy_clashes[1] >= 1


def test_a_bogus_box_never_creates_clashes(cln):
    boxed = md.Trajectory(cln.xyz.copy(), cln.topology)
    # A 1 nm cubic cell (like a stray CRYST1 record): minimum-image distances would be all clashes.
    boxed.unitcell_vectors = np.tile(np.eye(3, dtype=np.float32), (cln.n_frames, 1, 1))
    v, ref = frame_validity(boxed), frame_validity(cln)
    np.testing.assert_array_equal(v.heavy_clashes, ref.heavy_clashes)
    np.testing.assert_allclose(v.min_heavy_nonbonded_nm, ref.min_heavy_nonbonded_nm)
    assert v.valid.all()


def test_single_frame_and_relative_rates(cln):
    one = frame_validity(cln[0])
    assert one.valid.shape == (1,) and one.valid[0]
    ref_v = frame_validity(cln)
    limits = fit_validity_reference(ref_v)
    own = validity_rates(ref_v, limits)
    assert own["break_rate"] == 0.0
    assert own["break_rate_rel"] <= 0.05  # the reference exceeds its own 99th percentile rarely
    stretched = md.Trajectory(cln.xyz.copy(), cln.topology)
    stretched.xyz *= np.float32(1.05)  # every bond 5 % longer: beyond the reference's spread
    rates = validity_rates(frame_validity(stretched), limits)
    assert rates["break_rate_rel"] == 1.0
    assert rates["break_rate"] < 1.0  # 5 % does not reach the absolute 0.42 nm limit everywhere
