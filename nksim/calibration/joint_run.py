"""Run the joint calibration end to end and write its report (``calibration/joint/run_joint.py``).

Steps (each written to ``out``):

1. emulators of every target row from the bank (``emulators.csv``: examples, skill);
2. the posterior of the fitted parameters given the targets not excluded (``posterior.nc``: draws;
   ``posterior_draws.csv``: the same in random order, as a sweep's ``cohort.draws_from`` reads them;
   ``posterior.csv``: prior and posterior median / 90 % interval per parameter, the interval's
   width as a share of the prior's, on the sampling scale, and the derived NK potency);
3. the posterior predictive check of every target row, simulated by nksim at posterior draws with
   each row's published trial size (``ppc.csv``: median and 90 % interval, observed inside?);
4. optionally the trial's own outcome table (stage A's fit) simulated at joint posterior draws
   combined with stage A's draws (``outcome_table.nc``, ``outcome_table.csv``;
   :mod:`nksim.calibration.joint_table`): can the two posteriors hold together?
5. the recovery study: synthetic datasets simulated by nksim at parameters drawn from the prior,
   fitted as the real data (``recovery.nc``, ``recovery.csv``: coverage of the 90 % intervals per
   parameter and overall, median interval width);
6. every registry row scored under posterior draws (``scores.nc``);
7. ``summary.json`` and ``REPORT.md`` (the tables above in Markdown).
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import NksimInputError
from ..parameters import ParameterSet
from ..threads import ordered_thread_map
from .bank import bank_model_match, bank_parameters, open_bank, prior_unit_to_values
from .emulator import JointEmulator, fit_joint_emulator
from .joint import (
    IL2_COURSE_ACTIVATION,
    LEVEL,
    POTENCY_DEFINITION,
    POTENCY_IL2_DEFINITION,
    coverage_study,
    interval,
    nk_potency,
    observed_data,
    posterior_sample,
    simulate_dataset,
)
from .joint_spec import JointSpec
from .registry import Registry, TrialObservation, clopper_pearson, load_registry
from .scoring import derived_seed, registry_run_attrs, resolution_params

#: A parameter counts as learnt when its posterior 90 % interval is at most this share of the prior's.
LEARNT_WIDTH = 0.5


def _prior_draws(spec: JointSpec, n: int, rng: np.random.Generator) -> np.ndarray:
    """Draws from the fit's prior on the unit cube (uniform times the informative Gaussians, by rejection)."""
    lp = spec.log_prior()
    out = []
    while sum(len(x) for x in out) < n:
        u = rng.random((4 * n, len(spec.parameters)))
        if lp is not None:
            u = u[np.log(rng.random(u.shape[0])) < lp(u)]
        out.append(u)
    return np.vstack(out)[:n]


def md_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table: ``header`` and one line per row (cells by ``str``)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _fmt(v: float) -> str:
    if not math.isfinite(v):
        return "nan"
    a = abs(v)
    return f"{v:.3g}" if 1e-3 <= a < 1e4 or a == 0 else f"{v:.2e}"


def simulate_predictive(spec: JointSpec, rows: Sequence[TrialObservation], draws_theta: np.ndarray, *, seed: int,
                        workers: int = 1, tag: str = "ppc") -> list[dict[str, tuple[float, float]]]:
    """The posterior predictive samples: one virtual trial of each row's published size at every draw.

    ``simulate_dataset`` at draw ``i`` with seed ``derived_seed(seed, f"{tag}:{i}")``, in the order of the draws.
    """
    p = resolution_params(spec.model, "calibration", spec.lattice_overrides)
    fit = list(spec.parameters)

    def one(i: int) -> dict[str, tuple[float, float]]:
        return simulate_dataset(p, fit, draws_theta[i], rows, derived_seed(seed, f"{tag}:{i}"))

    return ordered_thread_map(one, range(draws_theta.shape[0]), workers)


