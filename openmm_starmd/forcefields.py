"""Force-field presets and the one function that turns a prepared topology into an OpenMM System.

A preset is data (a frozen dataclass in :data:`PRESETS`), not a branch in code: adding one is adding
an entry. Every number that decides the physics is recorded by :meth:`ForceFieldPreset.describe`,
so reference MD and hybrid runs write it into their JSON.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

import openmm
import openmm.app as app
import openmm.unit as u

from openmm_starmd.errors import StarMDError


@dataclass(frozen=True)
class ForceFieldPreset:
    """Everything needed to build an OpenMM ``System`` and its integrator for one kind of simulation.

    Attributes
    ----------
    name
        Preset name used on the command line.
    files
        OpenMM force-field XML files, in order.
    nonbonded_method
        Name of an ``openmm.app`` nonbonded method (``NoCutoff``, ``PME``, ...).
    nonbonded_cutoff_nm
        Cutoff in nm (ignored by ``NoCutoff``).
    constraints
        Name of an ``openmm.app`` constraint set (``HBonds``, ``AllBonds``, or ``None``).
    hydrogen_mass_amu
        Hydrogen mass repartitioning target in amu; ``None`` keeps natural masses.
    timestep_ps
        Integrator time step in ps that this preset is stable with.
    solvent
        ``"implicit"`` or ``"explicit"``; explicit presets add TIP3P water in a periodic box.
    padding_nm
        Water padding around the protein, explicit presets only.
    """

    name: str
    files: tuple[str, ...]
    nonbonded_method: str
    nonbonded_cutoff_nm: float
    constraints: str | None
    hydrogen_mass_amu: float | None
    timestep_ps: float
    solvent: str
    padding_nm: float = 1.0

    def describe(self) -> dict:
        """The preset as a JSON-ready dict."""
        data = asdict(self)
        data["files"] = list(self.files)
        return data


PRESETS: dict[str, ForceFieldPreset] = {
    preset.name: preset
    for preset in (
        ForceFieldPreset(
            name="implicit",
            files=("amber14-all.xml", "implicit/gbn2.xml"),
            nonbonded_method="NoCutoff",
            nonbonded_cutoff_nm=1.0,
            constraints="HBonds",
            hydrogen_mass_amu=None,
            timestep_ps=0.002,
            solvent="implicit",
        ),
        # What ../shared/data/md was made with: OBC implicit solvent, heavy hydrogens and a 4 fs step.
        ForceFieldPreset(
            name="implicit-fast",
            files=("amber99sbildn.xml", "amber99_obc.xml"),
            nonbonded_method="NoCutoff",
            nonbonded_cutoff_nm=1.0,
            constraints="HBonds",
            hydrogen_mass_amu=1.5,
            timestep_ps=0.004,
            solvent="implicit",
        ),
        ForceFieldPreset(
            name="explicit",
            files=("amber14-all.xml", "amber14/tip3p.xml"),
            nonbonded_method="PME",
            nonbonded_cutoff_nm=1.0,
            constraints="HBonds",
            hydrogen_mass_amu=None,
            timestep_ps=0.002,
            solvent="explicit",
            padding_nm=1.0,
        ),
    )
}
DEFAULT_PRESET = "implicit"


def get_preset(name: str) -> ForceFieldPreset:
    """Look up a preset by name, with a one-line error listing the choices."""
    if name not in PRESETS:
        raise StarMDError(f"unknown force-field preset {name!r}: choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def build_system(
    topology: app.Topology,
    positions: u.Quantity,
    preset: str | ForceFieldPreset = DEFAULT_PRESET,
) -> tuple[openmm.System, app.Topology, u.Quantity]:
    """Build an OpenMM ``System`` for a prepared protein with a named force-field preset.

    Parameters
    ----------
    topology
        Prepared all-atom topology (hydrogens present), e.g. from :func:`openmm_starmd.prep.prepare`.
    positions
        Positions, shape [n_atoms, 3], nm.
    preset
        Preset name (see :data:`PRESETS`) or a :class:`ForceFieldPreset`.

    Returns
    -------
    system, topology, positions
        Explicit presets add water and ions (:func:`solvate`) unless the topology already holds water
        in a periodic box, so the returned topology and positions may differ from the input; implicit
        presets return them unchanged.
    """
    from openmm_starmd.data.featurize import has_water

    preset = get_preset(preset) if isinstance(preset, str) else preset
    forcefield = app.ForceField(*preset.files)
    solvated = has_water(topology)
    if preset.solvent == "explicit" and not solvated:
        topology, positions = solvate(topology, positions, preset, forcefield)
    elif solvated and preset.solvent != "explicit":
        raise StarMDError(f"the structure holds water but force field {preset.name!r} is implicit solvent: use "
                          "--forcefield explicit, or remove the water (starmd prepare does)")
    elif solvated and topology.getPeriodicBoxVectors() is None:
        raise StarMDError("the solvated structure has no periodic box (no CRYST1 record): give one, or give the "
                          "protein alone and let --forcefield explicit add the water box")
    kwargs = {
        "nonbondedMethod": getattr(app, preset.nonbonded_method),
        "constraints": getattr(app, preset.constraints) if preset.constraints else None,
    }
    if preset.nonbonded_method != "NoCutoff":
        kwargs["nonbondedCutoff"] = preset.nonbonded_cutoff_nm * u.nanometer
    if preset.hydrogen_mass_amu is not None:
        kwargs["hydrogenMass"] = preset.hydrogen_mass_amu * u.amu
    try:
        system = forcefield.createSystem(topology, **kwargs)
    except ValueError as exc:
        # OpenMM's message names the residue it could not template; keep it, on one line.
        first = str(exc).strip().splitlines()[0]
        raise StarMDError(f"force field {preset.name!r} cannot build this structure: {first} "
                          "(run `starmd prepare` on it first)") from None
    return system, topology, positions


def solvate(
    topology: app.Topology,
    positions: u.Quantity,
    preset: str | ForceFieldPreset = "explicit",
    forcefield: app.ForceField | None = None,
) -> tuple[app.Topology, u.Quantity]:
    """The protein in a box of the preset's water (TIP3P), ``padding_nm`` from the box faces, neutralised
    with Na+/Cl- (OpenMM's Modeller.addSolvent); returns the solvated topology (with its box) and positions.

    The same input always gives the same box: Modeller picks the waters it turns into ions with Python's
    global ``random``, which is seeded here (0) and then restored.
    """
    preset = get_preset(preset) if isinstance(preset, str) else preset
    if preset.solvent != "explicit":
        raise StarMDError(f"force field {preset.name!r} is implicit solvent: solvate with an explicit preset")
    modeller = app.Modeller(topology, positions)
    saved = random.getstate()
    random.seed(0)
    try:
        modeller.addSolvent(forcefield or app.ForceField(*preset.files), model="tip3p",
                            padding=preset.padding_nm * u.nanometer)
    finally:
        random.setstate(saved)
    return modeller.topology, modeller.positions


def stable_timestep_ps(system: openmm.System) -> float:
    """Largest safe Langevin step for a System built elsewhere, ps.

    4 fs when bonds to hydrogen are constrained and hydrogens weigh at least 1.4 amu (mass
    repartitioning), 2 fs when constrained only, 1 fs otherwise. Hydrogens are the particles lighter
    than 4 amu (massless virtual sites aside): a repartitioned heavy atom stays far above that.
    """
    masses = [system.getParticleMass(i).value_in_unit(u.dalton) for i in range(system.getNumParticles())]
    hydrogens = [m for m in masses if 0.0 < m < 4.0]
    if system.getNumConstraints() == 0:
        return 0.001
    return 0.004 if hydrogens and min(hydrogens) >= 1.4 else 0.002


def openmm_seed(seed: int) -> int:
    """``seed`` as an OpenMM random-number seed: OpenMM reads 0 as "pick one at random", so 0 (and any multiple of
    2**31) becomes 2**31 − 1 and a run seeded 0 reproduces like any other."""
    value = int(seed) % 2**31
    return value if value else 2**31 - 1


def make_integrator(
    preset: str | ForceFieldPreset | openmm.System,
    temperature_k: float = 300.0,
    friction_per_ps: float = 1.0,
    seed: int | None = None,
) -> openmm.LangevinMiddleIntegrator:
    """The one integrator factory: a ``LangevinMiddleIntegrator`` with a step the System is stable with.

    Parameters
    ----------
    preset
        A preset (name or object): its time step; or an ``openmm.System`` built elsewhere: the step of
        :func:`stable_timestep_ps`.
    temperature_k
        Bath temperature, K.
    friction_per_ps
        Friction coefficient, 1/ps.
    seed
        Random seed of the integrator (:func:`openmm_seed`); ``None`` lets OpenMM choose.
    """
    if not temperature_k > 0.0:
        raise StarMDError(f"temperature must be positive, got {temperature_k} K")
    if not friction_per_ps >= 0.0:
        raise StarMDError(f"friction must not be negative, got {friction_per_ps} /ps")
    if isinstance(preset, openmm.System):
        step_ps = stable_timestep_ps(preset)
    else:
        step_ps = (get_preset(preset) if isinstance(preset, str) else preset).timestep_ps
    integrator = openmm.LangevinMiddleIntegrator(
        temperature_k * u.kelvin, friction_per_ps / u.picosecond, step_ps * u.picosecond
    )
    if seed is not None:
        integrator.setRandomNumberSeed(openmm_seed(seed))
    return integrator


def fastest_platform(name: str | None = None) -> openmm.Platform:
    """The named OpenMM platform, or the fastest one available (CUDA > OpenCL > CPU > Reference)."""
    names = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
    if name is not None:
        if name not in names:
            raise StarMDError(f"OpenMM platform {name!r} is not available here: choose one of {', '.join(names)}")
        return openmm.Platform.getPlatformByName(name)
    return max(
        (openmm.Platform.getPlatform(i) for i in range(openmm.Platform.getNumPlatforms())),
        key=lambda platform: platform.getSpeed(),
    )
