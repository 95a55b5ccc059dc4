"""Morris screen of the prior ranges on the trial registry's rows (``nksim screen --registry``).

Which parameters can the registry's calibration targets inform? Every parameter with a prior
(or a named subset) is moved over its prior range on a Morris design
(:func:`~nksim.calibration.screen.morris_indices`), and at every design point each protocol
the rows need is simulated once (:func:`~nksim.calibration.scoring.protocol_run`, ``replicates``
virtual trials, the calibration resolution, as :func:`~nksim.calibration.scoring.score_registry`
does). One output per registry row, pooled over the virtual trials
(:func:`pooled_statistic`):

* shares (``cr_share_first_assessment``, ``expansion_share``, ...): the share of all simulated
  patients that count (patients x virtual trials);
* quantities: the row's ``statistic`` (median, or mean) over all simulated patients that count,
  **log10** of it for counts (``uL-1``) and chimerism (``percent``), NaN where it is not positive;
* ``relapse_free_days``: the Kaplan-Meier median of the pooled patients.

Common random numbers: protocol ``P`` is simulated with the seed
``derived_seed(seed, "protocol:P")`` (the one ``nksim score`` uses) at every design point, so an
elementary effect measures the parameter's effect, not Monte Carlo noise; a parameter the
protocols never read gets ``mu_star`` exactly 0. Units of the indices as in
:mod:`nksim.calibration.screen`: output units per full prior range of the parameter on its
sampling scale (per decade range for log-scale priors).

A screen with few trajectories ranks parameters; it is not a variance decomposition.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..checks import check_seed, show
from ..errors import NksimInputError
from .config import FitParameter
from .registry import OBSERVABLES, Registry, TrialObservation, group_by_protocol, load_registry, simulated_per_patient
from .scoring import (
    DEFAULT_SEED,
    _roles,
    derived_seed,
    observed_value,
    protocol_run,
    registry_run_attrs,
    resolution_params,
)
from .screen import SELECTION_THRESHOLD, morris_indices, prior_parameter

if TYPE_CHECKING:  # pragma: no cover
    import xarray

    from ..parameters import ParameterSet

_SOURCE = "run_registry_screen"
#: Units whose values are screened on a log10 scale (counts per uL, chimerism in percent).
LOG_UNITS = ("uL-1", "percent")


# ----------------------------------------------------------------------------- outputs
def _unit(obs: TrialObservation) -> str:
    return obs.unit or OBSERVABLES[obs.observable].unit


def transform(obs: TrialObservation) -> str:
    """How the row's output is computed from the pooled patients: ``share``, ``median``, ``log10 median``, ..."""
    if obs.is_share:
        return "share"
    if obs.observable == "relapse_free_days":
        return "Kaplan-Meier median"
    return f"log10 {obs.statistic}" if _unit(obs) in LOG_UNITS else obs.statistic


def output_units(obs: TrialObservation) -> str:
    """UDUNITS-2 units of the row's output (``1`` for shares and log10 values)."""
    return "1" if obs.is_share or _unit(obs) in LOG_UNITS else _unit(obs)


def to_output_scale(obs: TrialObservation, value: float) -> float:
    """A value of the row's observable (in its unit) on the output's scale (log10 where :func:`transform` says)."""
    if transform(obs).startswith("log10"):
        return math.log10(value) if value > 0 else math.nan
    return float(value)


def pooled_statistic(obs: TrialObservation, ds: xarray.Dataset) -> float:
    """The row's statistic over every simulated patient of ``ds`` that counts (all virtual trials pooled).

    NaN where no patient counts (e.g. no expander), or a log10 output is not positive.
    """
    x = simulated_per_patient(obs, ds)
    if obs.observable == "relapse_free_days":
        from ..observables import km_median
        from .registry import _assessment_days

        return km_median(x.ravel(), float(_assessment_days(ds)[-1]))
    x = x[np.isfinite(x)]
    if x.size == 0:
        return math.nan
    stat = float(np.mean(x)) if obs.is_share or obs.statistic == "mean" else float(np.median(x))
    return to_output_scale(obs, stat)


