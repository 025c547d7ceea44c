"""Install script for openmm_starmd: ``pip install -e .`` (add ``[test]`` for the test suite)."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent

setup(
    name="openmm_starmd",
    version="0.1.0",
    description="STAR-MD: learned long-time-step protein dynamics as an OpenMM component",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["openmm_starmd", "openmm_starmd.*"]),
    package_data={"openmm_starmd": ["weights/*.safetensors", "weights/*.json", "weights/*.md"]},
    install_requires=[
        # Pinned together: openmmtorch 1.10 is ABI-bound to torch 2.12 and to openmm 8.5's XML format.
        "openmm==8.5.2",
        "pdbfixer==1.12.0",
        "torch==2.12.1",
        "acellera-openmmtorch-cpu==1.10",
        "mdtraj",
        "numpy",
        "scipy",
        "safetensors",
        "tqdm",
        "h5py",
        "matplotlib",
        "PeptideBuilder",
        "deeptime",
        "threadpoolctl",
    ],
    extras_require={"test": ["pytest", "ruff"]},
    entry_points={
        "console_scripts": ["starmd=openmm_starmd.cli:main"],
        # Third-party proposers register here (the openmm-ml pattern); ours is registered the same way.
        "openmm_starmd.proposers": [
            "starmd=openmm_starmd.simulation.proposer:StarMDProposerFactory",
            "perturb=openmm_starmd.simulation.proposer:PerturbationProposerFactory",
        ],
    },
)
