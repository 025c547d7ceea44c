"""StarMDSimulation: an ``openmm.app.Simulation`` whose step is a learned jump plus a short relaxation.

One cycle: the proposer (STAR-MD) proposes residue frames Δt ahead; every atom moves rigidly with its
residue (:mod:`.reconstruct`); the guards screen the proposal; OpenMM relaxes it (restrained
minimisation, then Langevin MD with ramped backbone restraints, :mod:`.relax`); the guards check the
result. A failed proposal is re-sampled, then Δt is halved (two guarded half jumps). The Context's
time then advances by the jump (``context.setTime``) and its step count by one.

To OpenMM's machinery one cycle *is* one step: ``simulation.integrator`` is a :class:`JumpIntegrator`
whose step size is the jump and whose ``step(n)`` runs n cycles, so the unchanged
``Simulation.step`` / ``runForClockTime`` loop schedules reporters (DCD, XTC, StateData,
Checkpoint, ...) exactly as for MD, and they record the simulated time. The MD integrator used for
relaxation is ``simulation.md_integrator`` (also ``context.getIntegrator()``).

A cycle is written as a generator (:meth:`StarMDSimulation._cycle_steps`) that asks for proposals
(yields Δt) and is sent them; a single simulation answers from its own proposer, a
:class:`~openmm_starmd.simulation.ensemble.StarMDEnsemble` answers many replicas with one batched draw.
"""

from __future__ import annotations

import copy
import os
import tempfile
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as u
import torch

from openmm_starmd.atomic import atomic_write
from openmm_starmd.errors import StarMDError
from openmm_starmd.forcefields import fastest_platform, make_integrator
from openmm_starmd.simulation import state as blob
from openmm_starmd.simulation.guards import OPENMM_ERROR, Guard, GuardSettings
from openmm_starmd.simulation.proposer import Proposer, resolve_proposer
from openmm_starmd.simulation.reconstruct import AtomMap, require_implicit_solvent
from openmm_starmd.simulation.relax import BackboneRestraints, RelaxSettings, relax
from openmm_starmd.simulation.sidechains import side_chains_for
from openmm_starmd.simulation.solvent import MergeReport, SolventLayout, box_of
from openmm_starmd.simulation.stats import CycleStats
from openmm_starmd.units import to_kelvin, to_ps

# What a cycle is sent for each Δt it asks for: rotations [N, 3, 3], translations [N, 3] nm, model seconds.
Proposal = tuple[torch.Tensor, torch.Tensor, float]
CycleSteps = Generator[float, Proposal, None]


class JumpRejectedError(StarMDError):
    """Every proposal of a cycle failed the guards, down to the smallest allowed Δt."""


class JumpIntegrator:
    """``Simulation.integrator`` of a :class:`StarMDSimulation`: step size = jump, one step = one cycle.

    Every other attribute is the MD integrator's.
    """

    def __init__(self, simulation: StarMDSimulation) -> None:
        self._simulation = simulation

    def getStepSize(self) -> u.Quantity:
        return self._simulation.jump_ps * u.picosecond

    def step(self, steps: int) -> None:
        for _ in range(int(steps)):
            self._simulation._cycle()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._simulation.md_integrator, name)