# ----------------------------------------------------------------------------- arguments
def _count(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise NksimInputError(f"{name} must be an integer >= {minimum}, got {show(value)}", source=_SOURCE,
                              key=name)
    return int(value)


def registry_screen_parameters(base: ParameterSet, parameters: Sequence[str | FitParameter] | None = None
                               ) -> list[FitParameter]:
    """The screened parameters: every parameter of ``base`` with a prior (default), or the named ones.

    Names must carry a prior in ``base``; a :class:`~nksim.calibration.config.FitParameter` is taken
    as given (its own range and scale). Priors as :func:`~nksim.calibration.screen.prior_parameter`.
    """
    priors = base.priors()
    if parameters is None:
        return [prior_parameter(k, lo, hi) for k, (lo, hi) in priors.items()]
    if isinstance(parameters, (str, bytes)) or not isinstance(parameters, Sequence) or not parameters:
        raise NksimInputError(f"parameters must be a non-empty list of parameter keys, got {show(parameters)}",
                              source=_SOURCE, key="parameters")
    out: list[FitParameter] = []
    for p in parameters:
        if isinstance(p, FitParameter):
            out.append(p)
        elif isinstance(p, str) and p in priors:
            out.append(prior_parameter(p, *priors[p]))
        else:
            raise NksimInputError(f"{show(p)} is not a parameter with a prior in '{base.name}' (screenable: "
                                  f"{', '.join(priors)})", source=_SOURCE, key="parameters")
    keys = [f.key for f in out]
    if len(set(keys)) != len(keys):
        raise NksimInputError(f"parameters named twice: {', '.join(sorted({k for k in keys if keys.count(k) > 1}))}",
                              source=_SOURCE, key="parameters")
    return out


# ----------------------------------------------------------------------------- the screen
def run_registry_screen(params: ParameterSet | str | Path = "default", registry: Registry | str | Path | None = None,
                        *, roles: Sequence[str] = ("target",), parameters: Sequence[str | FitParameter] | None = None,
                        trajectories: int = 4, levels: int = 4, replicates: int = 2, seed: int = DEFAULT_SEED,
                        workers: int = 1, progress: bool = True, resolution: str = "calibration",
                        lattice_overrides: Mapping[str, float] | None = None) -> xarray.Dataset:
    """Morris screen of ``params`` over the prior ranges on the registry rows of ``roles``.

    Parameters
    ----------
    params:
        The model (a parameter set, a name in ``models/`` or a TOML path), run at ``resolution``
        (:data:`~nksim.calibration.scoring.RESOLUTIONS`) plus ``lattice_overrides``.
    registry:
        A :class:`~nksim.calibration.registry.Registry`, a registry folder, or None (the shipped one).
    roles:
        Which rows are outputs (default the calibration targets); rows without a simulated
        counterpart are left out.
    parameters:
        Parameter keys to screen (default every parameter with a prior), or
        :class:`~nksim.calibration.config.FitParameter` with their own ranges.
    trajectories, levels:
        Morris trajectories (``trajectories * (k + 1)`` design points for ``k`` parameters), even
        grid levels.
    replicates:
        Virtual trials per protocol and design point (pooled into each row's statistic).
    seed:
        Design, bootstrap and simulation seed, in ``[0, 2**64)``; protocol ``P`` is simulated with
        ``derived_seed(seed, "protocol:P")`` at every point (common random numbers).
    workers:
        Threads evaluating design points; the result does not depend on it.

    Returns
    -------
    xarray.Dataset
        As :func:`nksim.calibration.screen.run_screen` (``mu``, ``mu_star``, ``mu_star_conf``,
        ``sigma``, ``mu_star_rel`` per parameter x output, ``selected``, ``n_undefined``, the design
        ``X`` / ``theta`` and outputs ``Y``); outputs are the registry row names, with coordinates
        ``protocol``, ``group``, ``observable``, ``role``, ``transform``, ``observed_on_output_scale``.
    """
    from ..simulate import simulate_cohort

    seed = check_seed(seed, source=_SOURCE, key="seed")
    trajectories = _count(trajectories, "trajectories", 2)
    levels = _count(levels, "levels", 2)
    if levels % 2:
        raise NksimInputError(f"levels must be even, got {levels}", source=_SOURCE, key="levels")
    replicates = _count(replicates, "replicates")
    workers = _count(workers, "workers")
    roles = _roles(roles, source=_SOURCE)
    if registry is None or isinstance(registry, (str, Path)):
        registry = load_registry(registry)
    elif not isinstance(registry, Registry):
        raise NksimInputError(f"registry must be a Registry, a folder or None, got {show(registry)}",
                              source=_SOURCE, key="registry")
    p = resolution_params(params, resolution, lattice_overrides)
    fit = registry_screen_parameters(p, parameters)
    rows = [o for o in registry.observations if o.role in roles and o.has_counterpart]
    if not rows:
        raise NksimInputError(f"the registry has no simulated row of role(s) {', '.join(roles)}",
                              source=registry.directory, key="roles")
    by_protocol = group_by_protocol(rows)
    runs = {name: protocol_run(name, obs) for name, obs in by_protocol.items()}
    seeds = {name: derived_seed(seed, f"protocol:{name}") for name in by_protocol}
    names = [o.name for o in rows]

    def func(theta: dict[str, float]) -> dict[str, float]:
        q = p.with_values(theta, origin=f"{p.origin} (Morris design point)")
        out: dict[str, float] = {}
        for name, obs in by_protocol.items():
            proto, ids = runs[name]
            ds = simulate_cohort(q, proto, replicates=replicates, seed=seeds[name], patients=ids, workers=1)
            for o in obs:
                out[o.name] = pooled_statistic(o, ds)
        return out

    units = {o.name: output_units(o) for o in rows}
    t0 = time.perf_counter()
    ds = morris_indices(fit, func, names, trajectories=trajectories, levels=levels, seed=seed, workers=workers,
                        progress=progress, output_units=units)
    seconds = time.perf_counter() - t0

    def coord(values, long_name, dtype=object, **attrs):
        return ("output", np.array(values, dtype=dtype), {"long_name": long_name, **attrs})

    long_names = [f"{o.trial} ({o.arm}{', group ' + o.group if o.group else ''}): {transform(o)} of "
                  f"{o.observable} over {replicates} pooled virtual trial(s) -- "
                  f"{OBSERVABLES[o.observable].meaning}" for o in rows]
    ds = ds.assign_coords(
        output=coord(names, "registry observation name (calibration/data/trials/)"),
        output_long_name=coord(long_names, "description of the output"),
        protocol=coord([o.protocol for o in rows], "shipped protocol simulated (experiments/protocols/)"),
        group=coord([o.group or "" for o in rows], "patient group of the protocol ('' = all patients)"),
        observable=coord([o.observable for o in rows], "observable (nksim.calibration.registry.OBSERVABLES)"),
        role=coord([o.role for o in rows], "role in calibration: target | held_out | context"),
        transform=coord([transform(o) for o in rows], "statistic over the pooled simulated patients (log10 for "
                                                     "counts and chimerism)"),
        observed_on_output_scale=coord([to_output_scale(o, observed_value(o)) for o in rows],
                                       "the published number on the output's scale (NaN for a range or a "
                                       "direction)", dtype=float, units="1"),
    )
    ds["Y"].attrs["long_name"] = ("registry outputs at the design points (NaN where undefined; units per output in "
                                  "output_units)")
    attrs = {
        **registry_run_attrs(
            "nksim Morris sensitivity screen of the prior ranges on the trial registry",
            f"{ds.sizes['point']} design points x {len(by_protocol)} protocols, each {replicates} virtual "
            f"trial(s) of the patients its rows need at the '{resolution}' resolution; protocol P simulated "
            "with derived_seed(seed, 'protocol:P') at every point (common random numbers). A Morris screen "
            "with few trajectories ranks parameters; it is not a variance decomposition",
            p, resolution=resolution, lattice_overrides=lattice_overrides, registry=registry),
        "roles": " ".join(roles),
        "replicates": int(replicates),
        "virtual_trials": int(replicates),
        "protocol_seeds": json.dumps(seeds),
        "patients_per_protocol": json.dumps({n: len(r[1]) for n, r in runs.items()}),
        "seed": int(seed),
        "simulation_seed": int(seed),
        "wall_time_s": float(seconds),
        "workers": int(workers),
    }
    attrs.update(ds.attrs)
    ds.attrs = attrs
    return ds


# ----------------------------------------------------------------------------- tables
def registry_screen_csv(ds: xarray.Dataset) -> str:
    """The indices as CSV text, one line per (output, parameter): mu, mu_star, mu_star_conf, sigma, mu_star_rel."""
    lines = ["output,protocol,transform,output_units,parameter,scale,prior_lo,prior_hi,mu,mu_star,mu_star_conf,"
             "sigma,mu_star_rel,n_undefined"]
    for o in ds["output"].to_numpy():
        so = ds.sel(output=o)
        for k in ds["parameter"].to_numpy():
            s = so.sel(parameter=k)
            vals = ",".join(f"{float(s[v]):.6g}" for v in ("mu", "mu_star", "mu_star_conf", "sigma", "mu_star_rel"))
            lines.append(f"{o},{s['protocol'].item()},{s['transform'].item()},{s['output_units'].item()},{k},"
                         f"{s['scale'].item()},{float(s['prior_lo']):.6g},{float(s['prior_hi']):.6g},{vals},"
                         f"{int(s['n_undefined'])}")
    return "\n".join(lines) + "\n"


def top_parameters(ds: xarray.Dataset, n: int = 5, threshold: float = SELECTION_THRESHOLD) -> str:
    """Per output: the ``n`` parameters of largest mu* (with mu_star_rel >= ``threshold``), or 'nothing moves it'."""
    lines = []
    for o in ds["output"].to_numpy():
        so = ds.sel(output=o)
        ms = so["mu_star"].to_numpy()
        unit = so["output_units"].item()
        head = f"{o} [{so['transform'].item()}, {unit}/range]"
        if not np.isfinite(ms).any() or np.nanmax(ms) <= 0:
            lines.append(f"{head}: nothing moves it (every mu* = 0)")
            continue
        order = [i for i in np.argsort(-np.nan_to_num(ms, nan=-1.0))[:n]
                 if float(so["mu_star_rel"][i]) >= threshold]
        keys = so["parameter"].to_numpy()
        lines.append(f"{head}: " + ", ".join(f"{keys[i]} {ms[i]:.3g} (mu {float(so['mu'][i]):+.3g})" for i in order))
    return "\n".join(lines)
