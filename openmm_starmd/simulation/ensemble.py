"""Replica ensembles: R independent hybrid trajectories, the model batched over replicas.

Each replica is a full :class:`~openmm_starmd.simulation.hybrid.StarMDSimulation` (its own OpenMM
Context, reporters, guards, generator seeded ``seed + k``), so every cycle rule (guards, resampling,
Δt halving, reporters) is the single simulation's. Only the model is shared: a STAR-MD network drives
one :class:`~openmm_starmd.rollout.Rollout` with ``replicas=R``, and every replica's proposer is a
:class:`ReplicaProposer`, a view of one replica of it.

Per ensemble cycle the first proposal of every running replica is drawn in one batched call (one
forward pass per sampler step for all R) and handed to the views; then each replica runs its cycle. A
replica whose proposal is rejected re-samples alone (its view draws for it only), so rejections never
cost the other replicas anything. Replica k draws from its own generator in the same order as a
single run seeded ``seed + k``, so it reproduces that run.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

import openmm
import openmm.app as app
import openmm.unit as u
import torch

from openmm_starmd.atomic import atomic_write
from openmm_starmd.errors import StarMDError
from openmm_starmd.simulation import state as blob
from openmm_starmd.simulation.guards import GuardSettings
from openmm_starmd.simulation.hybrid import JumpRejectedError, StarMDSimulation
from openmm_starmd.simulation.proposer import Proposer, StarMDProposerFactory, _factory, resolve_proposer
from openmm_starmd.simulation.relax import RelaxSettings
from openmm_starmd.simulation.solvent import SolventLayout
from openmm_starmd.simulation.stats import CycleStats

if TYPE_CHECKING:
    from openmm_starmd.rollout import Rollout


class BatchedStarMD:
    """One STAR-MD rollout batched over R replicas, and a :class:`ReplicaProposer` view per replica.

    Parameters
    ----------
    model
        A loaded STAR-MD network (on the device where it should run).
    topology
        The simulated topology (the same for every replica).
    replicas
        R.
    window, num_steps
        As for :class:`~openmm_starmd.rollout.Rollout`.
    """

    def __init__(self, model: torch.nn.Module, topology: app.Topology, replicas: int,
                 window: int | None = None, num_steps: int | None = None) -> None:
        from openmm_starmd.data.featurize import featurize_topology
        from openmm_starmd.rollout import Rollout

        self.model = model
        self.rollout = Rollout(model, featurize_topology(topology), window=window, num_steps=num_steps,
                               replicas=replicas)
        self.views = [ReplicaProposer(self, k) for k in range(replicas)]
        self.model_s = 0.0  # wall time of the batched draws

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def prefetch(self, dt_ps: float, generators: list[torch.Generator], replicas: list[int]) -> None:
        """Draw the next frames of ``replicas`` at ``dt_ps`` together; each view serves its draw once."""
        start = time.perf_counter()
        with torch.no_grad():
            rot, trans = self.rollout.sample(dt_ps, generators, replicas=replicas)
        self.model_s += time.perf_counter() - start
        chi = self.rollout.last_chi
        for i, k in enumerate(replicas):
            self.views[k].prefetched = (float(dt_ps), rot[i], trans[i], None if chi is None else chi[i])

    def reset_replica(self, k: int) -> None:
        """Forget replica ``k``'s history, keeping the others'."""
        self.rollout.forget([k])


class ReplicaProposer(Proposer):
    """Replica ``k`` of a :class:`BatchedStarMD`: a proposer that pushes and draws for that replica only."""

    def __init__(self, batch: BatchedStarMD, k: int) -> None:
        self.batch, self.k = batch, k
        self.prefetched: tuple[float, torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None
        self.chi: torch.Tensor | None = None  # χ1–χ4 [M, N, 4] rad, draws of the last proposal (None: no χ head)

    @property
    def device(self) -> torch.device:
        return self.batch.device

    @property
    def model(self) -> torch.nn.Module:
        return self.batch.model

    @property
    def rollout(self) -> Rollout:
        """The replicas' shared :class:`~openmm_starmd.rollout.Rollout`."""
        return self.batch.rollout

    @property
    def draws_chi(self) -> bool:
        return bool(self.model.config.chi_head)

    def proposal_chi(self) -> torch.Tensor | None:
        return self.chi

    @property
    def chi_draws(self) -> int | None:
        return int(self.model.config.chi_draws)

    @property
    def count(self) -> int:
        """Frames pushed to this replica's history."""
        return self.batch.rollout.counts[self.k]

    def push(self, rotations: torch.Tensor, translations: torch.Tensor) -> None:
        self.prefetched = None
        self.batch.rollout.push(rotations.float()[None], translations.float()[None], replicas=[self.k])

    def propose(self, dt_ps: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        if self.prefetched is not None and self.prefetched[0] == float(dt_ps):
            _, rot, trans, self.chi = self.prefetched
            self.prefetched = None
            return rot, trans
        with torch.no_grad():  # a retry (or a halved jump): this replica alone
            rot, trans = self.batch.rollout.sample(dt_ps, [generator], replicas=[self.k])
        chi = self.batch.rollout.last_chi
        self.chi = None if chi is None else chi[0]
        return rot[0], trans[0]

    def reset(self) -> None:
        self.prefetched = None
        self.batch.reset_replica(self.k)

    def set_temperature(self, temperature_k: float) -> None:
        from openmm_starmd.model.config import check_temperature

        check_temperature(self.model.config, temperature_k)
        self.batch.rollout.temperature_k = float(temperature_k)  # the same for every replica

    def state_dict(self) -> dict[str, Any]:
        prefix = f"r{self.k}."
        return {name[len(prefix):]: x for name, x in self.batch.rollout.state_dict().items()
                if name.startswith(prefix)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.prefetched = None
        full = {name: x for name, x in self.batch.rollout.state_dict().items() if not name.startswith(f"r{self.k}.")}
        full.update({f"r{self.k}.{name}": x for name, x in state.items()})
        self.batch.rollout.load_state_dict(full)


def _is_starmd(proposer: Any) -> bool:
    """Whether ``proposer`` (as given to :func:`resolve_proposer`) means a STAR-MD network."""
    if proposer is None or isinstance(proposer, torch.nn.Module):
        return True
    if isinstance(proposer, Proposer):
        return False
    factory = _factory(proposer) if isinstance(proposer, str) else None
    return factory is None or isinstance(factory, StarMDProposerFactory)


class StarMDEnsemble:
    """R independent hybrid simulations of one system, the STAR-MD model batched over them.

    Parameters
    ----------
    topology, system
        As for :class:`StarMDSimulation` (each replica gets its own copy of the System and a Context).
    proposer
        What :func:`~openmm_starmd.simulation.proposer.resolve_proposer` accepts except a Proposer
        instance. A STAR-MD model (``"default"``, ``"starmd"``, a checkpoint folder, a network) is batched;
        any other registered proposer runs one independent instance per replica.
    replicas
        R, at least 1. Replica k is seeded ``seed + k``.
    jump, relax, guards, platform, platformProperties, temperature, device
        As for :class:`StarMDSimulation` (the same for every replica).
    window, num_steps
        STAR-MD rollout options.
    """

    def __init__(self, topology: app.Topology, system: openmm.System, proposer: Any = "default", replicas: int = 2,
                 jump: u.Quantity | float = 1.0 * u.nanosecond, relax: RelaxSettings | u.Quantity | float | None = None,
                 guards: GuardSettings | None = None, platform: openmm.Platform | str | None = None,
                 platformProperties: dict | None = None, seed: int = 0,
                 temperature: u.Quantity | float = 300.0 * u.kelvin, device: str | torch.device | None = None,
                 window: int | None = None, num_steps: int | None = None) -> None:
        if int(replicas) < 1:
            raise StarMDError(f"replicas must be at least 1, got {replicas}")
        if isinstance(proposer, Proposer):
            raise StarMDError("an ensemble needs a model or proposer name, not a Proposer instance: give "
                              "'default', a checkpoint folder, a network or a registered name")
        self.replicas = int(replicas)
        self.batch: BatchedStarMD | None = None
        protein = SolventLayout(topology, system).protein_topology  # what the model sees of a solvated system
        if _is_starmd(proposer):
            single = resolve_proposer(proposer, protein, device=device, window=window, num_steps=num_steps)
            self.batch = BatchedStarMD(single.model, protein, self.replicas, window=window, num_steps=num_steps)
            proposers: list[Any] = self.batch.views
        else:
            proposers = [resolve_proposer(proposer, protein, device=device) for _ in range(self.replicas)]
        self.simulations = [
            StarMDSimulation(topology, system, proposers[k], jump=jump, relax=relax, guards=guards, platform=platform,
                             platformProperties=platformProperties, seed=seed + k, temperature=temperature)
            for k in range(self.replicas)]
        self.jump_ps = self.simulations[0].jump_ps
        self.failed: dict[int, str] = {}
        self.wall_s = 0.0

    @property
    def device(self) -> torch.device:
        return self.simulations[0].device

    def running(self, until: int | None = None) -> list[int]:
        """Replicas that have not failed (and, with ``until``, have done fewer than ``until`` cycles)."""
        return [k for k, sim in enumerate(self.simulations)
                if k not in self.failed and (until is None or sim.currentStep < until)]

    def step(self, cycles: int) -> None:
        """Run ``cycles`` cycles of every running replica (each through its own reporters)."""
        for _ in range(int(cycles)):
            self.run_until(None)

    def run_until(self, until: int | None) -> None:
        """One ensemble cycle of every running replica below ``until`` cycles (None: every running one).

        A replica whose jump fails the guards down to the smallest Δt is recorded in ``failed`` and left
        where its cycle began; the others go on. Raises :class:`JumpRejectedError` when none is left.
        """
        start = time.perf_counter()
        active = self.running(until)
        if self.batch is not None and active:
            for k in active:
                sim = self.simulations[k]
                if not sim.started:
                    state = sim.context.getState(positions=True)
                    sim._start(state.getPositions(asNumpy=True).value_in_unit(u.nanometer))
            self.batch.prefetch(self.jump_ps, [self.simulations[k].generator for k in active], active)
        for k in active:
            try:
                self.simulations[k].step(1)
            except JumpRejectedError as exc:
                self.failed[k] = str(exc)
        self.wall_s += time.perf_counter() - start
        if not self.running():
            raise JumpRejectedError(f"every replica failed: {self.failed[min(self.failed)]}")

    # ------------------------------------------------------------------------- checkpoints
    def saveCheckpoint(self, file: str | os.PathLike) -> None:
        """One file with every replica's exact state and the batched model history (written atomically)."""
        tensors: dict[str, torch.Tensor] = {}
        metas = []
        for k, sim in enumerate(self.simulations):
            parts, meta = blob.simulation_parts(sim, proposer=self.batch is None)
            tensors.update({f"R{k}.{name}": x for name, x in parts.items()})
            metas.append(meta)
        if self.batch is not None:
            rollout, _ = blob.split_state(self.batch.rollout.state_dict(), "rollout.")
            tensors.update(rollout)
        meta = {"replicas": self.replicas, "members": metas, "failed": {str(k): v for k, v in self.failed.items()},
                "wall_s": self.wall_s, "batch_model_s": self.batch.model_s if self.batch else 0.0}
        with atomic_write(file, "wb") as handle:
            handle.write(blob.pack(tensors, meta))

    def loadCheckpoint(self, file: str | os.PathLike) -> None:
        """Load a file written by :meth:`saveCheckpoint`; every replica then continues exactly."""
        tensors, meta = blob.unpack(blob.read_bytes(file))
        if int(meta.get("replicas", 0)) != self.replicas:
            raise StarMDError(f"checkpoint holds {meta.get('replicas')} replicas, this ensemble {self.replicas}: "
                              "resume with the same number of replicas")
        for k, sim in enumerate(self.simulations):
            parts = {name[len(f"R{k}."):]: x for name, x in tensors.items() if name.startswith(f"R{k}.")}
            blob.restore_simulation(sim, parts, meta["members"][k], proposer=self.batch is None)
        if self.batch is not None:
            self.batch.rollout.load_state_dict(blob.join_state(tensors, {}, "rollout."))
            self.batch.model_s = float(meta["batch_model_s"])
        self.failed = {int(k): v for k, v in meta["failed"].items()}
        self.wall_s = float(meta["wall_s"])

    # ---------------------------------------------------------------------------- summary
    def totals(self) -> CycleStats:
        """Every replica's counters summed; the batched draws' time added to the model's share."""
        total = CycleStats()
        for sim in self.simulations:
            total.add(sim.totals)
        total.model_s += self.batch.model_s if self.batch else 0.0
        total.wall_s = self.wall_s
        return total

    def speed(self) -> dict[str, float]:
        """Aggregate: simulated ns/day of all replicas together, cycles, and the model's/OpenMM's share."""
        return self.totals().speed(self.jump_ps)

    def validity(self) -> dict[str, float | int]:
        """Raw proposals of all replicas, their valid share, and the rejection rate."""
        return self.totals().validity()
