"""mdCATH input: files written in mdCATH's exact HDF5 schema read back as the same frames as XTC MD."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from mdcath_schema import write_mdcath

from openmm_starmd.data import TrajectoryWindows, featurize_topology
from openmm_starmd.data.mdcath import MDCATH_FRAME_PS, mdcath_topology, scan_mdcath
from openmm_starmd.data.sources import find_systems
from openmm_starmd.errors import StarMDError
from openmm_starmd.frames import protein

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def domain_file(tmp_path_factory, cln025_traj):
    """Chignolin frames 0-39 as replica 0 at 320 K, frames 40-79 as replica 1 at 320 K, 80-119 at 450 K."""
    xyz = cln025_traj.xyz
    path = tmp_path_factory.mktemp("mdcath") / "mdcath_dataset_1cln000.h5"
    return write_mdcath(path, "1cln000", DATA / "cln025.pdb",
                        {(320, 0): xyz[:40], (320, 1): xyz[40:80], (450, 0): xyz[80:120]})


def test_scan_reads_the_layout_without_coordinates(domain_file, cln025_traj):
    domain, n_atoms, replicas = scan_mdcath(domain_file)
    assert domain == "1cln000" and n_atoms == cln025_traj.n_atoms
    assert replicas == [("1cln000/320/0", 320.0, 40), ("1cln000/320/1", 320.0, 40), ("1cln000/450/0", 450.0, 40)]
    (system,) = find_systems([domain_file])
    assert system.name == "1cln000" and {r.spacing_ps for r in system.replicas} == {MDCATH_FRAME_PS}
    features = featurize_topology(mdcath_topology(domain_file))
    expected = featurize_topology(cln025_traj.topology)
    assert all(torch.equal(v, expected.as_dict()[k]) for k, v in features.as_dict().items())


def test_windows_are_the_stored_frames_in_nm_with_their_temperature(domain_file, cln025_traj):
    rot, trans, _ = protein.frames_from_positions(cln025_traj.xyz, cln025_traj.topology)
    ds = TrajectoryWindows([domain_file], window=4, max_stride=5, seed=0, items_per_epoch=24)
    offset = {("320", 0): 0, ("320", 1): 40, ("450", 0): 80}
    temps = set()
    for i in range(len(ds)):
        item = ds[i]
        rep = ds._replicas[0][int(item["replica"])]
        temperature, replica = rep.group.split("/")[1:]
        assert float(item["temperature_k"]) == float(temperature)
        temps.add(temperature)
        stride = int(item["stride"])
        assert float(item["dt_ps"]) == stride * MDCATH_FRAME_PS
        frames = offset[(temperature, int(replica))] + int(item["start_frame"]) + stride * torch.arange(4)
        # Å in the file, nm out (float32 round trip: 1e-5 nm)
        assert torch.allclose(item["translations"], trans[frames] - trans[frames[0]].mean(0), atol=2e-5)
        assert torch.allclose(item["rotations"], rot[frames], atol=1e-4)
    assert temps == {"320", "450"}


def test_a_mixed_corpus_and_bad_files(domain_file, tmp_path):
    atlas = tmp_path / "corpus" / "AMRV"
    atlas.mkdir(parents=True)
    (atlas / "AMRV.pdb").write_bytes((DATA / "amrv.pdb").read_bytes())
    (atlas / "AMRV_R1.xtc").write_bytes((DATA / "amrv_3ns.xtc").read_bytes())
    (tmp_path / "corpus" / "h5").mkdir()
    (tmp_path / "corpus" / "h5" / domain_file.name).write_bytes(domain_file.read_bytes())
    names = [s.name for s in find_systems([tmp_path / "corpus"])]
    assert names == ["AMRV", "1cln000"]
    with pytest.raises(StarMDError, match="two systems are named 1cln000"):
        find_systems([tmp_path / "corpus", domain_file])
    two = tmp_path / "two.h5"
    with h5py.File(two, "w") as h5:
        h5.create_group("a")
        h5.create_group("b")
    with pytest.raises(StarMDError, match="2 top-level groups"):
        find_systems([two])
    bad = tmp_path / "bad.h5"
    bad.write_bytes(domain_file.read_bytes())
    with h5py.File(bad, "a") as h5:
        del h5["1cln000/320/1/coords"]
        h5["1cln000/320/1"].create_dataset("coords", data=np.zeros((3, 5, 3), dtype=np.float32))
    with pytest.raises(StarMDError, match="has 5 atoms but numProteinAtoms is 166"):
        find_systems([bad])
    text = tmp_path / "not.h5"
    text.write_text("hello")
    with pytest.raises(StarMDError, match=r"cannot read .*not\.h5 as HDF5"):
        find_systems([text])
