"""What hybrid cycles did: rejections, halvings, raw-proposal validity and where the wall time went.

:class:`CycleStats` describes one cycle (``simulation.last_cycle``) and, summed, a whole run
(``simulation.totals``). Raw validity is the share of the model's proposals that are valid structures
when mapped to atoms, before any guard or relaxation, scored with the criteria of ``starmd validate``
(:mod:`openmm_starmd.analysis.validity`); it is what STAR-MD's published validity figures measure.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from openmm_starmd.simulation.guards import BAD_ROTATION, CA_BREAK, CA_CLASH, HEAVY_CLASH, NONFINITE_PROPOSAL, REASONS
from openmm_starmd.units import ns_per_day

# why a raw proposal was invalid: frames that could not be mapped to atoms, or the first failed validity check
RAW_FAILURES = (NONFINITE_PROPOSAL, BAD_ROTATION, CA_BREAK, CA_CLASH, HEAVY_CLASH)
_BY_REASON = ("rejections", "raw_failures")  # the counters keyed by reason (dicts); the others are numbers
_COUNTS = ("halvings", "proposals", "raw_valid", "relax_retries", "cycles")
_SECONDS = ("model_s", "openmm_s", "wall_s")


@dataclass
class CycleStats:
    """Counters of one cycle, or of many summed with :meth:`add`.

    Attributes
    ----------
    rejections
        Rejected proposals by reason (keys :data:`~openmm_starmd.simulation.guards.REASONS`).
    halvings
        Times Δt was halved.
    proposals
        Raw proposals drawn from the proposer.
    raw_valid
        Of those, how many were valid (no CA break, no clash) when mapped to atoms.
    raw_failures
        The others by cause (keys :data:`RAW_FAILURES`): frames not mappable to atoms (non-finite, not
        rotations), else the first failed check (a CA–CA break, then a CA clash, then a heavy-atom clash).
    relax_retries
        Relaxations OpenMM failed that were run again from the same target with the longer minimisation
        (:meth:`~openmm_starmd.simulation.relax.RelaxSettings.retry`), whether or not that attempt succeeded.
    cycles
        Completed cycles (1 for a completed cycle's stats).
    model_s, openmm_s, wall_s
        Wall time in the proposer, in OpenMM, and in total, s.
    """

    rejections: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))
    halvings: int = 0
    proposals: int = 0
    raw_valid: int = 0
    raw_failures: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RAW_FAILURES, 0))
    relax_retries: int = 0
    cycles: int = 0
    model_s: float = 0.0
    openmm_s: float = 0.0
    wall_s: float = 0.0

    @property
    def num_rejections(self) -> int:
        return sum(self.rejections.values())

    def add(self, other: CycleStats) -> None:
        """Add ``other``'s counters to these."""
        for name in _BY_REASON:
            mine = getattr(self, name)
            for key, value in getattr(other, name).items():
                mine[key] = mine.get(key, 0) + value
        for name in _COUNTS + _SECONDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (for checkpoints)."""
        return {f.name: (dict(getattr(self, f.name)) if f.name in _BY_REASON else getattr(self, f.name))
                for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CycleStats:
        """Inverse of :meth:`to_dict`; missing counters (older checkpoints) are 0."""
        stats = cls()
        for name in _BY_REASON:
            getattr(stats, name).update(data.get(name, {}))
        for name in _COUNTS:
            setattr(stats, name, int(data.get(name, 0)))
        for name in _SECONDS:
            setattr(stats, name, float(data.get(name, 0.0)))
        return stats

    def validity(self) -> dict[str, float | int]:
        """Raw proposals, their valid share, the invalid ones by first failed check, and the share of proposals
        the guards rejected."""
        n = max(self.proposals, 1)
        return {"raw_proposals": self.proposals, "raw_valid": self.raw_valid,
                "raw_valid_fraction": self.raw_valid / n if self.proposals else float("nan"),
                "raw_failures": dict(self.raw_failures),
                "rejections": self.num_rejections,
                "rejection_rate": self.num_rejections / n if self.proposals else float("nan"),
                "relax_retries": self.relax_retries}

    def speed(self, jump_ps: float) -> dict[str, float]:
        """Cycles, simulated ns/day at ``jump_ps`` per cycle, and the model's and OpenMM's share of the wall time."""
        wall = max(self.wall_s, 1e-12)
        return {
            "cycles": self.cycles,
            "seconds_per_cycle": self.wall_s / max(self.cycles, 1),
            "ns_per_day": ns_per_day(self.cycles * jump_ps, wall),
            "model_share": self.model_s / wall,
            "openmm_share": self.openmm_s / wall,
        }
