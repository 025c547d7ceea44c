"""Training data: per-residue features of a topology (:mod:`.featurize`) and trajectory windows
(:mod:`.dataset`)."""

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

__all__ = [
    "NUM_RESIDUE_TYPES",
    "UNKNOWN_RESIDUE",
    "ProteinFeatures",
    "TrajectoryWindows",
    "collate_windows",
    "featurize_topology",
    "find_atlas_folders",
    "load_backbone_trajectory",
    "residue_type_index",
]
