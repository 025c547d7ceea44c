"""Training data: per-residue features of a topology (:mod:`.featurize`), the corpus index of ATLAS folders
and mdCATH files (:mod:`.sources`, :mod:`.mdcath`) and trajectory windows streamed from it (:mod:`.dataset`)."""

from openmm_starmd.data.dataset import (
    TrajectoryWindows,
    collate_windows,
    find_atlas_folders,
    load_backbone_trajectory,
)
from openmm_starmd.data.featurize import (
    NUM_RESIDUE_TYPES,
    UNKNOWN_RESIDUE,
    ProteinFeatures,
    featurize_topology,
    residue_type_index,
)
from openmm_starmd.data.sources import System, find_systems

__all__ = [
    "NUM_RESIDUE_TYPES",
    "UNKNOWN_RESIDUE",
    "ProteinFeatures",
    "System",
    "TrajectoryWindows",
    "collate_windows",
    "featurize_topology",
    "find_atlas_folders",
    "find_systems",
    "load_backbone_trajectory",
    "residue_type_index",
]
