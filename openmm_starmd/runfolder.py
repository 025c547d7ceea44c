"""What the run folders of ``starmd simulate`` and ``starmd rollout`` share: the software versions
recorded in ``run.json``, and cutting a trajectory back to the last saved state before a resume."""

from __future__ import annotations

import os
import platform as py_platform
from pathlib import Path

import mdtraj as md

from openmm_starmd import __version__
from openmm_starmd.atomic import temporary_path
from openmm_starmd.errors import StarMDError


def software_versions() -> dict[str, str]:
    """Versions of this package and of the libraries whose behaviour a run depends on."""
    import numpy as np
    import openmm
    import torch

    return {"openmm_starmd": __version__, "openmm": openmm.__version__, "torch": torch.__version__,
            "numpy": np.__version__, "mdtraj": md.__version__, "python": py_platform.python_version()}


def truncate_xtc(path: Path, n_frames: int) -> None:
    """Keep the first ``n_frames`` frames of an XTC file (atomically); a partial last frame is dropped.

    Raises
    ------
    StarMDError
        If the file holds fewer frames than the saved state says were written.
    """
    if n_frames == 0 or not path.exists():
        path.unlink(missing_ok=True)
        return
    with md.formats.XTCTrajectoryFile(str(path), "r") as handle:
        xyz, times, steps, box = handle.read(n_frames=n_frames)
    if len(xyz) < n_frames:
        raise StarMDError(f"{path} holds {len(xyz)} frames but the saved state is at jump {n_frames}: "
                          "the run folder is damaged, start again with --overwrite")
    tmp = temporary_path(path)
    try:
        with md.formats.XTCTrajectoryFile(str(tmp), "w") as handle:
            handle.write(xyz, time=times, step=steps, box=box)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
