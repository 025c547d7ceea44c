"""Frozen TorchScript traces of the sampler's hot paths, with an eager fallback."""

from __future__ import annotations

import warnings

import torch
from torch import nn


def frozen_trace(module: nn.Module, inputs: list[torch.Tensor], what: str) -> torch.jit.ScriptModule | None:
    """The frozen trace of ``module`` at ``inputs``, or None (with a warning) where this torch build cannot trace it.

    Parameters
    ----------
    module
        Traced in eval mode. Python branches on shapes or values are baked into the trace, so a caller keeps one
        trace per shape (and per branch) it serves.
    inputs
        Example inputs, in the order of ``module.forward``'s arguments.
    what
        Names the module in the warning, e.g. ``"the network evaluation"``.

    Returns
    -------
    torch.jit.ScriptModule or None
        None where tracing failed; the caller then runs ``module`` eagerly (the same draws, slower).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the baked-in branches: callers key by them
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated; nothing replaces it on CPU
            return torch.jit.freeze(torch.jit.trace(module.eval(), tuple(inputs), check_trace=False))
    except (RuntimeError, AttributeError, NotImplementedError) as err:
        warnings.warn(f"STAR-MD: could not trace {what} ({err}); running it eagerly (same draws, slower)",
                      RuntimeWarning, stacklevel=3)
        return None
