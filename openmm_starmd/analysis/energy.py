"""Potential energies of saved frames under a force-field preset, and a comparison of two samples.

A hybrid run and reference MD are judged on the same footing: the frames both wrote (XTC rounding on
both sides) are re-evaluated with one force field, and the two energy samples are compared (mean, sd,
KS test). Only implicit-solvent presets are accepted: the System has no periodic box, so whatever box a
trajectory file carries (an XTC always stores one) is never used.
"""

from __future__ import annotations

import math
import os

import mdtraj as md
import numpy as np
import openmm
import openmm.app as app
import openmm.unit as u
from scipy import stats

from openmm_starmd.errors import StarMDError
from openmm_starmd.forcefields import ForceFieldPreset, build_system, fastest_platform, get_preset


def _implicit_context(topology: app.Topology, preset: str | ForceFieldPreset,
                      platform: str | None) -> openmm.Context:
    preset = get_preset(preset) if isinstance(preset, str) else preset
    if preset.solvent != "implicit":
        raise StarMDError(f"energies of saved frames need an implicit-solvent preset, got {preset.name!r}: "
                          "use --forcefield implicit or implicit-fast")
    zeros = u.Quantity(np.zeros((topology.getNumAtoms(), 3)), u.nanometer)
    system, _, _ = build_system(topology, zeros, preset)
    if system.usesPeriodicBoundaryConditions():
        raise StarMDError(f"preset {preset.name!r} builds a periodic System: use an implicit-solvent preset")
    # The integrator is never stepped; it only completes the Context.
    return openmm.Context(system, openmm.VerletIntegrator(0.001), fastest_platform(platform))


def potential_energies(
    xyz: np.ndarray,
    topology: app.Topology,
    preset: str | ForceFieldPreset,
    platform: str | None = None,
) -> np.ndarray:
    """Potential energy of every frame, recomputed with a force-field preset.

    Parameters
    ----------
    xyz
        Coordinates ``[T, n_atoms, 3]``, nm (no box is used).
    topology
        OpenMM topology of those atoms (in order), with bonds, as ``starmd prepare`` writes it.
    preset
        Implicit-solvent preset name or :class:`~openmm_starmd.forcefields.ForceFieldPreset`.
    platform
        OpenMM platform name; default the fastest available.

    Returns
    -------
    numpy.ndarray
        ``[T]`` potential energies, kJ/mol, float64 (``nan`` where OpenMM returns a non-finite value).

    Raises
    ------
    StarMDError
        If the shapes disagree, a coordinate is non-finite, or the preset is not implicit-solvent.
    """
    xyz = np.asarray(xyz, dtype=np.float64)
    if xyz.ndim != 3 or xyz.shape[2] != 3:
        raise StarMDError(f"coordinates must have shape [frames, atoms, 3], got {xyz.shape}")
    if xyz.shape[1] != topology.getNumAtoms():
        raise StarMDError(f"the frames have {xyz.shape[1]} atoms but the topology {topology.getNumAtoms()}: "
                          "give the topology the trajectory was written with")
    if not np.isfinite(xyz).all():
        raise StarMDError("the frames hold non-finite coordinates: remove those frames first")
    context = _implicit_context(topology, preset, platform)
    energies = np.empty(len(xyz), dtype=np.float64)
    for t, frame in enumerate(xyz):
        context.setPositions(frame)
        state = context.getState(energy=True)
        energies[t] = state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
    energies[~np.isfinite(energies)] = np.nan
    return energies


def trajectory_energies(
    path: str | os.PathLike,
    top: str | os.PathLike,
    preset: str | ForceFieldPreset,
    platform: str | None = None,
    stride: int = 1,
) -> np.ndarray:
    """Potential energies, kJ/mol, of the frames of a saved trajectory (``[T // stride]``).

    Parameters
    ----------
    path
        Trajectory file (xtc, dcd, pdb); any unit cell it carries is ignored.
    top
        PDB topology file of the same atoms in the same order.
    preset, platform
        As for :func:`potential_energies`.
    stride
        Use every ``stride``-th frame.
    """
    from openmm_starmd.analysis.matching import load_trajectory

    if stride < 1:
        raise StarMDError(f"stride must be >= 1, got {stride}")
    traj: md.Trajectory = load_trajectory(path, top)[::stride]
    try:
        topology = app.PDBFile(str(top)).topology
    except Exception as exc:  # OpenMM's PDB reader raises several types
        raise StarMDError(f"cannot read topology {top} ({type(exc).__name__}): give a PDB file") from None
    return potential_energies(traj.xyz, topology, preset, platform)


def compare_energies(sample: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Compare two samples of potential energies (kJ/mol): location, width and a two-sample KS test.

    Parameters
    ----------
    sample
        ``[A]`` energies of generated frames, kJ/mol (non-finite values are dropped and counted).
    reference
        ``[B]`` energies of reference frames, kJ/mol.

    Returns
    -------
    dict
        ``n_sample``, ``n_reference``, ``n_nonfinite_sample``, ``mean_sample``, ``mean_reference``,
        ``sd_sample``, ``sd_reference`` (kJ/mol, ddof 1), ``sd_ratio`` (sample / reference),
        ``mean_diff_in_ref_sd`` ((mean_sample - mean_reference) / sd_reference), ``ks_statistic``,
        ``ks_pvalue``.
    """
    sample = np.asarray(sample, dtype=np.float64).ravel()
    reference = np.asarray(reference, dtype=np.float64).ravel()
    finite_sample = sample[np.isfinite(sample)]
    finite_reference = reference[np.isfinite(reference)]
    if len(finite_sample) < 2 or len(finite_reference) < 2:
        raise StarMDError("comparing energies needs at least 2 finite values on each side")
    sd_sample = float(np.std(finite_sample, ddof=1))
    sd_reference = float(np.std(finite_reference, ddof=1))
    mean_sample, mean_reference = float(finite_sample.mean()), float(finite_reference.mean())
    ks = stats.ks_2samp(finite_sample, finite_reference)
    return {
        "n_sample": len(finite_sample),
        "n_reference": len(finite_reference),
        "n_nonfinite_sample": int(len(sample) - len(finite_sample)),
        "mean_sample": mean_sample,
        "mean_reference": mean_reference,
        "sd_sample": sd_sample,
        "sd_reference": sd_reference,
        "sd_ratio": sd_sample / sd_reference if sd_reference > 0 else math.inf,
        "mean_diff_in_ref_sd": (mean_sample - mean_reference) / sd_reference if sd_reference > 0 else math.inf,
        "ks_statistic": float(ks.statistic),
        "ks_pvalue": float(ks.pvalue),
    }
