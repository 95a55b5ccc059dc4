"""Parameter draws of a virtual cohort.

A sweep's cohort may use

* ``draws = 0``: one draw, the model's own parameter values;
* ``draws = n, draws_from = "posterior"`` (the default): ``n`` draws resampled, by their
  importance weights, from the final ABC-SMC population of the calibrated posterior
  (``calibration/posterior/posterior.nc``, shipped with the package), with a stream seeded by
  the sweep seed; ``"posterior:path/to/posterior.nc"`` uses another calibration's posterior;
  the plan records the file's SHA-256 digest;
* ``draws = n, draws_from = "prior"``: ``n`` independent draws, each parameter that has a
  ``prior = [lo, hi]`` in the model file on its own prior scale (log-uniform when
  ``lo > 0`` and ``hi / lo >= 10``, as in the calibration's Morris screen; uniform otherwise;
  whole-number parameters uniform over the integers of the range);
* ``draws = n, draws_from = "file.csv"``: the first ``n`` rows of a CSV file whose header
  names model parameter keys (values in the model units).

Values fixed in ``[parameters]`` or swept as factors override the drawn ones. Random streams
of the simulations do not depend on the draw: the same patient and replicate see the same
random numbers under every draw and every scenario.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from ..errors import NksimInputError
from ..fileio import open_text
from ..parameters import ParameterSet
from ..quantities import PARAMETERS

#: spawn_key of the draws' random stream (patient streams use 2-element keys).
DRAW_STREAM_KEY = 2**32 + 1


def prior_scale(lo: float, hi: float) -> str:
    """``"log"`` for a prior range spanning a decade or more above zero, else ``"linear"``."""
    return "log" if lo > 0 and hi / lo >= 10 else "linear"


def _draw_stream(seed: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(DRAW_STREAM_KEY,))))


def prior_draws(params: ParameterSet, n: int, seed: int, source: str = "<sweep>") -> list[dict[str, float]]:
    """``n`` draws from the priors of ``params``, each on its own scale (keys in sorted order)."""
    priors = params.priors()
    if not priors:
        raise NksimInputError(f"model '{params.name}' declares no prior ranges to draw from", source=source,
                              key="cohort.draws_from")
    rng = _draw_stream(seed)
    keys = sorted(priors)
    u = rng.random((n, len(keys)))
    out = []
    for row in u:
        d = {}
        for j, k in enumerate(keys):
            lo, hi = priors[k]
            if PARAMETERS[k].integer:
                d[k] = float(min(hi, math.floor(math.ceil(lo) + row[j] * (math.floor(hi) - math.ceil(lo) + 1))))
            elif prior_scale(lo, hi) == "log":
                d[k] = float(math.exp(math.log(lo) + row[j] * (math.log(hi) - math.log(lo))))
            else:
                d[k] = float(lo + row[j] * (hi - lo))
        out.append(d)
    for i, d in enumerate(out):
        params.with_values(d, origin=f"{source} prior draw {i}")  # validates
    return out


def file_draws(params: ParameterSet, path: str | Path, n: int) -> list[dict[str, float]]:
    """The first ``n`` rows of a CSV file of parameter values (header = parameter keys)."""
    p = Path(path)
    rows = list(csv.reader(open_text(p, "draws file")))  # UTF-8 (BOM accepted), else NksimInputError
    if not rows or not rows[0]:
        raise NksimInputError("empty draws file; expected a header of parameter keys and one row per draw", source=p)
    header = [h.strip() for h in rows[0]]
    for h in header:
        if h not in PARAMETERS:
            raise NksimInputError("unknown parameter in header; allowed keys are listed in nksim/quantities.py",
                                  source=p, key=h)
    if len(set(header)) != len(header):
        raise NksimInputError("duplicate column in header", source=p)
    body = [r for r in rows[1:] if any(c.strip() for c in r)]
    if len(body) < n:
        raise NksimInputError(f"has {len(body)} draws but the sweep asks for cohort.draws = {n}", source=p)
    out = []
    for i, r in enumerate(body[:n]):
        if len(r) != len(header):
            raise NksimInputError(f"row {i + 1} has {len(r)} values, header has {len(header)}", source=p)
        d = {}
        for k, text in zip(header, r):
            try:
                d[k] = float(text)
            except ValueError:
                raise NksimInputError(f"row {i + 1}: {text!r} is not a number", source=p, key=k) from None
        params.with_values(d, origin=f"{p} row {i + 1}")  # validates range and units' meaning
        out.append(d)
    return out


def posterior_file(draws_from: str) -> Path:
    """The posterior file named by ``draws_from`` (``"posterior"``: the shipped calibration)."""
    from ..resources import data_path

    if draws_from == "posterior":
        return data_path("calibration") / "posterior" / "posterior.nc"
    return Path(draws_from.split(":", 1)[1])


def file_digest(path: str | Path) -> str:
    """SHA-256 (16 hex digits) of a file's bytes."""
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def posterior_draws(params: ParameterSet, path: str | Path, n: int, seed: int,
                    source: str = "<sweep>") -> list[dict[str, float]]:
    """``n`` draws resampled with replacement, by weight, from the final ABC-SMC population in ``path``.

    Multinomial resampling with the sweep's draw stream; each draw is validated against the model.
    """
    import xarray as xr

    from ..calibration.posterior import final_population

    p = Path(path)
    if not p.is_file():
        raise NksimInputError("no such posterior file (written by nksim calibrate as posterior.nc)", source=p,
                              key="cohort.draws_from")
    try:
        ds = xr.load_dataset(p, engine="h5netcdf")
        values, weights = final_population(ds)
    except Exception as exc:  # noqa: BLE001  h5py/xarray raise many types for foreign or broken files
        raise NksimInputError(f"cannot read a calibrated posterior from it ({type(exc).__name__}: {exc})",
                              source=p, key="cohort.draws_from") from None
    values = carry_deprecated(params, values, weights)
    for k in values:
        if k not in PARAMETERS:
            raise NksimInputError(f"posterior parameter '{k}' is not a model parameter", source=p)
    idx = _draw_stream(seed).choice(weights.size, size=n, replace=True, p=weights)
    out = [{k: float(v[i]) for k, v in values.items()} for i in idx]
    for i, d in enumerate(out):
        params.with_values(d, origin=f"{source} posterior draw {i}")  # validates
    return out


