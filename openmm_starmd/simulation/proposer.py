"""Proposers: given the history of residue frames and a time step Δt, propose the next frames.

A :class:`Proposer` is stateful: the simulation ``push``-es every accepted (relaxed) frame and asks
``propose`` for the next one; a rejected proposal is simply asked for again, with the generator
moved on. STAR-MD (:class:`StarMDProposer`, a cached rollout of the trained model) is the proposer
users get; any other model plugs in through a :class:`ProposerFactory` registered under the entry-
point group ``openmm_starmd.proposers`` (the openmm-ml pattern) or with :func:`register_proposer`.

Frames follow :mod:`openmm_starmd.frames.rigid`: rotations ``[N, 3, 3]`` float32 and translations
``[N, 3]`` in nm, one per residue of the topology (residues without a backbone frame are ignored).
"""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import openmm.app as app
import torch

from openmm_starmd.errors import StarMDError
from openmm_starmd.frames import rigid
from openmm_starmd.model.checkpoint import DEFAULT_MODEL, default_model_path

__all__ = ["DEFAULT_MODEL", "ENTRY_POINT_GROUP", "HistoryProposer", "PerturbationProposer", "Proposer",
           "ProposerFactory", "StarMDProposer", "StarMDProposerFactory", "available_proposers",
           "default_model_path", "register_proposer", "resolve_proposer"]

ENTRY_POINT_GROUP = "openmm_starmd.proposers"