class StarMDSimulation(app.Simulation):
    """Hybrid simulation: learned jumps of ``jump`` each, relaxed by OpenMM.

    Parameters
    ----------
    topology
        All-atom protein topology, in implicit solvent or solvated (water, ions) in a periodic box: the
        model sees the protein only (:class:`~openmm_starmd.simulation.solvent.SolventLayout`).
    system
        Its System; a copy gets the restraint force, the caller's object is not changed. A barostat in it
        acts during the relaxation MD.
    proposer
        A :class:`~openmm_starmd.simulation.proposer.Proposer`, a loaded STAR-MD network, ``"default"``
        (the shipped model), a registered proposer name (``perturb``, entry points) or a STAR-MD
        checkpoint folder (:func:`~openmm_starmd.simulation.proposer.resolve_proposer`).
    jump
        Simulated time per cycle (Quantity or ps).
    relax
        :class:`RelaxSettings`, or just the MD segment length (Quantity or ps).
    guards
        :class:`GuardSettings` (retries, limits).
    integrator
        MD integrator for relaxation; default :func:`~openmm_starmd.forcefields.make_integrator` for the
        System (Langevin 1/ps at ``temperature``, 2 or 4 fs).
    platform
        OpenMM Platform or its name; default the fastest.
    platformProperties
        As for ``openmm.app.Simulation``.
    seed
        Seeds the proposer's and the relaxation's random numbers (and the default integrator).
    temperature
        Temperature of the default integrator and of the proposer (Quantity or K): a STAR-MD model
        conditions on it, or refuses one it was not trained for (``check_temperature``).
    prior_positions
        Positions (nm, [n_atoms, 3]) that condition the learned-prior force, needed only when
        ``relax.starmd_force_weight`` is not 0 (e.g. the start structure).
    device
        Where the model runs and draws its random numbers: ``cpu``, ``cuda``, ``cuda:k`` or ``auto``;
        None: where the proposer already is (checkpoints load to the CPU).
    """

    def __init__(
        self,
        topology: app.Topology,
        system: openmm.System,
        proposer: Proposer | torch.nn.Module | str | os.PathLike,
        jump: u.Quantity | float = 1.0 * u.nanosecond,
        relax: RelaxSettings | u.Quantity | float | None = None,
        guards: GuardSettings | None = None,
        integrator: openmm.Integrator | None = None,
        platform: openmm.Platform | str | None = None,
        platformProperties: dict | None = None,
        seed: int = 0,
        temperature: u.Quantity | float = 300.0 * u.kelvin,
        prior_positions: Any = None,
        device: str | torch.device | None = None,
    ) -> None:
        self.solvent = SolventLayout(topology, system)
        self.jump_ps = to_ps(jump)
        if not self.jump_ps > 0.0:
            raise StarMDError(f"jump must be positive, got {self.jump_ps} ps")
        if relax is None:
            relax = RelaxSettings()
        elif not isinstance(relax, RelaxSettings):
            relax = RelaxSettings(time_ps=to_ps(relax))
        self.relax_settings = relax
        self.guard_settings = guards if guards is not None else GuardSettings()
        protein = self.solvent.protein_topology
        self.atom_map = AtomMap(protein)
        self.guard = Guard(protein, self.atom_map.backbone, self.guard_settings)
        self.proposer = resolve_proposer(proposer, protein, device=device)
        self.proposer.set_temperature(to_kelvin(temperature))
        self.side_chains = side_chains_for(protein, self.proposer)  # None: side chains move rigidly
        system = copy.deepcopy(system)
        self.restraints = BackboneRestraints(self.solvent.protein_atoms[self.atom_map.restrained_atoms])
        restraint_group = self.restraints.add_to(system)
        self._physical_groups = {g for g in range(32) if g != restraint_group}
        if relax.starmd_force_weight:
            self._add_learned_prior(system, topology, prior_positions, restraint_group)
        if integrator is None:
            integrator = make_integrator(system, to_kelvin(temperature), 1.0, seed)
        if not hasattr(integrator, "getTemperature") and relax.temperature_k is None and relax.time_ps > 0:
            raise StarMDError("the integrator has no temperature: use a Langevin integrator or set "
                              "RelaxSettings(temperature_k=...)")
        if isinstance(platform, str) or platform is None:
            platform = fastest_platform(platform)
        super().__init__(topology, system, integrator, platform, platformProperties)
        self.md_integrator = self.integrator
        self.integrator = JumpIntegrator(self)
        self.seed = int(seed)
        # On the proposer's device: samplers draw there with it (a CUDA model needs a CUDA generator).
        self.generator = torch.Generator(device=self.proposer.device).manual_seed(self.seed)
        self.totals = CycleStats()
        self.solvent_stats = MergeReport()  # solvent molecules found inside the moved protein, and moved
        self.last_cycle: CycleStats | None = None
        self.started = False
        self._cycle_start_ps = 0.0

    # ------------------------------------------------------------------------------ counters
    @property
    def rejections(self) -> dict[str, int]:
        """Rejected proposals so far, by reason."""
        return self.totals.rejections

    @property
    def halvings(self) -> int:
        return self.totals.halvings

    @property
    def cycles(self) -> int:
        return self.totals.cycles

    @property
    def device(self) -> torch.device:
        """Where the model runs."""
        return self.proposer.device

    # ------------------------------------------------------------------------------- running
    def run(self, time: u.Quantity | float) -> None:
        """Advance by ``time`` (Quantity or ps), a whole number of jumps."""
        cycles = to_ps(time) / self.jump_ps
        if cycles < 0 or abs(cycles - round(cycles)) > 1e-6:
            raise StarMDError(f"run time {to_ps(time)} ps is not a whole number of {self.jump_ps} ps jumps: "
                              "give a multiple of the jump")
        self.step(round(cycles))

    def _add_learned_prior(self, system: openmm.System, topology: app.Topology, prior_positions: Any,
                           group: int) -> None:
        """Add the model's score as a StarMDForce (λ = 0 until the relaxation MD switches it on).

        It shares the restraint force group, so reported physical energies leave it out.
        """
        from openmm_starmd.forces import add_starmd_force

        require_implicit_solvent(topology, system)
        model = getattr(self.proposer, "model", None)
        if model is None:
            raise StarMDError("relax.starmd_force_weight needs a STAR-MD proposer: set it to 0 for other proposers")
        if prior_positions is None:
            raise StarMDError("relax.starmd_force_weight needs prior_positions= (e.g. the start structure)")
        # The TorchForce reads its module from a file; keep the folder for the simulation's lifetime.
        self._prior_dir = tempfile.TemporaryDirectory(prefix="starmd_force_")
        add_starmd_force(system, topology, model, prior_positions, Path(self._prior_dir.name) / "starmd_force.pt",
                         weight=0.0, dt_ps=self.jump_ps, force_group=group)

    def reset_history(self) -> None:
        """Restart the proposer's history from the current structure at the next cycle."""
        self.started = False

    def _start(self, positions: np.ndarray) -> None:
        protein = self.solvent.protein(positions)
        self.guard.set_reference(protein)
        rot, trans = self.atom_map.frames(protein)
        self.proposer.reset()
        self.proposer.push(rot.float(), trans.float())
        self.started = True

    def _cycle(self) -> None:
        """One cycle, its proposals drawn from this simulation's own proposer."""
        self.drive(self._cycle_steps(), lambda dt_ps: self.proposer.propose(dt_ps, self.generator))

    @staticmethod
    def drive(steps: CycleSteps, propose: Any) -> None:
        """Run cycle ``steps`` to the end, answering each Δt it asks for with ``propose(dt_ps)``."""
        request = next(steps)
        while True:
            start = time.perf_counter()
            try:
                rot, trans = propose(request)
            except BaseException as exc:
                steps.throw(exc)  # the cycle restores its start state and re-raises
                raise
            try:
                request = steps.send((rot, trans, time.perf_counter() - start))
            except StopIteration:
                return

    def _cycle_steps(self) -> CycleSteps:
        """One cycle as a generator: yields each Δt (ps) it needs a proposal for, is sent a :data:`Proposal`."""
        start = time.perf_counter()
        state0 = self.context.getState(positions=True, velocities=True, parameters=True)
        step0 = self.context.getStepCount()
        time0_ps = state0.getTime().value_in_unit(u.picosecond)
        self._cycle_start_ps = time0_ps
        positions = state0.getPositions(asNumpy=True).value_in_unit(u.nanometer)
        if not self.started:
            self._start(positions)
        stats = CycleStats()
        try:
            yield from self._advance(positions, self.jump_ps, 0, stats)
        except BaseException:
            # Leave the simulation where the cycle began. An accepted half jump was already pushed to
            # the proposer; its history then no longer ends at this structure, so it restarts here.
            self.context.setState(state0)
            self.context.setStepCount(step0)
            if stats.halvings:
                self.reset_history()
            self.totals.add(stats)
            raise
        self.context.setTime(time0_ps + self.jump_ps)
        self.context.setStepCount(step0 + 1)
        stats.wall_s = time.perf_counter() - start
        stats.cycles = 1
        self.totals.add(stats)
        self.last_cycle = stats

    def _advance(self, positions: np.ndarray, dt_ps: float, depth: int, stats: CycleStats) -> CycleSteps:
        """Move ``positions`` ``[n_atoms, 3]`` nm on by ``dt_ps``; returns the accepted relaxed positions."""
        protein = self.solvent.protein(positions)
        old = self.atom_map.frames(protein)
        # The box of the accepted structure (a barostat changes it): every retry relaxes in it.
        box = box_of(self.context.getState()) if self.solvent.periodic else None
        N = self.atom_map.num_residues
        for _ in range(1 + self.guard_settings.max_resamples):
            rot, trans, model_s = yield dt_ps
            stats.model_s += model_s
            stats.proposals += 1
            if tuple(rot.shape) != (N, 3, 3) or tuple(trans.shape) != (N, 3):
                raise StarMDError(f"proposer {type(self.proposer).__name__} returned frames of shape "
                                  f"{tuple(rot.shape)}, {tuple(trans.shape)}; expected ({N}, 3, 3), ({N}, 3)")
            reason = self.guard.check_proposal(rot, trans)
            if reason is None:
                # Atoms live on the CPU (numpy, OpenMM); only the model's frames come from its device.
                target = self.atom_map.move_atoms(protein, old, (rot.cpu(), trans.cpu()))
                if self.side_chains is not None:  # χ drawn with the proposal
                    target = self.side_chains.place(target, self.proposer.proposal_chi(),
                                                    draws=self.proposer.chi_draws)
                failure = self.guard.raw_failure(target)
                stats.raw_valid += failure is None
                reason = self.guard.check_target(target)
            else:
                failure = reason
            if failure is not None:
                stats.raw_failures[failure] += 1
            if reason is None:
                start = time.perf_counter()
                settings = self.relax_settings
                target, merged = self.solvent.merge(positions, target, box, settings.solvent_overlap_nm,
                                                    settings.solvent_relocate)
                self.solvent_stats.add(merged)
                relaxed, energy, reason = self._relax(target, box, stats)
                stats.openmm_s += time.perf_counter() - start
            if reason is None:
                relaxed_protein = self.solvent.protein(relaxed)
                reason = self.guard.check_relaxed(relaxed_protein, energy)
            if reason is None and self.solvent.solvated:
                box_now = box_of(self.context.getState())
                reason = self.guard.check_solvent(self.solvent.solvent_distances(relaxed, box_now))
            if reason is None:
                rot_new, trans_new = self.atom_map.frames(relaxed_protein)
                start = time.perf_counter()
                self.proposer.push(rot_new.float(), trans_new.float())
                stats.model_s += time.perf_counter() - start
                return relaxed
            stats.rejections[reason] += 1
        if depth >= self.guard_settings.max_halvings:
            raise JumpRejectedError(
                f"every proposal of the jump at t = {self._cycle_start_ps:g} ps failed the guards down to "
                f"dt = {dt_ps:g} ps ({stats.rejections}): use a shorter jump or a better model")
        stats.halvings += 1
        half = yield from self._advance(positions, dt_ps / 2, depth + 1, stats)
        return (yield from self._advance(half, dt_ps / 2, depth + 1, stats))

    def _relax(
        self, target: np.ndarray, box: np.ndarray | None, stats: CycleStats
    ) -> tuple[np.ndarray, float, str | None]:
        seed = int(torch.randint(1, 2**31 - 1, (1,), generator=self.generator, device=self.generator.device))
        # Solvated: the MD segment's friction becomes RelaxSettings.solvent_friction_per_ps (Langevin only).
        settings = self.relax_settings.for_system(self.solvent.solvated and hasattr(self.md_integrator, "setFriction"))
        while True:
            try:
                if box is not None:
                    self.context.setPeriodicBoxVectors(*box)
                relax(self.context, self.restraints, settings, target, seed)
                state = self.context.getState(positions=True, energy=True, groups=self._physical_groups)
                break
            except openmm.OpenMMException:
                settings = settings.retry()
                if settings is None:
                    return target, float("nan"), OPENMM_ERROR
                stats.relax_retries += 1
        energy = state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
        return state.getPositions(asNumpy=True).value_in_unit(u.nanometer), energy, None

    # ------------------------------------------------------------------------- checkpoints
    def saveCheckpoint(self, file: str | os.PathLike | Any) -> None:
        """Save the exact state: OpenMM checkpoint, proposer history, random-number state, counters.

        ``file`` is a path (written atomically) or a binary file object.
        """
        data = blob.pack(*blob.simulation_parts(self))
        if isinstance(file, (str, os.PathLike)):
            with atomic_write(file, "wb") as handle:
                handle.write(data)
        else:
            file.write(data)

    def loadCheckpoint(self, file: str | os.PathLike | Any) -> None:
        """Load a file written by :meth:`saveCheckpoint`; the run then continues exactly."""
        blob.restore_simulation(self, *blob.unpack(blob.read_bytes(file)))

    def loadState(self, file: str | Any) -> None:
        """Load an OpenMM State (portable, no proposer history): the history restarts from it."""
        super().loadState(file)
        self.reset_history()

    # ------------------------------------------------------------------------------ speed
    def speed(self) -> dict[str, float]:
        """Totals so far: cycles, simulated ns/day, and the share of wall time in the model and OpenMM."""
        return self.totals.speed(self.jump_ps)

    def validity(self) -> dict[str, float | int]:
        """Raw proposals so far, the share valid before guards and relaxation, and the rejection rate."""
        return self.totals.validity()
