"""openmm_starmd: STAR-MD learned long-time-step protein dynamics as an OpenMM component.

Heavy submodules (torch model, OpenMM simulation) are imported on demand so that
``import openmm_starmd`` stays cheap and works even when optional pieces are missing.
"""

__version__ = "0.1.0"

from openmm_starmd.errors import StarMDError

__all__ = ["StarMDError", "__version__"]