class Proposer(ABC):
    """Interface of every model that drives a :class:`~openmm_starmd.simulation.StarMDSimulation`."""

    @abstractmethod
    def push(self, rotations: torch.Tensor, translations: torch.Tensor) -> None:
        """Append a clean (accepted and relaxed) frame to the history.

        Parameters
        ----------
        rotations
            ``[N, 3, 3]`` residue rotations, float32.
        translations
            ``[N, 3]`` residue origins (CA), nm.
        """

    @abstractmethod
    def propose(self, dt_ps: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """The next frames ``dt_ps`` after the last pushed one; the history is not changed.

        Parameters
        ----------
        dt_ps
            Time step Δt, ps.
        generator
            Source of every random number used, so that runs are reproducible.

        Returns
        -------
        rotations, translations
            ``[N, 3, 3]`` and ``[N, 3]`` (nm).
        """

    @abstractmethod
    def reset(self) -> None:
        """Forget the history (the next ``push`` starts a new trajectory)."""

    @property
    def device(self) -> torch.device:
        """Where ``propose`` draws: the simulation creates its generator there."""
        return torch.device("cpu")

    @property
    def draws_chi(self) -> bool:
        """Whether :meth:`proposal_chi` gives side-chain torsions (the simulation then places side chains)."""
        return False

    def proposal_chi(self) -> torch.Tensor | None:
        """χ1–χ4 ``[M + K, N, 4]`` (rad), draws with the last ``propose`` (the first is the draw, the others
        alternatives for side chains it would overlap; see :attr:`chi_draws`), or None: side chains move
        rigidly."""
        return None

    @property
    def chi_draws(self) -> int | None:
        """M: how many leading draws of :meth:`proposal_chi` a side chain tries before it stays rigid; the
        K after them are fallback draws, tried only where the rigid side chain overlaps too. None: all M + K
        are tried first (:meth:`~openmm_starmd.simulation.sidechains.SideChains.place`)."""
        return None

    def set_temperature(self, temperature_k: float) -> None:  # noqa: B027 - temperature-blind default
        """The simulation's temperature (K): a learned proposer conditions on it, or refuses one it was not
        trained for (:class:`~openmm_starmd.errors.StarMDError`)."""

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: tensors, ints, floats, strings or lists of them."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: B027 - stateless default
        """Restore what :meth:`state_dict` returned."""


class ProposerFactory(ABC):
    """Creates proposers for a topology; registered by name (entry point or :func:`register_proposer`)."""

    @abstractmethod
    def create_proposer(self, topology: app.Topology, **options: Any) -> Proposer:
        """A new proposer for ``topology``; ``options`` are factory-specific."""


class HistoryProposer(Proposer):
    """A proposer that keeps its last ``max_history`` pushed frames in memory (plain tensors)."""

    def __init__(self, max_history: int = 1, device: str | torch.device | None = None) -> None:
        from openmm_starmd.model.checkpoint import resolve_device

        if max_history < 1:
            raise StarMDError(f"max_history must be at least 1, got {max_history}")
        self.max_history = max_history
        self._device = resolve_device("cpu" if device is None else device)
        self.rotations: list[torch.Tensor] = []
        self.translations: list[torch.Tensor] = []

    @property
    def device(self) -> torch.device:
        return self._device

    def push(self, rotations: torch.Tensor, translations: torch.Tensor) -> None:
        rot = rotations.detach().to(self._device, torch.float32).clone()
        trans = translations.detach().to(self._device, torch.float32).clone()
        self.rotations = [*self.rotations, rot][-self.max_history:]
        self.translations = [*self.translations, trans][-self.max_history:]

    def reset(self) -> None:
        self.rotations, self.translations = [], []

    def last(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The last pushed frame: rotations ``[N, 3, 3]``, translations ``[N, 3]`` nm."""
        if not self.rotations:
            raise StarMDError("the proposer has no history yet: push the starting frame first")
        return self.rotations[-1], self.translations[-1]

    def state_dict(self) -> dict[str, Any]:
        if not self.rotations:
            return {}
        return {"rotations": torch.stack(self.rotations), "translations": torch.stack(self.translations)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.reset()
        if "rotations" in state:
            self.rotations = list(state["rotations"].to(self._device, torch.float32).unbind(0))
            self.translations = list(state["translations"].to(self._device, torch.float32).unbind(0))


class PerturbationProposer(HistoryProposer):
    """Baseline proposer: the last frame with small independent random rigid moves of every residue.

    It knows no physics; the relaxation and the guards turn its proposals into valid structures. It
    exists to test and benchmark the hybrid machinery without a trained model.

    Parameters
    ----------
    rotation_sigma_rad
        Standard deviation of each rotation-vector component per residue at Δt = 1 ns, rad.
    translation_sigma_nm
        Standard deviation of each translation component per residue at Δt = 1 ns, nm.
    device
        Where the history lives and the draws happen (default CPU).
    """

    def __init__(self, rotation_sigma_rad: float = 0.05, translation_sigma_nm: float = 0.02,
                 device: str | torch.device | None = None) -> None:
        super().__init__(max_history=1, device=device)
        self.rotation_sigma_rad = float(rotation_sigma_rad)
        self.translation_sigma_nm = float(translation_sigma_nm)

    def propose(self, dt_ps: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        rot, trans = self.last()
        N = rot.shape[0]
        # Diffusive scaling: displacement grows like sqrt(Δt), capped so that huge Δt stays sane.
        scale = min(math.sqrt(dt_ps / 1000.0), 3.0)
        rotvec = torch.randn(N, 3, generator=generator, device=rot.device) * self.rotation_sigma_rad * scale
        shift = torch.randn(N, 3, generator=generator, device=rot.device) * self.translation_sigma_nm * scale
        # Rotate about each residue's own origin (CA): right-multiply in the local frame.
        return rot @ rigid.so3_exp(rotvec), trans + shift


class PerturbationProposerFactory(ProposerFactory):
    """Factory of :class:`PerturbationProposer` (registered as ``perturb``)."""

    def create_proposer(self, topology: app.Topology, **options: Any) -> Proposer:
        return PerturbationProposer(**options)


class StarMDProposer(Proposer):
    """The STAR-MD model as a proposer: a cached rollout (:class:`openmm_starmd.rollout.Rollout`).

    Parameters
    ----------
    model
        A loaded STAR-MD network (see :func:`openmm_starmd.model.checkpoint.load_model`).
    topology
        The simulated topology; residue types, indices and chain breaks come from it.
    window, num_steps, max_step_ps
        Passed to the rollout: frames of history attended to, sampler steps and the longest model step
        (ps) a jump is drawn in (``None``: the model's configuration).
    """

    def __init__(self, model: torch.nn.Module, topology: app.Topology, window: int | None = None,
                 num_steps: int | None = None, max_step_ps: float | None = None) -> None:
        from openmm_starmd.data.featurize import featurize_topology

        self.model = model
        self.window = window
        self.num_steps = num_steps
        self.max_step_ps = max_step_ps
        self.temperature_k: float | None = None
        self.features = featurize_topology(topology)
        self.reset()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def draws_chi(self) -> bool:
        return bool(self.model.config.chi_head)

    def proposal_chi(self) -> torch.Tensor | None:
        return self.rollout.last_chi

    @property
    def chi_draws(self) -> int | None:
        return int(self.model.config.chi_draws)

    def reset(self) -> None:
        from openmm_starmd.rollout import Rollout

        self.rollout = Rollout(self.model, self.features, window=self.window, num_steps=self.num_steps,
                               temperature_k=self.temperature_k, max_step_ps=self.max_step_ps)

    def set_temperature(self, temperature_k: float) -> None:
        from openmm_starmd.model.config import check_temperature

        check_temperature(self.model.config, temperature_k)
        self.temperature_k = self.rollout.temperature_k = float(temperature_k)

    def push(self, rotations: torch.Tensor, translations: torch.Tensor) -> None:
        self.rollout.push(rotations.float(), translations.float())

    def propose(self, dt_ps: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            return self.rollout.sample(dt_ps, generator)

    def state_dict(self) -> dict[str, Any]:
        return self.rollout.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.reset()
        self.rollout.load_state_dict(state)


class StarMDProposerFactory(ProposerFactory):
    """Factory of :class:`StarMDProposer` (registered as ``starmd``).

    Options: ``model`` (a checkpoint folder path, ``"default"`` or ``None`` for the shipped default
    model, or a loaded network), ``window``, ``num_steps``, ``max_step_ps``, ``device``.
    """

    def create_proposer(self, topology: app.Topology,
                        model: torch.nn.Module | str | os.PathLike | None = None,
                        window: int | None = None, num_steps: int | None = None,
                        device: str | torch.device | None = None, max_step_ps: float | None = None) -> Proposer:
        return StarMDProposer(_network(DEFAULT_MODEL if model is None else model, device), topology,
                              window=window, num_steps=num_steps, max_step_ps=max_step_ps)


def _network(model: torch.nn.Module | str | os.PathLike, device: str | torch.device | None) -> torch.nn.Module:
    """A STAR-MD network from a loaded module (moved to ``device`` when given) or a checkpoint folder."""
    from openmm_starmd.model.checkpoint import load_model, resolve_device

    if isinstance(model, torch.nn.Module):
        return model if device is None else model.to(resolve_device(device))
    return load_model(model, device="cpu" if device is None else device)[0]


_REGISTERED: dict[str, type[ProposerFactory] | ProposerFactory] = {
    "perturb": PerturbationProposerFactory,
    "starmd": StarMDProposerFactory,
}


def register_proposer(name: str, factory: type[ProposerFactory] | ProposerFactory) -> None:
    """Make a proposer factory available by ``name`` in this process (entry points need no call)."""
    _REGISTERED[name] = factory


def _entry_point_factories() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_proposers() -> list[str]:
    """Names of every proposer: entry points of ``openmm_starmd.proposers`` plus registered ones."""
    return sorted(set(_entry_point_factories()) | set(_REGISTERED))


def _factory(name: str) -> ProposerFactory | None:
    """The registered factory called ``name`` (an instance), or None."""
    factory: Any = _REGISTERED.get(name)
    if factory is None:
        eps = _entry_point_factories()
        if name not in eps:
            return None
        factory = eps[name].load()
    return factory() if isinstance(factory, type) else factory


def resolve_proposer(proposer: Proposer | torch.nn.Module | str | os.PathLike | None, topology: app.Topology,
                     device: str | torch.device | None = None, **options: Any) -> Proposer:
    """The one way to turn what a user names into a :class:`Proposer` for ``topology``.

    Parameters
    ----------
    proposer
        A Proposer (returned as is), a loaded STAR-MD network, ``"default"`` or None (the model shipped
        with the package), a registered proposer name (``perturb``, ``starmd``, entry points of
        ``openmm_starmd.proposers``) or a STAR-MD checkpoint folder.
    topology
        The simulated topology.
    device
        Where the model runs (``cpu``, ``cuda``, ``cuda:k``, ``auto``); None keeps a network where it is
        and loads checkpoints to the CPU. Passed to registered factories as the ``device`` option.
    options
        Factory options (e.g. ``window``, ``num_steps`` for STAR-MD).

    Raises
    ------
    StarMDError
        For an unknown name, a missing or malformed checkpoint folder, or a device that is not there.
    """
    if isinstance(proposer, Proposer):
        if device is not None:
            from openmm_starmd.model.checkpoint import resolve_device

            if resolve_device(device) != proposer.device:
                raise StarMDError(f"the proposer runs on {proposer.device}, not on {device}: create it on that "
                                  "device or leave device unset")
        return proposer
    if proposer is None or isinstance(proposer, torch.nn.Module):
        return StarMDProposerFactory().create_proposer(topology, model=proposer, device=device, **options)
    if not isinstance(proposer, (str, os.PathLike)):
        raise StarMDError(f"cannot use {type(proposer).__name__} as a proposer: give a Proposer, a model, a "
                          "proposer name or a checkpoint folder")
    factory = _factory(proposer) if isinstance(proposer, str) else None
    if factory is not None:
        if device is not None:
            options["device"] = device
        return factory.create_proposer(topology, **options)
    path = str(proposer)
    if path != DEFAULT_MODEL and not Path(path).exists():
        raise StarMDError(f"model {path} not found: give a STAR-MD checkpoint folder, 'default' or a proposer "
                          f"name ({', '.join(available_proposers())})")
    return StarMDProposerFactory().create_proposer(topology, model=path, device=device, **options)