def predictive_tails(x: np.ndarray, observed: float, *, level: float = LEVEL) -> dict[str, Any]:
    """Where ``observed`` falls among the predictive samples ``x``: the two tail probabilities and how sure they are.

    ``p_at_least`` = P(X >= observed) and ``p_at_most`` = P(X <= observed) over the samples, each with its exact
    (Clopper-Pearson) 95 % interval as a Monte Carlo estimate from ``x.size`` draws. ``tail`` is the smaller of the
    two; the observation lies inside the central ``level`` predictive interval when it exceeds (1 - level) / 2.
    ``monte_carlo`` is true when that tail's exact interval contains (1 - level) / 2: more draws could turn the
    verdict (the draws cannot tell inside from outside; ``calibration/joint/tail_check.py`` settles one row).
    Samples that are not finite are dropped first.
    """
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    n = int(x.size)
    a = (1.0 - level) / 2.0
    if n == 0:
        return {"p_at_least": math.nan, "p_at_most": math.nan, "tail": math.nan, "tail_lo": math.nan,
                "tail_hi": math.nan, "monte_carlo": True}
    k_hi, k_lo = int((x >= observed).sum()), int((x <= observed).sum())
    k = min(k_hi, k_lo)
    lo, hi = clopper_pearson(k, n)
    return {"p_at_least": k_hi / n, "p_at_most": k_lo / n, "tail": k / n, "tail_lo": lo, "tail_hi": hi,
            "monte_carlo": bool(lo <= a <= hi)}


def predictive_check(spec: JointSpec, rows: Sequence[TrialObservation], draws_theta: np.ndarray, *, seed: int,
                     workers: int = 1) -> list[dict[str, Any]]:
    """Each row simulated at every posterior draw with its published size: median, 90 % interval, verdict.

    Beside the verdict, the tail probabilities of the observation (:func:`predictive_tails`): ``monte_carlo``
    marks a row whose verdict the number of draws cannot settle.
    """
    sims = simulate_predictive(spec, rows, draws_theta, seed=seed, workers=workers)
    out = []
    a = (1.0 - LEVEL) / 2.0
    for o in rows:
        if o.is_share:
            x = np.array([s[o.name][0] / s[o.name][1] for s in sims])
            obs = o.k / o.n
        else:
            x = np.array([10.0 ** s[o.name][0] for s in sims])
            obs = o.value
        x = x[np.isfinite(x)]
        lo, med, hi = (np.quantile(x, [a, 0.5, 1.0 - a], method="inverted_cdf") if x.size else (math.nan,) * 3)
        out.append({"row": o.name, "protocol": o.protocol, "observed": float(obs),
                    "observed_text": f"{o.k}/{o.n}" if o.is_share else f"{o.value:g} {o.unit}",
                    "median": float(med), "lo": float(lo), "hi": float(hi),
                    "inside": bool(lo <= obs <= hi), "draws": int(x.size), **predictive_tails(x, obs)})
    return out


