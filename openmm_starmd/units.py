"""Every unit conversion of the package lives here.

Public boundaries use OpenMM units: nm, ps, kJ/mol, K. Plain floats are in those units; OpenMM
``Quantity`` objects are accepted wherever a float is and converted here. The command line accepts
times with a suffix (``10ps``, ``1.5ns``, ``1us``) and parses them with :func:`parse_time`.
"""

from __future__ import annotations

import math
import re

import openmm.unit as u

from openmm_starmd.errors import StarMDError

ANGSTROM_PER_NM = 10.0
NM_PER_ANGSTROM = 0.1
PS_PER_NS = 1000.0
PS_PER_US = 1_000_000.0
FS_PER_PS = 1000.0
SECONDS_PER_DAY = 86400.0
# Boltzmann constant times Avogadro's number, kJ/(mol K) (CODATA 2018, as in OpenMM).
MOLAR_GAS_CONSTANT_KJ = 0.00831446261815324

_TIME_SUFFIX_PS = {"fs": 1.0 / FS_PER_PS, "ps": 1.0, "ns": PS_PER_NS, "us": PS_PER_US, "µs": PS_PER_US}
_TIME_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(fs|ps|ns|us|µs)\s*$")


def parse_time(text: str, what: str = "time") -> float:
    """Parse a positive time with a unit suffix into picoseconds.

    Parameters
    ----------
    text
        For example ``"10ps"``, ``"1.5 ns"``, ``"1us"``. A bare number is refused: its unit is ambiguous.
    what
        Name of the option, used in the error message.

    Returns
    -------
    float
        The time in ps (> 0).

    Raises
    ------
    StarMDError
        If the text has no unit, an unknown unit, or is not a positive number.
    """
    text = str(text)
    if text.strip().startswith("-"):
        raise StarMDError(f"{what} must be positive, got {text!r}: give e.g. 10ns")
    match = _TIME_RE.match(text)
    if match is None:
        raise StarMDError(f"cannot read {what} {text!r}: give a number with a unit, e.g. 10ps, 2ns or 1us")
    value = float(match.group(1)) * _TIME_SUFFIX_PS[match.group(2)]
    if not math.isfinite(value) or value <= 0.0:
        raise StarMDError(f"{what} must be positive, got {text!r}: give e.g. 10ns")
    return value


def format_time(ps: float) -> str:
    """Readable time, e.g. ``1.5 ns`` for 1500 ps."""
    if ps >= PS_PER_US:
        return f"{ps / PS_PER_US:g} us"
    if ps >= PS_PER_NS:
        return f"{ps / PS_PER_NS:g} ns"
    return f"{ps:g} ps"


def to_ps(value: float | u.Quantity) -> float:
    """A time as float ps; floats are taken to be ps already."""
    return float(value.value_in_unit(u.picosecond)) if u.is_quantity(value) else float(value)


def to_nm(value: float | u.Quantity) -> float:
    """A length as float nm; floats are taken to be nm already."""
    return float(value.value_in_unit(u.nanometer)) if u.is_quantity(value) else float(value)


def to_kelvin(value: float | u.Quantity) -> float:
    """A temperature as float K; floats are taken to be K already."""
    return float(value.value_in_unit(u.kelvin)) if u.is_quantity(value) else float(value)


def to_kj_per_mol(value: float | u.Quantity) -> float:
    """An energy as float kJ/mol; floats are taken to be kJ/mol already."""
    return float(value.value_in_unit(u.kilojoule_per_mole)) if u.is_quantity(value) else float(value)


def kt_kj_per_mol(temperature_k: float) -> float:
    """Thermal energy k_B T in kJ/mol at ``temperature_k`` kelvin."""
    return MOLAR_GAS_CONSTANT_KJ * temperature_k


def ns_per_day(simulated_ps: float, wall_seconds: float) -> float:
    """Simulated nanoseconds per wall-clock day."""
    if wall_seconds <= 0.0:
        return float("inf")
    return simulated_ps / PS_PER_NS * SECONDS_PER_DAY / wall_seconds
