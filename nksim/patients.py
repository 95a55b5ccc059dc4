"""Per-patient random effects: a virtual patient drawn from the population distributions.

Each simulation draws, from its own ``patient`` stream, nine standard normal deviates
(always nine, so the stream stays aligned whatever is fixed; the first five are those drawn before
0.4.0, the sixth since 0.4.0, the seventh since 0.6.0, the eighth and ninth since 0.6.0 (issue 26): the earlier ones
are the same numbers as before, a generator draws them in order) and maps them to

* baseline marrow blast fraction: logit-normal around ``blasts.baseline_pct``;
* the kinetic class of the disease (a latent-class mixture, since 0.4.0): proliferative with
  probability ``random_effects.proliferative_fraction`` (the sixth deviate below its normal
  quantile), else indolent;
* net blast growth rate: log-normal around ``blasts.net_growth_rate`` (indolent class) or
  ``blasts.net_growth_rate * random_effects.proliferative_growth_fold`` (proliferative class),
  with the same log SD in both classes (sign kept);
* NK-susceptible blast fraction: logit-normal around ``blasts.susceptible_fraction``;
* host lymphocyte recovery: one log-normal factor scaling both ``host.nk_recovery_rate`` and
  ``host.t_recovery_rate`` (a patient whose NK recover fast also recovers T cells fast);
* donor-NK expansion: log-normal around ``nk.il15_proliferation_max`` (the donor and product
  vary between patients; in vivo expansion is seen in a minority, Bachanova 2014);
* anti-donor rejection (the seventh deviate, since 0.6.0): one log-normal factor, median 1 and SD of its
  log ``random_effects.rejection_log_sd``, scaling both ``nk.rejection_rate`` and
  ``allo.primed_rejection_rate`` (a patient whose host T cells reject the donor fast also rejects it fast
  once primed; ``docs/model.md`` section 9.12). 0 (the default) gives every patient the population's rates;
* donor-NK survival (the eighth deviate, since 0.6.0, issue 26): one log-normal factor, median 1 and SD of its log
  ``random_effects.nk_death_log_sd``, on the homeostatic death of her donor NK (``nk.death_rate`` times the
  product's factor; ``docs/model.md`` section 9.13). 0 (the default) gives every patient the population's rate;
* IL-15 production (the ninth deviate, since 0.6.0, issue 26): one log-normal factor, median 1 and SD of its log
  ``random_effects.il15_production_log_sd``, on her endogenous IL-15 production, so her IL-15 before
  lymphodepletion is the factor (in units of the population's baseline) and every level after it scales with it
  (``docs/model.md`` section 9.14). 0 (the default) gives every patient the population's production.

A protocol may fix a patient's ``baseline_blast_pct``, ``body_weight`` and
``body_surface_area``; fixed covariates replace the draw.

A patient whose protocol marks her ``disease = "remission"`` (complete or molecular remission;
:data:`nksim.protocol.DISEASE_STATES`) has no kinetic class: her residual disease regrows with a
log-normal doubling time around ``blasts.remission_doubling_time`` (SD of its log
``blasts.remission_doubling_log_sd``; Ommen et al. 2010, relapse from remission), from the same
second deviate; the sixth deviate is still drawn (the stream stays aligned) and not used, and
``proliferative_disease`` is 0.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields

import numpy as np

from .parameters import ParameterSet


@dataclass(frozen=True)
class PatientEffects:
    """The individual values of one virtual patient (units in the field comments)."""

    body_weight: float  # kg
    body_surface_area: float  # m2
    baseline_blast_pct: float  # percent of nucleated marrow cells
    proliferative_disease: float  # 1 (1.0: proliferative kinetic class, 0.0: indolent or in remission)
    blast_net_growth_rate: float  # day-1
    susceptible_fraction: float  # 1
    host_nk_recovery_rate: float  # day-1
    host_t_recovery_rate: float  # day-1
    nk_il15_proliferation_max: float  # day-1
    rejection_factor: float = 1.0  # 1 (multiplies nk.rejection_rate and allo.primed_rejection_rate)
    death_factor: float = 1.0  # 1 (multiplies the homeostatic death of her donor NK, nk.death_rate)
    il15_production_factor: float = 1.0  # 1 (multiplies her endogenous IL-15 production; her IL-15 starts at it)

    def as_dict(self) -> dict[str, float]:
        """The individual values as a ``{field: value}`` dict (units: :data:`EFFECT_META`).

        The fields one by one (``dataclasses.asdict`` deep-copies each value: 6 us a patient, here 0.6 us).
        """
        return {name: getattr(self, name) for name in _EFFECT_FIELDS}


_EFFECT_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(PatientEffects))

#: Units and long names of the PatientEffects fields (for outputs).
EFFECT_META: dict[str, tuple[str, str]] = {
    "body_weight": ("kg", "body weight"),
    "body_surface_area": ("m2", "body surface area"),
    "baseline_blast_pct": ("percent", "marrow blasts before lymphodepletion (individual value)"),
    "proliferative_disease": ("1", "disease in the proliferative kinetic class (1) or the indolent class or in "
                                   "remission (0)"),
    "blast_net_growth_rate": ("day-1", "net blast growth rate at low marrow occupancy (individual value)"),
    "susceptible_fraction": ("1", "NK-susceptible fraction of blasts at baseline (individual value)"),
    "host_nk_recovery_rate": ("day-1", "host NK cell Gompertz regrowth rate (individual value)"),
    "host_t_recovery_rate": ("day-1", "host T cell Gompertz regrowth rate (individual value)"),
    "nk_il15_proliferation_max": ("day-1", "extra donor-NK division at saturating IL-15 (individual value)"),
    "rejection_factor": ("1", "factor on the host's anti-donor rejection rates (individual value)"),
    "death_factor": ("1", "factor on the homeostatic death rate of the donor NK (individual value)"),
    "il15_production_factor": ("1", "factor on the endogenous IL-15 production, her IL-15 before lymphodepletion "
                                "relative to the population's (individual value)"),
}


def median_patient_overrides() -> dict[str, float]:
    """Parameter values that make every virtual patient the population's typical one.

    Every between-patient spread (``random_effects.*_sd``) is 0 and the disease is in the
    indolent kinetic class (``random_effects.proliferative_fraction`` = 0; the class of the
    median patient whenever the calibrated fraction is below one half). Used by the Mesa
    cross-validation and its visualisation.
    """
    from .quantities import PARAMETERS

    out = {k: 0.0 for k in PARAMETERS if k.startswith("random_effects.") and k.endswith("_sd")}
    out["random_effects.proliferative_fraction"] = 0.0
    return out


def _logit(p: float) -> float:
    p = min(max(p, 1e-9), 1 - 1e-9)
    return math.log(p / (1 - p))


def _expit(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


#: Standard normal deviates behind one virtual patient's individual values (module docstring).
N_EFFECT_NORMALS = 9


def draw_effects(params: ParameterSet, rng: np.random.Generator,
                 covariates: Mapping[str, float] | None = None, *, disease: str = "active") -> PatientEffects:
    """Draw one virtual patient's individual values from the population distributions.

    ``disease``: her disease status (:data:`nksim.protocol.DISEASE_STATES`; module docstring).
    """
    return effects_from_normals(params, rng.standard_normal(N_EFFECT_NORMALS), covariates, disease=disease)


def effects_from_normals(params: ParameterSet, z: np.ndarray,
                         covariates: Mapping[str, float] | None = None, *, disease: str = "active") -> PatientEffects:
    """A virtual patient's individual values from her :data:`N_EFFECT_NORMALS` standard normal deviates ``z``.

    The map :func:`draw_effects` applies to the deviates it draws (module docstring, in that order:
    baseline blasts, growth, susceptible fraction, host recovery, donor-NK expansion, kinetic
    class, anti-donor rejection, donor-NK survival, IL-15 production). Given ``z``, a patient-level sampler
    (``nksim twin``'s ABC-SMC) moves a patient's random effects on their standard normal scale, where the
    population distribution is N(0, I).
    """
    cov = dict(covariates or {})
    z = np.asarray(z, dtype=float)
    if z.shape != (N_EFFECT_NORMALS,):
        raise ValueError(f"z must hold {N_EFFECT_NORMALS} standard normal deviates, got shape {z.shape}")
    sd_b = params["random_effects.baseline_blast_logit_sd"]
    sd_g = params["random_effects.blast_growth_log_sd"]
    sd_s = params["random_effects.susceptible_logit_sd"]
    sd_h = params["random_effects.host_recovery_log_sd"]
    base = params["blasts.baseline_pct"] / 100.0
    if "baseline_blast_pct" in cov:
        blast_pct = cov["baseline_blast_pct"]
    elif 0.0 < base < 1.0:
        blast_pct = 100.0 * _expit(_logit(base) + sd_b * z[0])
    else:
        blast_pct = 100.0 * base
    sus = params["blasts.susceptible_fraction"]
    if disease == "remission":
        proliferative = False
        growth = math.log(2.0) / params["blasts.remission_doubling_time"]
        log_sd = params["blasts.remission_doubling_log_sd"]
    elif disease == "active":
        proliferative = _normal_cdf(z[5]) < params["random_effects.proliferative_fraction"]
        growth = params["blasts.net_growth_rate"]
        if proliferative:
            growth *= params["random_effects.proliferative_growth_fold"]
        log_sd = sd_g
    else:
        raise ValueError(f"unknown disease status {disease!r}; allowed: active, remission")
    sus_i = _expit(_logit(sus) + sd_s * z[2]) if 0.0 < sus < 1.0 else sus
    return PatientEffects(
        body_weight=cov.get("body_weight", params["anatomy.body_weight"]),
        body_surface_area=cov.get("body_surface_area", params["anatomy.body_surface_area"]),
        baseline_blast_pct=blast_pct,
        proliferative_disease=1.0 if proliferative else 0.0,
        blast_net_growth_rate=growth * math.exp(log_sd * z[1]),
        susceptible_fraction=sus_i,
        host_nk_recovery_rate=params["host.nk_recovery_rate"] * math.exp(sd_h * z[3]),
        host_t_recovery_rate=params["host.t_recovery_rate"] * math.exp(sd_h * z[3]),
        nk_il15_proliferation_max=params["nk.il15_proliferation_max"]
        * math.exp(params["random_effects.nk_expansion_log_sd"] * z[4]),
        rejection_factor=math.exp(params["random_effects.rejection_log_sd"] * z[6]),
        death_factor=math.exp(params["random_effects.nk_death_log_sd"] * z[7]),
        il15_production_factor=math.exp(params["random_effects.il15_production_log_sd"] * z[8]),
    )
