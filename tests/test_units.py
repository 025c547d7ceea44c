"""Unit parsing and conversions: the one module every public boundary goes through."""

import openmm.unit as u
import pytest

from openmm_starmd import units
from openmm_starmd.errors import StarMDError


@pytest.mark.parametrize(
    ("text", "ps"),
    [("10ps", 10.0), ("1.5ns", 1500.0), ("1us", 1e6), ("2 ns", 2000.0), ("500fs", 0.5), ("1e2ps", 100.0)],
)
def test_parse_time(text, ps):
    assert units.parse_time(text) == pytest.approx(ps)


@pytest.mark.parametrize(("text", "message"), [("10", "with a unit"), ("-1ns", "positive"), ("0ns", "positive"),
                                               ("tenns", "with a unit"), ("5 years", "with a unit")])
def test_parse_time_refuses(text, message):
    with pytest.raises(StarMDError, match=message):
        units.parse_time(text, "--time")


def test_quantities_and_floats_convert_alike():
    assert units.to_ps(2 * u.nanosecond) == pytest.approx(2000.0)
    assert units.to_ps(3.0) == 3.0
    assert units.to_nm(5 * u.angstrom) == pytest.approx(0.5)
    assert units.to_kelvin(300 * u.kelvin) == 300.0
    assert units.to_kj_per_mol(1 * u.kilocalorie_per_mole) == pytest.approx(4.184)
    # k_B T at 300 K is 2.494 kJ/mol.
    assert units.kt_kj_per_mol(300.0) == pytest.approx(2.4943, abs=1e-4)
    # 1 ns simulated in 86.4 s of wall time is 1000 ns/day.
    assert units.ns_per_day(1000.0, 86.4) == pytest.approx(1000.0)
    assert units.format_time(1500.0) == "1.5 ns"