def run_joint(spec: JointSpec, bank: str | Path, out: str | Path, *, registry: Registry | None = None,
              ppc_draws: int = 200, recovery_datasets: int = 30, particles: int = 4000,
              recovery_particles: int = 2000, score_draws: int = 200, workers: int = 1, seed: int = 20261206,
              outcome_table: tuple[str | Path, str | Path] | None = None, table_draws: int = 200,
              progress: bool = True) -> dict[str, Any]:
    """The joint calibration from a finished (or partly finished) bank; writes the files of the module docstring.

    ``recovery_datasets`` / ``score_draws`` = 0 skip the recovery study / the registry scores.
    ``outcome_table``: (calibration config, its posterior ``posterior.nc``) of a stage fitted to the trial's
    outcome table; the table is then simulated at ``table_draws`` joint posterior draws combined with that
    stage's draws (:mod:`nksim.calibration.joint_table`).
    """
    import xarray as xr

    from ..io import write_netcdf
    from ..parameters import load_parameters

    t_start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    registry = registry or load_registry()
    ds_bank = open_bank(bank)
    fit = bank_parameters(ds_bank)
    if [f.key for f in fit] != [f.key for f in spec.parameters]:
        raise NksimInputError("the bank's parameters differ from the spec's fit.parameters", source=str(bank),
                              key="parameters")
    p_sim = resolution_params(spec.model, "calibration", spec.lattice_overrides)
    design = json.loads(ds_bank.attrs["design"])
    neutral_keys = bank_model_match(design.get("parameter_digest"), p_sim)
    if neutral_keys is None:
        raise NksimInputError(
            f"the bank was simulated with another parameter set ({design.get('parameter_set')!r}, digest "
            f"{design.get('parameter_digest')!r}) than the spec's model {spec.model!r} at the calibration resolution "
            f"(digest {p_sim.digest()!r}), and not only by parameters added since at their neutral value "
            "(nksim.quantities.NEUTRAL_VALUES): its emulators would not describe the model that the checks simulate; "
            "rebuild the bank with run_bank.py for this spec, or point the spec's joint.model at the bank's model",
            source=str(Path(bank) / "bank.json"), key="parameter_digest")

    def provenance(title: str, comment: str) -> dict[str, Any]:
        return registry_run_attrs(title, comment, p_sim, resolution="calibration",
                                  lattice_overrides=spec.lattice_overrides, registry=registry)

    excluded = dict(spec.excluded)
    sd_obs = dict(spec.observation_sd_log10)
    rows = [o for o in registry.observations if o.role in spec.roles and o.has_counterpart]
    bank_rows = set(ds_bank["row"].values)
    rows = [o for o in rows if o.name in bank_rows]
    fitted = [o for o in rows if o.name not in excluded]
    if not fitted:
        raise NksimInputError("no row left to fit", source=spec.source, key="fit.excluded")

    def say(msg: str) -> None:
        if progress:
            print(f"[{time.perf_counter() - t_start:7.1f} s] {msg}", flush=True)

    if neutral_keys:
        say("the bank predates parameter(s) now at their neutral value (the model it simulated): "
            + ", ".join(neutral_keys))
    say(f"bank: {ds_bank.sizes['point']} points; fitting emulators of {len(rows)} rows")
    em_all = fit_joint_emulator(ds_bank, rows, seed=seed)
    import pandas as pd

    # each table is written as soon as it exists (a later step that fails leaves the earlier ones)
    emu = [{"row": r.name, "kind": r.kind, "examples": r.n_examples, "fitted": r.name not in excluded,
            **{k2: round(v, 4) for k2, v in r.diagnostics.items()}} for r in em_all.rows]
    pd.DataFrame(emu).to_csv(out / "emulators.csv", index=False)
    em = JointEmulator(tuple(r for r in em_all.rows if r.name not in excluded))
    data = observed_data(fitted, sd_obs)
    k = len(fit)
    log_prior = spec.log_prior()
    say("posterior (SMC on the emulated likelihood)")
    post = posterior_sample(em, data, k, log_prior=log_prior, particles=particles, seed=seed)
    theta = prior_unit_to_values(fit, post.draws)
    rng = np.random.default_rng(seed)
    prior_u = _prior_draws(spec, particles, rng)
    base = load_parameters(spec.model)
    lo, hi = interval(post.draws)
    plo, phi = interval(prior_u)
    med = np.median(post.draws, axis=0)
    par_rows = []
    for j, f in enumerate(fit):
        width = (hi[j] - lo[j]) / max(phi[j] - plo[j], 1e-12)
        v = prior_unit_to_values([f], np.array([[lo[j]], [med[j]], [hi[j]]]))[:, 0]
        par_rows.append({"parameter": f.key, "unit": f.unit, "prior_lo": f.lo, "prior_hi": f.hi, "scale": f.scale,
                         "default": float(base[f.key]), "median": float(v[1]), "q05": float(v[0]),
                         "q95": float(v[2]), "width_share_of_prior": float(width),
                         "learnt": bool(width <= LEARNT_WIDTH)})
    theta_post = {f.key: theta[:, j] for j, f in enumerate(fit)}
    theta_prior_u = prior_unit_to_values(fit, prior_u)
    theta_prior = {f.key: theta_prior_u[:, j] for j, f in enumerate(fit)}
    potency, pot_post = _potency_summary(POTENCY_DEFINITION, theta_prior, theta_post, base, 0.0)
    potency_il2, pot_post_il2 = _potency_summary(POTENCY_IL2_DEFINITION, theta_prior, theta_post, base,
                                                 IL2_COURSE_ACTIVATION)
    say(f"posterior: ESS {post.ess:.0f}, {post.rounds} tempering rounds, acceptance {post.acceptance:.2f}; "
        f"potency 90 % width {potency['width_share_of_prior_log10']:.2f} of the prior's "
        f"(under IL-2: {potency_il2['width_share_of_prior_log10']:.2f})")
    post_ds = xr.Dataset(
        {"theta": (("draw", "parameter"), theta, {"long_name": "posterior draw of the parameter (unit per "
                                                               "parameter in parameter_unit)"}),
         "u": (("draw", "parameter"), post.draws, {"long_name": "posterior draw on the prior's unit cube",
                                                   "units": "1"}),
         "nk_potency": (("draw",), pot_post, {"long_name": "blasts killed per donor NK per day in marrow "
                                                           "(nksim.calibration.joint.nk_potency)",
                                              "units": "day-1"}),
         "nk_potency_il2": (("draw",), pot_post_il2, {"long_name": "blasts killed per donor NK per day in marrow "
                                                                   "under an s.c. IL-2 course (nksim.calibration."
                                                                   "joint.nk_potency, activation 0.14)",
                                                      "units": "day-1"})},
        coords={"parameter": [f.key for f in fit], "parameter_unit": ("parameter", [f.unit for f in fit])},
        attrs={**provenance("nksim joint calibration across trials: posterior draws",
                            "posterior of the fitted parameters given the registry's calibration targets (emulated "
                            "likelihood, SMC)"),
               "ess": post.ess, "tempering_rounds": post.rounds, "log_evidence": post.log_evidence,
               "acceptance": post.acceptance, "bank_points": int(ds_bank.sizes["point"]),
               "rows_fitted": " ".join(o.name for o in fitted), "rows_excluded": json.dumps(excluded),
               "spec": spec.source, "seed": int(seed)})
    write_netcdf(post_ds, out / "posterior.nc", overwrite=True)
    # the draws as a sweep reads them (cohort.draws_from = "<this file>": the first n rows), in random order
    order = np.random.default_rng(seed + 5).permutation(theta.shape[0])
    pd.DataFrame(theta[order], columns=[f.key for f in fit]).to_csv(out / "posterior_draws.csv", index=False,
                                                                     float_format="%.6g")
    pd.DataFrame(par_rows).to_csv(out / "posterior.csv", index=False)
    # --- posterior predictive check by simulation
    m = min(ppc_draws, theta.shape[0])
    idx = np.random.default_rng(seed + 1).choice(theta.shape[0], m, replace=False)
    say(f"posterior predictive check: {m} draws simulated with the published trial sizes")
    ppc = predictive_check(spec, rows, theta[idx], seed=seed, workers=workers)
    for r in ppc:
        r["fitted"] = r["row"] not in excluded
    pd.DataFrame(ppc).to_csv(out / "ppc.csv", index=False)
    # --- the trial's outcome table (stage A's fit) under the joint posterior
    table: list[dict[str, Any]] = []
    if outcome_table is not None:
        from .joint_table import outcome_table_check, table_rows

        say(f"the trial's outcome table at {table_draws} joint posterior draws (with stage A's draws)")
        tsel = np.random.default_rng(seed + 6).choice(theta.shape[0], min(table_draws, theta.shape[0]),
                                                      replace=False)
        tds = outcome_table_check(outcome_table[0], outcome_table[1],
                                  {f.key: theta[tsel, j] for j, f in enumerate(fit)}, draws=table_draws,
                                  seed=seed, workers=workers)
        write_netcdf(tds, out / "outcome_table.nc", overwrite=True)
        table = table_rows(tds)
        pd.DataFrame(table).to_csv(out / "outcome_table.csv", index=False)
    # --- recovery study
    recovery: dict[str, Any] = {}
    rec_rows: list[dict[str, Any]] = []
    if recovery_datasets > 0:
        recovery, rec_rows = _recovery(spec, em, fit, fitted, p_sim=p_sim, sd_obs=sd_obs, log_prior=log_prior,
                                       prior_lo=plo, prior_hi=phi, datasets=recovery_datasets,
                                       particles=recovery_particles, seed=seed, workers=workers, out=out,
                                       provenance=provenance, say=say)
        pd.DataFrame(rec_rows).to_csv(out / "recovery.csv", index=False)
    # --- every registry row scored under the posterior (targets and held-out rows, nksim score's rules)
    scores_md = ""
    held = {}
    if score_draws > 0:
        from .scoring import score_registry, scores_markdown, scores_summary

        say(f"scoring the registry under the posterior: {score_draws} virtual trials per protocol, one per draw")
        n_s = min(score_draws, theta.shape[0])
        sel = np.random.default_rng(seed + 4).choice(theta.shape[0], n_s, replace=False)
        sets = [base.with_values({f.key: float(theta[i, j]) for j, f in enumerate(fit)},
                                 origin=f"{base.origin} (joint posterior draw {i})") for i in sel]
        sc = score_registry(sets, registry, roles=("target", "held_out"), replicates=score_draws, seed=seed,
                            lattice_overrides=spec.lattice_overrides, workers=workers, progress=False)
        write_netcdf(sc, out / "scores.nc", overwrite=True)
        scores_md = scores_markdown(sc)
        ho = sc.where(sc["role"] == "held_out", drop=True)
        agree = ho["agrees"].values
        scored = np.isfinite(agree)
        held = {"scored": int(scored.sum()), "agree": int(np.nansum(agree)),
                "trials": int(len(set(ho["trial"].values[scored]))), "summary": scores_summary(sc)}
    summary = {
        "bank_points": int(ds_bank.sizes["point"]), "bank_cpu_seconds": float(ds_bank["cpu_seconds"].sum()),
        "bank_neutral_parameters": neutral_keys,
        "rows_fitted": [o.name for o in fitted], "rows_excluded": excluded,
        "posterior": {"ess": post.ess, "rounds": post.rounds, "acceptance": post.acceptance,
                      "log_evidence": post.log_evidence},
        "learnt": [r["parameter"] for r in par_rows if r["learnt"]],
        "potency": potency, "potency_il2": potency_il2,
        "ppc_inside": sum(r["inside"] for r in ppc), "ppc_rows": len(ppc),
        "ppc_fitted_inside": sum(r["inside"] for r in ppc if r["fitted"]),
        "ppc_fitted_rows": sum(r["fitted"] for r in ppc),
        "ppc_monte_carlo": [r["row"] for r in ppc if r["monte_carlo"]],
        "recovery": recovery, "held_out": held, "outcome_table": table,
        "wall_seconds": time.perf_counter() - t_start, "seed": int(seed),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "REPORT.md").write_text(report_markdown(summary, par_rows, ppc, rec_rows, emu, scores_md))
    say(f"done: {summary['ppc_inside']}/{summary['ppc_rows']} targets inside their 90 % PPI"
        + (f"; recovery coverage {recovery['coverage']:.2f}" if recovery else ""))
    return summary


