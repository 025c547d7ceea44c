"""Diffusion processes over residue frames: VP SDE on translations (:mod:`.r3`), IGSO(3) on rotations
(:mod:`.so3`), their schedules (:mod:`.schedule`) and the reverse-time sampler (:mod:`.sampler`)."""

from openmm_starmd.diffusion.r3 import R3Diffuser
from openmm_starmd.diffusion.sampler import FrameDiffusion, sample_relative
from openmm_starmd.diffusion.schedule import LogSigmaSchedule, VPSchedule
from openmm_starmd.diffusion.so3 import SO3Diffuser

__all__ = ["FrameDiffusion", "LogSigmaSchedule", "R3Diffuser", "SO3Diffuser", "VPSchedule", "sample_relative"]
