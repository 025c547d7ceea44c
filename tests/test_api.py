"""The public API at the package root, the one proposer resolver, the one integrator factory, devices."""

import subprocess
import sys
from pathlib import Path

import openmm
import openmm.app as app
import openmm.unit as u
import pytest
import torch

import openmm_starmd
from openmm_starmd.errors import StarMDError
from openmm_starmd.forcefields import build_system, make_integrator, stable_timestep_ps
from openmm_starmd.model.checkpoint import model_folder, resolve_device

DATA = Path(__file__).parent / "data"


def test_import_is_cheap_and_root_names_resolve():
    code = ("import sys, openmm_starmd; assert 'torch' not in sys.modules and 'openmm' not in sys.modules; "
            "from openmm_starmd import StarMDSimulation, StarMDForce, load_model, RelaxSettings, GuardSettings; "
            "print(StarMDSimulation.__module__, StarMDForce.__name__, load_model.__module__)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["openmm_starmd.simulation.hybrid", "StarMDForce", "openmm_starmd.model.checkpoint"]
    with pytest.raises(AttributeError):
        openmm_starmd.NoSuchThing  # noqa: B018


def test_one_integrator_factory_for_presets_and_systems():
    pdb = app.PDBFile(str(DATA / "cln025.pdb"))
    heavy, _, _ = build_system(pdb.topology, pdb.positions, "implicit-fast")  # HBonds + 1.5 amu hydrogens
    plain, _, _ = build_system(pdb.topology, pdb.positions, "implicit")       # HBonds, natural hydrogens
    assert stable_timestep_ps(heavy) == 0.004 and stable_timestep_ps(plain) == 0.002
    integrator = make_integrator(heavy, 310.0, 2.0, seed=5)
    assert integrator.getStepSize().value_in_unit(u.picosecond) == pytest.approx(0.004)
    assert integrator.getTemperature().value_in_unit(u.kelvin) == pytest.approx(310.0)
    assert make_integrator("implicit").getStepSize().value_in_unit(u.picosecond) == pytest.approx(0.002)
    free = openmm.System()
    free.addParticle(1.008)
    assert stable_timestep_ps(free) == 0.001  # no constraints
    with pytest.raises(StarMDError, match="temperature must be positive"):
        make_integrator("implicit", -5.0)


def test_devices_resolve_or_fail_in_one_line():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(StarMDError, match="unknown device"):
        resolve_device("gpu7")
    if not torch.cuda.is_available():
        with pytest.raises(StarMDError, match="no CUDA GPU"):
            resolve_device("cuda:1")


def test_model_folder_names_the_real_problem(tmp_path):
    assert model_folder("default") == Path(openmm_starmd.__file__).parent / "weights"
    with pytest.raises(StarMDError, match="is a file, not a STAR-MD checkpoint folder"):
        model_folder(DATA / "cln025.pdb")
    with pytest.raises(StarMDError, match=r"lacks model\.json and model\.safetensors"):
        model_folder(tmp_path)
    with pytest.raises(StarMDError, match="not found"):
        model_folder(tmp_path / "missing")


def test_load_model_places_weights_on_the_asked_device():
    model, config = openmm_starmd.load_model("default", device="cpu")
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    assert {b.device.type for b in model.buffers()} == {"cpu"}
    assert not model.training and config.window >= 1