def _recovery(spec: JointSpec, em, fit, fitted, *, p_sim: ParameterSet, sd_obs: dict[str, float], log_prior,
              prior_lo: np.ndarray, prior_hi: np.ndarray, datasets: int, particles: int, seed: int, workers: int,
              out: Path, provenance, say) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The recovery study (``recovery.nc``): synthetic datasets simulated at prior draws, fitted as the real data.

    ``em``: the fitted rows' emulators; ``fit``/``fitted``: the fitted parameters and rows; ``p_sim``: the bank's
    parameter set (its resolution); ``sd_obs``: each quantity row's observation error (log10), added to its
    synthetic value; ``log_prior``: the fit's prior on the unit cube; ``prior_lo``/``prior_hi``: each parameter's
    bounds on the sampling scale (for the widths as shares of the prior); ``datasets``: synthetic datasets;
    ``particles``: SMC particles per synthetic fit. Returns the summary and one row per parameter.
    """
    import xarray as xr

    from ..io import write_netcdf

    say(f"recovery study: {datasets} synthetic datasets simulated at prior draws")
    truths = _prior_draws(spec, datasets, np.random.default_rng(seed + 2))
    truths_theta = prior_unit_to_values(fit, truths)

    def synth(i: int) -> dict[str, tuple[float, float]]:
        return simulate_dataset(p_sim, fit, truths_theta[i], fitted, derived_seed(seed, f"recovery:{i}"))

    synthetic = ordered_thread_map(synth, range(datasets), workers)
    # quantity rows: the synthetic observation gets the same observation error as the real one
    rng_obs = np.random.default_rng(seed + 3)
    for d in synthetic:
        for name, sd in sd_obs.items():
            if name in d and sd > 0:
                d[name] = (d[name][0] + rng_obs.normal(0.0, sd), sd)
    say("recovery study: fitting the synthetic datasets")
    cov = coverage_study(em, truths, synthetic, seed=seed + 10, log_prior=log_prior, particles=particles)
    covered = cov.covered
    rec_rows = []
    for j, f in enumerate(fit):
        width = max(prior_hi[j] - prior_lo[j], 1e-12)
        rec_rows.append({"parameter": f.key, "coverage": float(covered[:, j].mean()),
                         "median_width_share_of_prior": float(np.median(cov.width[:, j]) / width)})
    k_cov = int(covered.sum())
    n_cov = int(covered.size)
    ci = clopper_pearson(k_cov, n_cov)
    recovery = {"datasets": datasets, "pairs": n_cov, "covered": k_cov, "coverage": k_cov / n_cov,
                "coverage_95ci": list(ci), "target": [0.80, 0.97]}
    rec_ds = xr.Dataset(
        {"truth_u": (("dataset", "parameter"), cov.truth_u), "lo": (("dataset", "parameter"), cov.lo),
         "hi": (("dataset", "parameter"), cov.hi), "rank": (("dataset", "parameter"), cov.ranks),
         "ess": (("dataset",), cov.ess)},
        coords={"parameter": [f.key for f in fit]},
        attrs={**provenance("nksim joint calibration: recovery study on synthetic datasets",
                            "synthetic datasets simulated by nksim at prior draws, fitted as the real data"),
               "level": LEVEL, "coverage": recovery["coverage"]})
    write_netcdf(rec_ds, out / "recovery.nc", overwrite=True)
    return recovery, rec_rows


def _potency_summary(definition: str, theta_prior: dict[str, np.ndarray], theta_post: dict[str, np.ndarray],
                     base: ParameterSet, activation: float) -> tuple[dict[str, Any], np.ndarray]:
    """Prior and posterior 5/50/95 % of :func:`~nksim.calibration.joint.nk_potency` at ``activation``.

    Returns the summary (units, definition, quantiles, the posterior's 90 % width on the log10 scale as a share
    of the prior's, the default model's value) and the posterior draws' potencies.
    """
    pot_post = nk_potency(theta_post, base, activation=activation)
    pot_prior = nk_potency(theta_prior, base, activation=activation)
    pp = np.log10(np.quantile(pot_prior, [0.05, 0.5, 0.95]))
    pq = np.log10(np.quantile(pot_post, [0.05, 0.5, 0.95]))
    return ({"units": "day-1", "definition": definition, "activation": activation,
             "prior_q05_q50_q95": (10 ** pp).tolist(), "posterior_q05_q50_q95": (10 ** pq).tolist(),
             "width_share_of_prior_log10": float((pq[2] - pq[0]) / (pp[2] - pp[0])),
             "default": float(nk_potency({}, base, activation=activation))}, pot_post)


def _potency_lines(pot: dict[str, Any] | None) -> list[str]:
    """Report lines of a second derived potency (none for a summary written before it existed)."""
    if not pot:
        return []
    return ["", pot["definition"], "",
            f"Prior 5/50/95 %: {', '.join(_fmt(x) for x in pot['prior_q05_q50_q95'])} {pot['units']}; posterior: "
            f"{', '.join(_fmt(x) for x in pot['posterior_q05_q50_q95'])}; default model {_fmt(pot['default'])}. "
            f"Posterior 90 % width (log scale) = {pot['width_share_of_prior_log10']:.2f} of the prior's."]


def _tail_cell(r: dict[str, Any]) -> str:
    """A predictive check row's smaller tail probability and its exact interval, flagged when Monte Carlo."""
    if not math.isfinite(r.get("tail", math.nan)):
        return "nan"
    cell = f"{100 * r['tail']:.1f} % ({100 * r['tail_lo']:.1f}-{100 * r['tail_hi']:.1f})"
    return cell + (" *Monte Carlo*" if r["monte_carlo"] else "")


