"""Test-suite settings.

The suite runs on 2 cores beside other work; torch's intra-op threads fight each other on the tiny
tensors tests use (measured 10-40x slower under load), so tests use one thread. OpenMM's CPU platform
reads OPENMM_CPU_THREADS when it loads: set before the first ``import openmm``, it makes explicit-solvent
(PME) runs in one process repeat each other, which the ``Threads`` default of :func:`one_cpu_thread` alone
did not (two identical solvated runs differed by one XTC quantum at a few water atoms).
"""

import os
import shutil
from pathlib import Path

os.environ.setdefault("OPENMM_CPU_THREADS", "1")

import mdtraj as md
import openmm
import pytest
import torch

torch.set_num_threads(1)

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def cln025_traj() -> md.Trajectory:
    """The shipped 3 ns chignolin slice (300 frames, 10 ps apart), loaded once; tests copy before changing it."""
    return md.load(DATA / "cln025_3ns.xtc", top=DATA / "cln025.pdb")


@pytest.fixture(scope="module")
def one_cpu_thread():
    """OpenMM's CPU platform on one thread for the module: its force sums, and so the frames, are then
    reproducible bit for bit, in-process as in the subprocesses the tests start."""
    platform = openmm.Platform.getPlatformByName("CPU")
    old = platform.getPropertyDefaultValue("Threads")
    platform.setPropertyDefaultValue("Threads", "1")
    yield
    platform.setPropertyDefaultValue("Threads", old)


@pytest.fixture(scope="module")
def atlas(tmp_path_factory) -> Path:
    """tests/data/cln025 in the ATLAS layout: cln025/cln025.pdb + cln025/cln025_R1.xtc (3 ns, 10 ps frames)."""
    folder = tmp_path_factory.mktemp("atlas") / "cln025"
    folder.mkdir()
    shutil.copy(DATA / "cln025.pdb", folder / "cln025.pdb")
    shutil.copy(DATA / "cln025_3ns.xtc", folder / "cln025_R1.xtc")
    return folder
