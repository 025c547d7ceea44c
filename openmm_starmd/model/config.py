"""The one configuration of a STAR-MD model: sizes, diffusion schedule, training noise, sampler.

A :class:`ModelConfig` is frozen and saved (as JSON) inside every checkpoint, so a checkpoint alone
rebuilds its network. Presets: ``tiny`` (tests), ``small`` (CPU default), ``base`` (paper scale).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from openmm_starmd.errors import StarMDError
from openmm_starmd.units import ANGSTROM_PER_NM

DETERMINISTIC_STEPS = ("all", "last", "intermediate")


@dataclass(frozen=True)
class ModelConfig:
    """Every hyper-parameter of the network, the diffusion processes and the sampler.

    Lengths are nm, times ps, angles rad. ``translation_scale_per_angstrom`` is the factor that maps
    Å to the diffusion's coordinate units (0.1 per Å as in the paper, i.e. 1 unit = 1 nm).
    """

    # network
    num_blocks: int = 2
    width: int = 128
    num_heads: int = 4
    mlp_ratio: int = 4
    ipa_points: int = 4  # query/key points per head in the geometric layer
    ipa_value_points: int = 4
    num_fourier: int = 16  # Fourier features for τ and log Δt
    num_residue_types: int = 21  # 20 standard + unknown
    time_rope_max_period: int = 512  # frames; integer periods keep rotary angles exact for long rollouts
    residue_rope_base: float = 1000.0
    # χ head: logits over chi_bins bins of each of χ1–χ4 (model/chi.py); the all-atom mapping places side
    # chains from its draws. Cross-entropy (nats) is weighted by chi_loss_weight against the frame losses.
    chi_head: bool = False
    chi_bins: int = 36
    chi_loss_weight: float = 0.1
    # sequence
    window: int = 8  # K: frames of history attended to
    # history alignment: every frame is superposed (on its CA atoms) on the next one before the model sees
    # it, so the model learns the protein's internal motion, not its tumbling and drift (which in implicit
    # solvent move residues 0.2 nm and turn them 0.7 rad within 10 ps, hiding 0.05 nm of internal motion)
    align_history: bool = True
    # translations: VP SDE on the displacement expressed in the previous frame's local axes. 1 unit = 1 Å:
    # aligned displacements are 0.03–0.4 nm, so the data are of unit order against the unit-variance prior.
    translation_scale_per_angstrom: float = 1.0
    vp_beta_min: float = 0.1
    vp_beta_max: float = 20.0
    # rotations: IGSO(3) noise, σ(τ) log-linear between sigma_min and sigma_max (rad)
    rot_sigma_min: float = 0.05
    rot_sigma_max: float = 1.5
    tau_min: float = 0.01  # smallest diffusion time, training and sampling
    # losses
    rot_loss_weight: float = 1.0
    trans_loss_weight: float = 1.0
    backbone_loss_weight: float = 1.0
    backbone_loss_tau_max: float = 0.25  # backbone-atom loss only at small τ
    # stretched CA–CA links and backbone/CB overlaps of the predicted structure (train/violations.py), in Å²,
    # at the backbone loss's small τ; 0 leaves it out
    violation_loss_weight: float = 0.0
    # the penalty also scores consecutive residues' backbone pairs four or more bonds apart (φ near 0)
    violation_neighbours: bool = False
    # history (context) noise: τ_ctx ~ U[0, ctx_tau_max], left clean with probability ctx_clean_prob
    ctx_tau_max: float = 0.1
    ctx_clean_prob: float = 0.75
    ctx_tau_inference: float = 0.0  # noise level of pushed history frames at inference
    ctx_noise_seed: int = 12345  # seeds the (per-frame, deterministic) inference history noise
    # temperature: with the condition, noisy tokens are adaLN-conditioned on an embedding of T (like Δt);
    # without it (every checkpoint before it existed) the model knows only the temperature of its data.
    # temperature_range_k is (lowest, highest) temperature of the training data (K).
    temperature_condition: bool = False
    temperature_range_k: tuple[float, float] = (300.0, 300.0)
    # sampler
    num_sampler_steps: int = 20
    # χ draws per proposal: the all-atom mapping takes the first, and re-turns a residue whose side chain
    # overlaps another heavy atom to the next draw (SideChains.place)
    chi_draws: int = 8
    # then, for residues none of those draws fits, chi_fallback_draws more from the head's distribution
    # flattened to temperature chi_fallback_temperature (logits / T): the head can put almost no weight on
    # the rotamers that fit a backbone it got slightly wrong (0: no fallback draws)
    chi_fallback_draws: int = 0
    chi_fallback_temperature: float = 5.0
    # longest Δt (ps) of one model step at inference; a longer jump is drawn as equal steps whose frames
    # join the history (Rollout); 0: every jump in one step
    max_step_ps: float = 0.0
    # model steps only for chains of at most this many residues (0: any length); a longer chain takes each
    # jump in one step: frames drawn from the model's own unrelaxed frames drift further on a larger protein
    max_step_residues: int = 0
    deterministic_sampler: bool = False  # probability-flow ODE instead of the reverse SDE
    # which model steps of a jump drawn in several (max_step_ps) take the ODE when deterministic_sampler is
    # set: "all", "last" (the frame the caller gets) or "intermediate" (the frames only the history sees)
    deterministic_steps: str = "all"
    # sampler steps of those intermediate model steps (0: num_sampler_steps, like the last)
    intermediate_sampler_steps: int = 0
    # translation integrator: "exponential" (exact over each step for the frozen denoiser) or "euler"
    # (Euler–Maruyama); rotations always take geodesic Euler–Maruyama steps
    sampler_method: str = "exponential"
    # τ grid τ_i = τ_min + (1 − τ_min)(1 − i/(n−1))^p: p > 1 puts more steps at small τ, where the
    # VP noise level changes fastest
    sampler_time_power: float = 2.0

    def __post_init__(self) -> None:
        if self.width % self.num_heads != 0:
            raise StarMDError(f"width {self.width} is not divisible by num_heads {self.num_heads}: change one")
        if (self.width // self.num_heads) % 4 != 0:
            raise StarMDError("width / num_heads must be a multiple of 4 for 2-D rotary embeddings")
        if self.window < 2:
            raise StarMDError(f"window must be at least 2 frames, got {self.window}")
        if self.sampler_method not in ("exponential", "euler"):
            raise StarMDError(f"sampler_method must be 'exponential' or 'euler', got {self.sampler_method!r}")
        if self.deterministic_steps not in DETERMINISTIC_STEPS:
            raise StarMDError(f"deterministic_steps must be one of {', '.join(DETERMINISTIC_STEPS)}, got "
                              f"{self.deterministic_steps!r}")
        if self.chi_bins < 2:
            raise StarMDError(f"chi_bins must be at least 2, got {self.chi_bins}")
        if self.chi_draws < 1:
            raise StarMDError(f"chi_draws must be at least 1, got {self.chi_draws}")
        if self.chi_fallback_draws < 0:
            raise StarMDError(f"chi_fallback_draws must be 0 (none) or more, got {self.chi_fallback_draws}")
        if not (self.chi_fallback_temperature >= 1.0 and math.isfinite(self.chi_fallback_temperature)):
            raise StarMDError(f"chi_fallback_temperature must be a finite number >= 1, got "
                              f"{self.chi_fallback_temperature}")
        if not (self.max_step_ps >= 0 and math.isfinite(self.max_step_ps)):
            raise StarMDError(f"max_step_ps must be 0 (one step per jump) or a positive ps, got {self.max_step_ps}")
        if self.max_step_residues < 0:
            raise StarMDError(f"max_step_residues must be 0 (any length) or more, got {self.max_step_residues}")
        if self.intermediate_sampler_steps < 0:
            raise StarMDError(f"intermediate_sampler_steps must be 0 (as num_sampler_steps) or more, got "
                              f"{self.intermediate_sampler_steps}")
        if self.num_sampler_steps < 1:
            raise StarMDError(f"num_sampler_steps must be at least 1, got {self.num_sampler_steps}")
        low, high = self.temperature_range_k
        if not 0 < low <= high:
            raise StarMDError(f"temperature_range_k must be (low, high) K with 0 < low <= high, got "
                              f"{self.temperature_range_k}")

    def chi_draw_setting(self) -> dict[str, float] | None:
        """χ draws per proposal as a run records them (None without a χ head)."""
        if not self.chi_head:
            return None
        return {"draws": self.chi_draws, "fallback_draws": self.chi_fallback_draws,
                "fallback_temperature": self.chi_fallback_temperature}

    @property
    def head_dim(self) -> int:
        return self.width // self.num_heads

    def deterministic_step(self, last: bool) -> bool:
        """Whether a model step integrates the probability-flow ODE: ``last`` is the last step of its jump
        (the frame the caller gets; a jump of one step is its own last)."""
        return self.deterministic_sampler and self.deterministic_steps in ("all", "last" if last else "intermediate")

    def sampler_steps(self, last: bool) -> int:
        """Sampler steps of a model step: ``last`` as in :meth:`deterministic_step`."""
        if last or not self.intermediate_sampler_steps:
            return self.num_sampler_steps
        return self.intermediate_sampler_steps

    @property
    def translation_scale(self) -> float:
        """Factor from nm to diffusion units."""
        return self.translation_scale_per_angstrom * ANGSTROM_PER_NM

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with some fields changed (unknown names raise :class:`StarMDError`)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise StarMDError(f"unknown model option(s) {sorted(unknown)}: see ModelConfig fields")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """All fields, except later additions still at their default: a checkpoint that does not use them
        keeps exactly the JSON (and stays readable by) versions that predate them."""
        data = dataclasses.asdict(self)
        for name in _ADDED_FIELDS:
            if data[name] == _DEFAULTS[name]:
                del data[name]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Rebuild from :meth:`to_dict` output; unknown keys (a newer version's) raise StarMDError."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise StarMDError(f"checkpoint config has unknown field(s) {sorted(unknown)}: upgrade openmm_starmd")
        data = dict(data)
        if "temperature_range_k" in data:  # JSON has lists; the frozen config compares tuples
            data["temperature_range_k"] = tuple(float(t) for t in data["temperature_range_k"])
        # Checkpoints written before history alignment existed were trained on unaligned frames.
        return cls(**{"align_history": False, **data})


def check_temperature(config: ModelConfig, temperature_k: float, slack_k: float = 1.0) -> None:
    """Refuse (:class:`StarMDError`, one line) a temperature the model was not trained for.

    A model without the temperature condition samples the dynamics of its training temperature whatever
    the simulation's, so any other temperature is an error; a conditioned model accepts its training range.
    ``slack_k`` (K) absorbs rounding in recorded temperatures.
    """
    low, high = config.temperature_range_k
    if low - slack_k <= float(temperature_k) <= high + slack_k:
        return
    trained = f"{low:g} K" if low == high else f"{low:g}-{high:g} K"
    if not config.temperature_condition:
        raise StarMDError(f"the model was trained at {trained} without a temperature condition, so at "
                          f"{float(temperature_k):g} K it would still propose {trained} dynamics: simulate at "
                          f"{trained}, or use a model trained with --temperature-condition on such data")
    raise StarMDError(f"the model was trained at {trained}; {float(temperature_k):g} K is outside that range: "
                      "simulate within it or fine-tune on data at that temperature")


_ADDED_FIELDS = ("temperature_condition", "temperature_range_k", "chi_bins", "chi_loss_weight", "chi_draws",
                 "max_step_ps", "deterministic_steps", "intermediate_sampler_steps", "violation_loss_weight",
                 "chi_fallback_draws", "chi_fallback_temperature", "violation_neighbours",
                 "max_step_residues")
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(ModelConfig)}

PRESETS: dict[str, ModelConfig] = {
    "tiny": ModelConfig(num_blocks=2, width=32, num_heads=2, mlp_ratio=2, ipa_points=2, ipa_value_points=2,
                        num_fourier=8, window=4, num_sampler_steps=8),
    "small": ModelConfig(num_blocks=3, width=96, num_heads=4, mlp_ratio=2, ipa_points=4, ipa_value_points=4,
                         num_fourier=16, window=8, num_sampler_steps=20),
    "base": ModelConfig(num_blocks=4, width=256, num_heads=8, mlp_ratio=4, ipa_points=4, ipa_value_points=8,
                        num_fourier=32, window=16, num_sampler_steps=50, chi_head=True),
}


def preset(name: str, **changes: Any) -> ModelConfig:
    """The named preset (``tiny``, ``small``, ``base``), optionally with fields changed."""
    if name not in PRESETS:
        raise StarMDError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    return PRESETS[name].replace(**changes) if changes else PRESETS[name]