def report_markdown(summary: dict[str, Any], par_rows: list[dict], ppc: list[dict], rec_rows: list[dict],
                    emu: list[dict], scores_md: str = "") -> str:
    """The generated tables of the joint calibration (``REPORT.md``)."""
    rec = summary.get("recovery") or {}
    pot = summary["potency"]
    parts = [
        "# Joint calibration across trials: generated report",
        "",
        f"Bank: {summary['bank_points']} points ({summary['bank_cpu_seconds'] / 3600:.1f} CPU hours). Fitted rows: "
        f"{len(summary['rows_fitted'])}; excluded: {', '.join(summary['rows_excluded']) or 'none'}. Posterior: "
        f"SMC, {summary['posterior']['rounds']} tempering rounds, ESS {summary['posterior']['ess']:.0f}, "
        f"acceptance {summary['posterior']['acceptance']:.2f}. Wall time {summary['wall_seconds'] / 60:.1f} min.",
        "",
        "## Targets: posterior predictive check (simulated with the published trial sizes)",
        "",
        md_table(["row", "observed", "simulated median", "90 % interval", "inside", "smaller tail P (95 % CI)",
                  "fitted"],
                 [[r["row"], r["observed_text"], _fmt(r["median"]), f"{_fmt(r['lo'])} - {_fmt(r['hi'])}",
                   "yes" if r["inside"] else "**no**", _tail_cell(r), "yes" if r["fitted"] else "excluded"]
                  for r in ppc]),
        "",
        f"{summary['ppc_inside']} of {summary['ppc_rows']} targets inside ({summary['ppc_fitted_inside']} of "
        f"{summary['ppc_fitted_rows']} fitted rows). The smaller tail P is P(X >= observed) or P(X <= observed) "
        "over the draws, with its exact interval: a row is inside when it exceeds 5 %; *Monte Carlo* marks a row "
        "whose interval contains 5 % (more draws could turn its verdict: `calibration/joint/tail_check.py`"
        f" settles one). Monte Carlo verdicts: {', '.join(summary.get('ppc_monte_carlo', [])) or 'none'}.",
        "",
        "## Parameters: prior and posterior",
        "",
        "Width: the posterior 90 % interval as a share of the prior's, on the sampling scale; learnt: <= "
        f"{LEARNT_WIDTH}.",
        "",
        md_table(["parameter", "unit", "prior", "default", "posterior median", "90 % interval", "width", "learnt"],
                  [[r["parameter"], r["unit"], f"{_fmt(r['prior_lo'])} - {_fmt(r['prior_hi'])} ({r['scale']})",
                    _fmt(r["default"]), _fmt(r["median"]), f"{_fmt(r['q05'])} - {_fmt(r['q95'])}",
                    f"{r['width_share_of_prior']:.2f}", "yes" if r["learnt"] else "no"] for r in par_rows]),
        "",
        "## NK potency (derived)",
        "",
        f"{pot['definition']}",
        "",
        f"Prior 5/50/95 %: {', '.join(_fmt(x) for x in pot['prior_q05_q50_q95'])} {pot['units']}; posterior: "
        f"{', '.join(_fmt(x) for x in pot['posterior_q05_q50_q95'])}; default model {_fmt(pot['default'])}. "
        f"Posterior 90 % width (log scale) = {pot['width_share_of_prior_log10']:.2f} of the prior's.",
        *_potency_lines(summary.get("potency_il2")),
        "",
        "## The trial's outcome table (stage A's fit) under the joint posterior",
        "",
        *_table_section(summary.get("outcome_table") or []),
        "",
        "## Recovery study",
        "",
        *_recovery_section(rec, rec_rows),
        "",
        "## Every registry row under the posterior (nksim score's rules)",
        "",
        (f"{summary['held_out'].get('summary', '')}. Held-out rows: {summary['held_out'].get('agree', 0)} of "
         f"{summary['held_out'].get('scored', 0)} scored rows agree, from {summary['held_out'].get('trials', 0)} "
         "trials." if summary.get("held_out") else "Not run."),
        "",
        scores_md,
        "",
        "## Emulators",
        "",
        "Skill: 1 - out-of-fold log-loss / log-loss of a constant (shares); 1 - residual / total variance "
        "(quantities).",
        "",
        md_table(["row", "kind", "examples", "skill", "fitted"],
                  [[e["row"], e["kind"], e["examples"], _fmt(e.get("skill", math.nan)),
                    "yes" if e["fitted"] else "excluded"] for e in emu]),
        "",
    ]
    return "\n".join(parts)