def carry_deprecated(params: ParameterSet, values: dict[str, np.ndarray],
                     weights: np.ndarray) -> dict[str, np.ndarray]:
    """A posterior's populations with deprecated keys carried to the keys that replace them.

    A posterior calibrated before a key was split (:data:`nksim.quantities.PARAMETER_ALIASES`, e.g.
    ``host.t_drug_sensitivity`` into a Flu and a Cy sensitivity in 0.6.0) is kept as its spread
    around its weighted median: each new key takes the model's value times the draw over that
    median, so the posterior's median particle is the model's values and its relative spread is
    kept. Keys the posterior also has itself, and retired keys, are left as they are.
    """
    from ..calibration.posterior import weighted_quantile
    from ..quantities import PARAMETER_ALIASES

    out = {k: v for k, v in values.items() if k not in PARAMETER_ALIASES}
    for k, v in values.items():
        if k not in PARAMETER_ALIASES:
            continue
        median = float(weighted_quantile(v, weights, [0.5])[0])
        for new in PARAMETER_ALIASES[k]:
            if new not in out and median > 0:
                out[new] = params[new] * v / median
    return out


def parameter_draws(params: ParameterSet, n: int, draws_from: str, seed: int, source: str) -> list[dict[str, float]]:
    """The sweep's draws: ``[{}]`` (model values) when ``n == 0``."""
    if n == 0:
        return [{}]
    if draws_from == "prior":
        return prior_draws(params, n, seed, source)
    if draws_from == "posterior" or draws_from.startswith("posterior:"):
        return posterior_draws(params, posterior_file(draws_from), n, seed, source)
    return file_draws(params, draws_from, n)
