"""Relaxation after a jump: restrained minimisation, then Langevin MD while the restraints ramp off.

The restraints are one ``CustomExternalForce`` on the backbone heavy atoms (N, CA, C, O), added to
the System once: each jump moves its per-particle targets (``setParticleParameters`` +
``updateParametersInContext``) and its strength is the global parameter :data:`RESTRAINT_K`
(``context.setParameter``), so no Context is ever rebuilt. At the end of a relaxation the strength is
0, so reported energies are those of the force field alone.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace

import numpy as np
import openmm
import openmm.unit as u

from openmm_starmd.errors import StarMDError
from openmm_starmd.forces import starmd_force_on

RESTRAINT_K = "starmd_restraint_k"
VELOCITY_CHOICES = ("fresh", "kept")


@dataclass(frozen=True)
class RelaxSettings:
    """How each jump is relaxed.

    Attributes
    ----------
    time_ps
        Length of the MD segment, ps (0 skips MD: minimisation only). With the default ramp the last
        quarter is unrestrained.
    restraint_k
        Initial restraint constant on backbone heavy atoms, kJ/mol/nm².
    ramp_stages
        The segment is cut into this many equal stages; the constant steps linearly from
        ``restraint_k`` down to 0, the last stage being unrestrained (1: restrained throughout).
    minimize_iterations
        Cap on L-BFGS iterations of the restrained minimisation (0: until converged).
    minimize_tolerance
        Minimiser convergence, RMS force in kJ/mol/nm.
    temperature_k
        Temperature of the fresh velocities drawn after minimisation, K; ``None`` takes the
        integrator's temperature.
    starmd_force_weight
        λ of a learned :class:`~openmm_starmd.forces.StarMDForce` during the MD segment (never during
        minimisation: it reports no energy). 0, the default, leaves it out of the System entirely.
    clash_iterations
        Cap on capped-step steepest-descent iterations before the minimiser (:func:`relieve_clashes`);
        0 skips that stage.
    clash_force
        The steepest descent stops once no atom feels more than this, kJ/mol/nm.
    clash_step_nm
        Largest move of any atom per steepest-descent step, nm.
    velocities
        ``"fresh"``: Maxwell–Boltzmann velocities at ``temperature_k`` after minimisation; ``"kept"``:
        the Context's velocities from the end of the previous relaxation.
    friction_per_ps
        Friction of a Langevin integrator during the MD segment, 1/ps (restored afterwards); ``None``
        keeps the integrator's.
    solvent_overlap_nm
        Solvated systems: a water (or ion) whose heavy atom is closer than this (minimum image) to a
        protein heavy atom of the mapped target is inside the moved protein
        (:meth:`~openmm_starmd.simulation.solvent.SolventLayout.merge`).
    solvent_relocate
        Move such molecules, whole, into the space the protein left before relaxing (else the clash relief
        alone pushes them out).
    solvent_friction_per_ps
        Solvated systems: the friction of the MD segment when ``friction_per_ps`` is None, 1/ps (None: the
        integrator's). The minimisation takes the water's thermal potential energy away; the bath must
        give it back within the segment (:meth:`for_system`).
    retry_minimize_iterations
        When OpenMM fails during a relaxation (the MD segment blew up from forces the short minimisation
        left), relax the same target once more with this many L-BFGS iterations (:meth:`retry`) before the
        proposal is rejected; 0: no second attempt.
    """

    time_ps: float = 3.0
    restraint_k: float = 2000.0
    ramp_stages: int = 4
    minimize_iterations: int = 50
    minimize_tolerance: float = 10.0
    temperature_k: float | None = None
    starmd_force_weight: float = 0.0
    clash_iterations: int = 200
    clash_force: float = 2.0e4
    clash_step_nm: float = 0.01
    velocities: str = "fresh"
    friction_per_ps: float | None = None
    solvent_overlap_nm: float = 0.22
    solvent_relocate: bool = True
    solvent_friction_per_ps: float | None = 10.0
    retry_minimize_iterations: int = 500

    def __post_init__(self) -> None:
        if not self.time_ps >= 0.0:
            raise StarMDError(f"relax time must be >= 0 ps, got {self.time_ps}")
        if not self.restraint_k >= 0.0:
            raise StarMDError(f"restraint constant must be >= 0 kJ/mol/nm^2, got {self.restraint_k}")
        if self.ramp_stages < 1:
            raise StarMDError(f"ramp_stages must be at least 1, got {self.ramp_stages}")
        if self.minimize_iterations < 0:
            raise StarMDError(f"minimize_iterations must be >= 0, got {self.minimize_iterations}")
        if self.retry_minimize_iterations < 0:
            raise StarMDError(f"retry_minimize_iterations must be >= 0, got {self.retry_minimize_iterations}")
        if self.clash_iterations < 0:
            raise StarMDError(f"clash_iterations must be >= 0, got {self.clash_iterations}")
        if not (self.clash_force > 0.0 and self.clash_step_nm > 0.0):
            raise StarMDError("clash_force and clash_step_nm must be > 0")
        if self.velocities not in VELOCITY_CHOICES:
            raise StarMDError(f"velocities must be one of {', '.join(VELOCITY_CHOICES)}, got {self.velocities!r}")
        if self.friction_per_ps is not None and not self.friction_per_ps > 0.0:
            raise StarMDError(f"friction_per_ps must be > 0 (or None), got {self.friction_per_ps}")
        if self.solvent_friction_per_ps is not None and not self.solvent_friction_per_ps > 0.0:
            raise StarMDError(f"solvent_friction_per_ps must be > 0 (or None), got {self.solvent_friction_per_ps}")
        if not self.solvent_overlap_nm >= 0.0:
            raise StarMDError(f"solvent_overlap_nm must be >= 0 nm, got {self.solvent_overlap_nm}")

    def describe(self) -> dict:
        """The settings as a JSON-ready dict."""
        return asdict(self)

    def for_system(self, solvated: bool) -> RelaxSettings:
        """The settings a relaxation of this system runs with: for a solvated one the MD segment's friction
        is ``solvent_friction_per_ps`` unless ``friction_per_ps`` is set."""
        if solvated and self.friction_per_ps is None and self.solvent_friction_per_ps is not None:
            return replace(self, friction_per_ps=self.solvent_friction_per_ps)
        return self

    def retry(self) -> RelaxSettings | None:
        """The settings of the second attempt at a relaxation OpenMM failed (None: no second attempt)."""
        if self.retry_minimize_iterations == 0:
            return None
        return replace(self, minimize_iterations=self.retry_minimize_iterations, retry_minimize_iterations=0)

    def stage_strengths(self) -> list[float]:
        """Restraint constant of each stage, kJ/mol/nm²."""
        if self.ramp_stages == 1:
            return [self.restraint_k]
        last = self.ramp_stages - 1
        return [self.restraint_k * (last - s) / last for s in range(self.ramp_stages)]


class BackboneRestraints:
    """Harmonic position restraints ``0.5 k |x - x0|²`` on chosen atoms, with movable targets.

    Parameters
    ----------
    atom_indices
        Restrained atoms (backbone heavy atoms), ``[M]``.
    """

    def __init__(self, atom_indices: np.ndarray) -> None:
        self.atom_indices = np.asarray(atom_indices, dtype=np.int64)
        self.force = openmm.CustomExternalForce(f"0.5*{RESTRAINT_K}*((x-x0)^2+(y-y0)^2+(z-z0)^2)")
        self.force.addGlobalParameter(RESTRAINT_K, 0.0)
        for name in ("x0", "y0", "z0"):
            self.force.addPerParticleParameter(name)
        for atom in self.atom_indices:
            self.force.addParticle(int(atom), [0.0, 0.0, 0.0])
        self.force_group = -1

    def add_to(self, system: openmm.System) -> int:
        """Add the force to ``system`` in a force group of its own; returns that group.

        In a periodic System the distance to the target is the minimum image (``periodicdistance``):
        platforms may hand a CustomExternalForce wrapped positions, and a barostat moves molecules.
        """
        if system.usesPeriodicBoundaryConditions():
            self.force.setEnergyFunction(f"0.5*{RESTRAINT_K}*periodicdistance(x, y, z, x0, y0, z0)^2")
        used = {system.getForce(i).getForceGroup() for i in range(system.getNumForces())}
        free = [g for g in range(31, -1, -1) if g not in used]
        if not free:
            raise StarMDError("all 32 force groups of the System are in use: free one for the restraints")
        self.force_group = free[0]
        self.force.setForceGroup(self.force_group)
        system.addForce(self.force)
        return self.force_group

    def set_targets(self, context: openmm.Context, positions: np.ndarray) -> None:
        """Move the targets to ``positions[atom_indices]``; ``positions`` ``[n_atoms, 3]`` nm."""
        for k, atom in enumerate(self.atom_indices):
            x, y, z = (float(v) for v in positions[atom])
            self.force.setParticleParameters(k, int(atom), [x, y, z])
        self.force.updateParametersInContext(context)

    @staticmethod
    def set_strength(context: openmm.Context, k: float) -> None:
        """Restraint constant, kJ/mol/nm²."""
        context.setParameter(RESTRAINT_K, float(k))


@dataclass
class RelaxTiming:
    """Wall time of one relaxation, s, and the MD steps taken."""

    minimize_s: float = 0.0
    md_s: float = 0.0
    steps: int = 0
    clash_iterations: int = 200


def stage_steps(total: int, stages: int) -> list[int]:
    """Split ``total`` MD steps into ``stages`` near-equal parts (earlier parts get the remainder)."""
    base, extra = divmod(total, stages)
    return [base + (1 if s < extra else 0) for s in range(stages)]


def _energy_forces(context: openmm.Context) -> tuple[float, np.ndarray]:
    state = context.getState(energy=True, forces=True)
    energy = state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
    forces = state.getForces(asNumpy=True).value_in_unit(u.kilojoule_per_mole / u.nanometer)
    return float(energy), np.asarray(forces)


def relieve_clashes(context: openmm.Context, positions: np.ndarray, max_iterations: int, max_force: float,
                    step_nm: float) -> tuple[np.ndarray, int]:
    """Steepest descent whose largest atomic move is capped, until no atom feels more than ``max_force``.

    Overlapping atoms of a rigidly mapped target have energies of 1e8–1e17 kJ/mol; L-BFGS from there
    stalls or leaves forces that make the first MD steps explode. A capped step always moves the worst
    atoms apart by at most ``step_nm`` (grown ×1.2 after a downhill step, cut ×0.2 after an uphill one).

    Parameters
    ----------
    context
        Its current energy terms (restraints included) are what is descended.
    positions
        Start ``[n_atoms, 3]``, nm.
    max_iterations
        Cap on force evaluations.
    max_force
        Stop once the largest per-atom force is below this, kJ/mol/nm.
    step_nm
        Initial and largest displacement of the atom with the largest force, nm.

    Returns
    -------
    positions, iterations
        Lowest-energy positions found ``[n_atoms, 3]`` nm (also left in the context) and the number of
        force evaluations spent.
    """
    x = np.asarray(positions, dtype=np.float64)
    context.setPositions(x)
    energy, forces = _energy_forces(context)
    step = step_nm
    iterations = 0
    while iterations < max_iterations:
        norms = np.linalg.norm(np.nan_to_num(forces, nan=0.0, posinf=0.0, neginf=0.0), axis=1)
        largest = float(norms.max())
        if largest < max_force and np.isfinite(energy):
            break
        if largest == 0.0:
            break
        trial = x + np.nan_to_num(forces, nan=0.0, posinf=0.0, neginf=0.0) * (step / largest)
        context.setPositions(trial)
        trial_energy, trial_forces = _energy_forces(context)
        iterations += 1
        if np.isfinite(trial_energy) and (trial_energy < energy or not np.isfinite(energy)):
            x, energy, forces = trial, trial_energy, trial_forces
            step = min(step * 1.2, step_nm)
        else:
            step *= 0.2
            if step < 1e-6:
                break
    context.setPositions(x)
    return x, iterations


def relax(
    context: openmm.Context,
    restraints: BackboneRestraints,
    settings: RelaxSettings,
    positions: np.ndarray,
    velocity_seed: int,
) -> RelaxTiming:
    """Relax ``positions`` in ``context``: restrained minimisation, then MD with ramped restraints.

    Parameters
    ----------
    context
        Context of a System that holds ``restraints``.
    restraints
        Their targets are set to ``positions`` (the mapped jump target).
    settings
        Segment length, restraint constant and ramp.
    positions
        Starting all-atom positions ``[n_atoms, 3]``, nm (finite).
    velocity_seed
        Seed of the Maxwell–Boltzmann velocities drawn after minimisation (the old velocities belong
        to the structure before the jump).

    Returns
    -------
    RelaxTiming
        Where the time went. The context holds the relaxed state, restraint constant 0.
    """
    timing = RelaxTiming()
    integrator = context.getIntegrator()
    start = time.perf_counter()
    restraints.set_targets(context, positions)
    context.setPositions(positions)
    restraints.set_strength(context, settings.restraint_k)
    if settings.clash_iterations:
        _, timing.clash_iterations = relieve_clashes(context, positions, settings.clash_iterations,
                                                     settings.clash_force, settings.clash_step_nm)
    openmm.LocalEnergyMinimizer.minimize(context, settings.minimize_tolerance, settings.minimize_iterations)
    timing.minimize_s = time.perf_counter() - start

    start = time.perf_counter()
    step_ps = integrator.getStepSize().value_in_unit(u.picosecond)
    total = round(settings.time_ps / step_ps)
    if total > 0:
        if settings.velocities == "fresh":
            temperature = settings.temperature_k
            if temperature is None:
                temperature = integrator.getTemperature().value_in_unit(u.kelvin)
            context.setVelocitiesToTemperature(temperature * u.kelvin, int(velocity_seed))
        stages = min(settings.ramp_stages, total)
        strengths = RelaxSettings(**{**asdict(settings), "ramp_stages": stages}).stage_strengths()
        friction = None
        if settings.friction_per_ps is not None:
            if not hasattr(integrator, "setFriction"):
                raise StarMDError("RelaxSettings.friction_per_ps needs a Langevin integrator: set it to None")
            friction = integrator.getFriction()
            integrator.setFriction(settings.friction_per_ps / u.picosecond)
        try:
            with starmd_force_on(context, settings.starmd_force_weight):
                for k, n in zip(strengths, stage_steps(total, stages), strict=True):
                    restraints.set_strength(context, k)
                    integrator.step(n)
        finally:
            if friction is not None:
                integrator.setFriction(friction)
    restraints.set_strength(context, 0.0)
    timing.md_s = time.perf_counter() - start
    timing.steps = total
    return timing