def _table_section(table: list[dict[str, Any]]) -> list[str]:
    if not table:
        return ["Not run."]
    inside = sum(bool(r["inside"]) for r in table)
    return [
        "Simulated with stage A's configuration (`calibration/ahmadvand2023.toml`: its resolution, the trial's "
        "twins to day 270, its analogue targets), one virtual trial per draw: stage A's posterior draw for the "
        "parameters stage A fitted, the joint posterior draw for the joint fit's parameters "
        "(`nksim.calibration.joint_table`).",
        "",
        md_table(["statistic", "observed", "90 % predictive interval", "inside"],
                  [[r["long_name"], _fmt(float(r["observed"])), f"{_fmt(float(r['lo']))} - {_fmt(float(r['hi']))}",
                    "yes" if r["inside"] else "**no**"] for r in table]),
        "",
        f"{inside} of {len(table)} statistics inside.",
    ]


def _recovery_section(rec: dict[str, Any], rec_rows: list[dict[str, Any]]) -> list[str]:
    if not rec:
        return ["Not run."]
    return [
        f"{rec['datasets']} synthetic datasets simulated by nksim at prior draws, each fitted as the real data: "
        f"{rec['covered']} of {rec['pairs']} (dataset, parameter) pairs inside their 90 % interval = "
        f"**{rec['coverage']:.1%}** (exact 95 % CI {rec['coverage_95ci'][0]:.1%} - {rec['coverage_95ci'][1]:.1%}; "
        "target 80 - 97 %).",
        "",
        md_table(["parameter", "coverage", "median 90 % width (share of prior)"],
                  [[r["parameter"], f"{r['coverage']:.2f}", f"{r['median_width_share_of_prior']:.2f}"]
                   for r in rec_rows]),
    ]
