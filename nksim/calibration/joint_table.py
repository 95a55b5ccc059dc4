"""The trial's own outcome table under joint posterior draws: the check that stage A's fit still holds.

The joint calibration (:mod:`nksim.calibration.joint_run`) fits the registry's rows; the Ahmadvand
outcome table (response at the first assessment, progression and its timing per patient) was fitted
by stage A (``calibration/ahmadvand2023.toml``) with the blast kinetics the joint fit keeps at their
defaults. A joint posterior that explains other trials' remissions by a parameter the table also
depends on (``blasts.drug_sensitivity``, the lymphodepleting drugs' kill of blasts) can contradict the
table without any fitted row showing it: the first joint fit did (1-8 CR/PR of 9 predicted, 0
observed). This check simulates the table with stage A's own machinery
(:class:`~nksim.calibration.model.CalibrationModel`, :func:`~nksim.calibration.ppc.predictive_check`):
draw ``i`` takes stage A's posterior draw ``i`` for the parameters stage A fitted and the joint
posterior draw ``i`` for the joint fit's parameters (these override), so the check shows whether
the two posteriors can hold together.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import xarray as xr

from ..errors import NksimInputError


def combined_thetas(model, stage_posterior: str | Path, joint: Mapping[str, np.ndarray], n: int,
                    seed: int) -> list[dict[str, float]]:
    """``n`` parameter dicts: stage A's posterior draws (by weight), overridden by the joint draws ``joint``.

    ``joint``: parameter key -> values (one per joint draw; draw ``i`` is used for the ``i``-th dict,
    cycling). Stage A parameters the stage-A posterior file does not have (a key renamed since)
    keep the model's value.
    """
    from ..io import open_output
    from .posterior import final_population
    from .ppc import posterior_thetas

    post = open_output(stage_posterior)
    vals, w = final_population(post)
    stage = posterior_thetas(vals, w, n, seed)
    m = {len(v) for v in joint.values()}
    if len(m) != 1 or 0 in m:
        raise NksimInputError("the joint draws must be non-empty and of one length", source=str(stage_posterior))
    m = m.pop()
    out = []
    for i, s in enumerate(stage):
        theta = {f.key: float(s[f.key]) if f.key in s else float(model.base[f.key]) for f in model.config.fit}
        theta.update({k: float(v[i % m]) for k, v in joint.items()})
        out.append(theta)
    return out


def outcome_table_check(config: str | Path, stage_posterior: str | Path, joint: Mapping[str, np.ndarray], *,
                        draws: int = 200, seed: int = 20261206, workers: int = 1) -> xr.Dataset:
    """The calibration ``config``'s predictive check (its trial's outcome table) at combined draws.

    Returns :func:`~nksim.calibration.ppc.predictive_check`'s Dataset (one virtual trial per draw;
    per statistic the 90 % interval and whether the observed value is inside).
    """
    from .config import load_config
    from .model import CalibrationModel
    from .ppc import predictive_check

    model = CalibrationModel(load_config(config))
    thetas = combined_thetas(model, stage_posterior, joint, draws, seed)
    ds = predictive_check(model, thetas, seed=seed, label="joint posterior with stage A", workers=workers)
    ds.attrs["calibration_config"] = str(config)
    ds.attrs["stage_posterior"] = str(stage_posterior)
    ds.attrs["joint_parameters"] = " ".join(joint)
    return ds


def table_rows(ds: xr.Dataset) -> list[dict[str, object]]:
    """One dict per statistic of an outcome-table check: observed, 90 % interval, inside, long name."""
    from .ppc import check_table

    return [{"statistic": name, "long_name": ds[name].attrs["long_name"].removeprefix("simulated "),
             "observed": obs, "lo": lo, "hi": hi, "inside": inside}
            for name, obs, lo, hi, inside in check_table(ds)]
