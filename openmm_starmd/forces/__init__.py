"""STAR-MD as an OpenMM ``Force``: the model's score at a small diffusion time, as forces on N, CA, C.

:class:`StarMDForce` is a ``torch.nn.Module`` with the openmm-torch signature
``forward(positions [n_atoms, 3] nm, weight []) -> (energy [] kJ/mol, forces [n_atoms, 3] kJ/mol/nm)``.
:meth:`StarMDForce.create_openmm_force` traces it with TorchScript for the system's size, saves it and
wraps it in ``openmmtorch.TorchForce`` (``setOutputsForces(True)``), so the learned model acts in any
OpenMM Context: any integrator, any platform that openmm-torch supports, serialised systems
(``XmlSerializer`` embeds the TorchScript module in the XML).

What the force is
-----------------
The model is conditioned on a fixed context: T frames (e.g. the starting structure) and a physical
step Δt. The current structure's residue frames, expressed relative to the last context frame exactly
as the sampler's state (:mod:`openmm_starmd.model.tokens`), are fed to the denoiser at diffusion time
τ (default the config's ``tau_min``). Its clean-frame prediction gives the score of the noised
conditional law p_τ(frame | context, Δt), per residue:

* translation score ``s_t = -(x_τ - α x̂0)/σ²`` ``[N, 3]``, mapped from diffusion units to 1/nm in
  global axes (``× translation_scale``, rotated by the reference frame);
* rotation score ``s_r`` ``[N, 3]`` in 1/rad: the gradient of ``log p`` with respect to a body-frame
  rotation vector of the residue frame (IGSO(3) score, as in the sampler).

At small τ this approximates ``∇ log p(frame | context, Δt)`` ("two for one": a diffusion model is also
a force field). With a large Δt the conditional law approaches the model's equilibrium; the state is
always measured from the last context frame, so at least one context frame is required.

From frame scores to atom forces
--------------------------------
The frame of a residue is a function of its N, CA, C positions (Gram–Schmidt,
:func:`openmm_starmd.frames.rigid.frames_from_three_points`: origin CA, e1 along CA→C, N in the e1-e2
plane). The force is the pull-back of the covector ``kT (s_t, s_r)`` through that map: for every
atomic displacement δx the virtual work ``F·δx`` equals ``kT (s_t·δCA + s_r·δω)``, δω the body-frame
rotation of the frame. Closed form (L1 = |C−CA|, u2 = component of N−CA orthogonal to e1,
L2 = |u2|, a = e1·(N−CA))::

    F_N  = kT s_r1 e3 / L2
    F_C  = kT (s_r3 e2 − s_r2 e3 − s_r1 a e3 / L2) / L1
    F_CA = kT s_t − F_N − F_C

so the translational score acts on CA as a force ``kT s_t`` and the rotational score as a torque
``kT R s_r`` about CA carried by N and C (the sum of the three forces is ``kT s_t``). Units: score in
1/nm and 1/rad, kT in kJ/mol, forces in kJ/mol/nm. All forces are multiplied by the global parameter
:data:`WEIGHT_PARAMETER` (λ), changeable in a running Context with ``context.setParameter``.

Energy
------
The learned score is not the gradient of any function of the positions in general (nothing in the
network enforces a curl-free field), so the force is non-conservative: it reports energy 0 and must
not be used with energy-based tools (minimisers, Monte Carlo barostats, free-energy estimators).

openmm-torch (``pip install acellera-openmmtorch-cpu``) is imported lazily, only by the functions that
need it, so the rest of the package works without it. Periodic boundary conditions are not used (the
three atoms of a residue are taken as given; implicit-solvent or vacuum systems).
"""

from __future__ import annotations

from openmm_starmd.forces.mapping import frame_score_forces
from openmm_starmd.forces.module import StarMDForce
from openmm_starmd.forces.openmm_api import (
    OPENMMTORCH_PACKAGE,
    WEIGHT_PARAMETER,
    add_starmd_force,
    import_openmmtorch,
    set_starmd_weight,
    starmd_force_on,
)

__all__ = [
    "OPENMMTORCH_PACKAGE",
    "WEIGHT_PARAMETER",
    "StarMDForce",
    "add_starmd_force",
    "frame_score_forces",
    "import_openmmtorch",
    "set_starmd_weight",
    "starmd_force_on",
]
