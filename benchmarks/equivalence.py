"""Equivalence of two engine versions: the same virtual trials, summarised and compared with fixed tolerances.

Issue "Ten times the simulations per core-second": the quiet-day engine (0.5.0) changes same-seed
outputs, so it must be shown to give the numbers of the step-by-step engine (0.4.0) within stated
tolerances. Two steps, each run from the checkout whose engine it measures::

    python benchmarks/equivalence.py run OUT.nc [--trials 200]      # in each checkout (or PYTHONPATH=<old tree>)
    python benchmarks/equivalence.py compare OLD.nc NEW.nc --report benchmarks/equivalence/REPORT.md

``run`` simulates every shipped protocol (``experiments/protocols/``) at the calibration resolution
(``calibration/ahmadvand2023.toml [simulator]``: 5 x 5 voxels of 1.6 mm, 2-hour steps) for
``--trials`` virtual trials (every patient of the protocol, ``replicates = trials``, seed 2026) and
keeps, per simulation, the summaries the calibration and the schedule study read (:data:`SUMMARIES`).
The two runs share their seeds, so each simulation of one has its twin in the other (common random
numbers: the quiet days draw nothing from the agents' streams, so most twins stay close).

``compare`` decides, per protocol and summary, with the tolerances fixed below **before** any run:

* the verdict is a paired equivalence test (two one-sided tests at 5 %): the 95 % confidence
  interval of the mean paired difference (new - old; log ratio for the positive quantities) must
  lie within the tolerance ``+-delta`` of :data:`SUMMARIES`;
* beside it, a two-sample test of the two distributions (Fisher's exact test for shares,
  Mann-Whitney U otherwise) and its p-value: a difference it detects is reported, not hidden.

Kaplan-Meier progression-free survival at day 270 and the restricted mean progression-free time
(to day 365) are compared per protocol by their difference (bootstrap over virtual trials, 1000
resamples, seed 1) against the tolerances in :data:`COHORT_TOLERANCES`.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
#: The calibration simulator's resolution (calibration/ahmadvand2023.toml [simulator]).
RESOLUTION = {"lattice.side": 5, "lattice.voxel_side": 1600.0, "numerics.dt": 2.0}
SEED = 2026
#: summary -> (kind, tolerance delta, description). kind "share": per-simulation 0/1, delta on the mean
#: difference (absolute, share points); "log": positive quantity, delta on the mean log ratio.
SUMMARIES: dict[str, tuple[str, float, str]] = {
    "pd_first": ("share", 0.02, "PD at the first assessment"),
    "response_first": ("share", 0.02, "CR or PR at the first assessment"),
    "progressed_270": ("share", 0.03, "PD called by day 270"),
    "peak_chimerism_pbmc": ("log", float(np.log(1.05)), "peak donor chimerism of blood lymphocytes, days 1-28"),
    "peak_chimerism_nk": ("log", float(np.log(1.05)), "peak donor chimerism of blood NK, days 1-28"),
    "donor_nk_day14": ("log", float(np.log(1.05)), "donor NK per uL blood on day 14 (+1e-3)"),
    "expanded_day14": ("share", 0.02, "more than 100 donor NK per uL blood on day 14"),
    "lymphocytes_day0": ("log", float(np.log(1.01)), "blood lymphocytes per uL on day 0"),
    "il15_peak": ("log", float(np.log(1.01)), "peak IL-15 (fold of baseline), days -10 to 28"),
    "host_t_day90": ("log", float(np.log(1.01)), "host T cells per uL on day 90"),
    "blast_pct_day90": ("log", float(np.log(1.01)), "marrow blasts (percent) on day 90"),
    "blast_pct_day270": ("log", float(np.log(1.01)), "marrow blasts (percent) on day 270"),
}
#: cohort statistic -> tolerance (absolute): Kaplan-Meier PFS at day 270 (share points), RMST to day 365 (days)
COHORT_TOLERANCES = {"pfs_270": 0.03, "rmst_365": 5.0}


def _at(ds, var: str, day: float) -> np.ndarray:
    """``var`` on ``day`` (NaN where the simulation does not reach it), shape (patient, replicate)."""
    if day < float(ds.time.min()) or day > float(ds.time.max()):
        return np.full((ds.sizes["patient"], ds.sizes["replicate"]), np.nan)
    return ds[var].sel(time=day).values.astype(float)


def summarise(ds) -> dict[str, np.ndarray]:
    """Per-simulation summaries (patient, replicate) of a cohort Dataset (see :data:`SUMMARIES`)."""
    from nksim.observables import RESPONSE_CODES

    first = ds.response.isel(assessment=0).values
    win = ds.sel(time=slice(1, 28))
    lymph = ds.host_nk_blood + ds.host_t_blood + ds.donor_nk_blood
    ttp = ds.time_to_progression.values.astype(float)
    out = {
        "pd_first": (first == RESPONSE_CODES["PD"]).astype(float),
        "response_first": np.isin(first, [RESPONSE_CODES["CR"], RESPONSE_CODES["PR"]]).astype(float),
        "progressed_270": (np.nan_to_num(ttp, nan=np.inf) <= 270).astype(float)
        if float(ds.time.max()) >= 270 else np.full(first.shape, np.nan),
        "peak_chimerism_pbmc": win.donor_chimerism_pbmc.max("time").values,
        "peak_chimerism_nk": win.donor_chimerism_nk.max("time").values,
        "donor_nk_day14": _at(ds, "donor_nk_blood", 14.0) + 1e-3,
        "expanded_day14": (_at(ds, "donor_nk_blood", 14.0) > 100.0).astype(float),
        "lymphocytes_day0": lymph.sel(time=0.0).values,
        "il15_peak": ds.il15.sel(time=slice(-10, 28)).max("time").values,
        "host_t_day90": _at(ds, "host_t_blood", 90.0),
        "blast_pct_day90": _at(ds, "marrow_blast_pct", 90.0),
        "blast_pct_day270": _at(ds, "marrow_blast_pct", 270.0),
        "ttp": ttp,
    }
    return out


def run(out: Path, trials: int, workers: int) -> None:
    """Simulate every shipped protocol and write the per-simulation summaries to ``out`` (netCDF)."""
    import xarray as xr

    import nksim
    from nksim.resources import data_path

    params = nksim.load_parameters("default").with_values(RESOLUTION)
    nksim.simulate(params, "ahmadvand2023")  # load (or compile) the kernel before anything is timed
    data = {}
    seconds = {}
    for path in sorted(data_path("protocols").glob("*.toml")):
        proto = nksim.load_protocol(path)
        t0 = time.process_time()
        ds = nksim.simulate_cohort(params, proto, replicates=trials, seed=SEED, workers=workers)
        seconds[proto.name] = time.process_time() - t0
        end = float(ds.time.max())
        for name, values in summarise(ds).items():
            data[f"{proto.name}__{name}"] = xr.DataArray(np.asarray(values, dtype=float).reshape(-1),
                                                           dims=(f"{proto.name}__sim",))
        data[f"{proto.name}__end_day"] = xr.DataArray(end)
        print(f"{proto.name}: {ds.sizes['patient']} patients x {trials} trials in {seconds[proto.name]:.1f} s CPU",
              flush=True)
    res = xr.Dataset(data, attrs={"nksim_version": nksim.__version__, "trials": trials, "seed": SEED,
                                  "resolution": json.dumps(RESOLUTION), "cpu_seconds": json.dumps(seconds),
                                  "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")})
    out.parent.mkdir(parents=True, exist_ok=True)
    res.to_netcdf(out)


def _paired(kind: str, old: np.ndarray, new: np.ndarray) -> tuple[float, float, float, int]:
    """(mean paired difference, 95 % CI low, high, n) of new - old (log ratio for kind 'log')."""
    from scipy import stats

    ok = np.isfinite(old) & np.isfinite(new)
    if kind == "log":
        ok &= (old > 0) & (new > 0)
        d = np.log(new[ok]) - np.log(old[ok])
    else:
        d = new[ok] - old[ok]
    n = int(d.size)
    if n < 2:
        return float("nan"), float("nan"), float("nan"), n
    m = float(d.mean())
    se = float(d.std(ddof=1) / np.sqrt(n))
    if se == 0.0:
        return m, m, m, n
    q = float(stats.t.ppf(0.975, n - 1))
    return m, m - q * se, m + q * se, n


def _two_sample(kind: str, old: np.ndarray, new: np.ndarray) -> float:
    """p-value of a two-sample test of the distributions: Fisher's exact test (shares), else Mann-Whitney U."""
    from scipy import stats

    old = old[np.isfinite(old)]
    new = new[np.isfinite(new)]
    if old.size < 2 or new.size < 2:
        return float("nan")
    if kind == "share":
        table = [[int(old.sum()), int(old.size - old.sum())], [int(new.sum()), int(new.size - new.sum())]]
        return float(stats.fisher_exact(table)[1])
    if np.all(old == old[0]) and np.all(new == old[0]):
        return 1.0
    return float(stats.mannwhitneyu(old, new).pvalue)


def _km(ttp: np.ndarray, end: float) -> tuple[float, float]:
    """Kaplan-Meier PFS at day 270 and restricted mean progression-free time to min(365, end)."""
    from nksim.observables import km_curve, km_survival

    pfs = km_survival(ttp, end, 270.0) if end >= 270 else float("nan")
    horizon = min(365.0, end)
    t, s = km_curve(ttp, end)
    edges = np.clip(np.append(t, horizon), None, horizon)
    rmst = float(np.sum(s * np.diff(edges)))
    return pfs, rmst


def compare(old_path: Path, new_path: Path, report: Path | None) -> int:
    """Compare two ``run`` files; print (and write) the verdict table. Returns the number of failed rows."""
    import xarray as xr

    old = xr.open_dataset(old_path)
    new = xr.open_dataset(new_path)
    if old.attrs["trials"] != new.attrs["trials"] or old.attrs["seed"] != new.attrs["seed"]:
        raise SystemExit("the two runs have different trials or seeds: not paired")
    protocols = sorted({k.split("__")[0] for k in old.data_vars})
    rows = []
    failed = 0
    for proto in protocols:
        end = float(old[f"{proto}__end_day"])
        for name, (kind, delta, text) in SUMMARIES.items():
            a = old[f"{proto}__{name}"].values
            b = new[f"{proto}__{name}"].values
            if not np.isfinite(a).any():
                continue
            mean, lo, hi, n = _paired(kind, a, b)
            p2 = _two_sample(kind, a, b)
            ok = bool(np.isfinite(lo) and -delta <= lo and hi <= delta)
            failed += not ok
            rows.append((proto, text, kind, n, float(np.nanmean(a)), float(np.nanmean(b)), mean, lo, hi, delta, p2,
                         ok))
        ta = old[f"{proto}__ttp"].values
        tb = new[f"{proto}__ttp"].values
        if end >= 28:
            stat_a = _km(ta, end)
            stat_b = _km(tb, end)
            rng = np.random.default_rng(1)
            n_trials = int(old.attrs["trials"])
            n_pat = ta.size // n_trials
            ta2 = ta.reshape(n_pat, n_trials)
            tb2 = tb.reshape(n_pat, n_trials)
            boot = []
            for _ in range(1000):
                pick = rng.integers(0, n_trials, n_trials)
                sa = _km(ta2[:, pick].ravel(), end)
                sb = _km(tb2[:, pick].ravel(), end)
                boot.append((sb[0] - sa[0], sb[1] - sa[1]))
            boot = np.array(boot)
            for j, (key, text) in enumerate((("pfs_270", "Kaplan-Meier PFS at day 270"),
                                             ("rmst_365", "restricted mean progression-free time (days)"))):
                if not np.isfinite(stat_a[j]):
                    continue
                lo, hi = np.percentile(boot[:, j], [2.5, 97.5])
                delta = COHORT_TOLERANCES[key]
                ok = bool(-delta <= lo and hi <= delta)
                failed += not ok
                rows.append((proto, text, "cohort", ta.size, stat_a[j], stat_b[j], stat_b[j] - stat_a[j], float(lo),
                             float(hi), delta, float("nan"), ok))
    lines = [f"Old: nksim {old.attrs['nksim_version']} ({old_path.name}); new: nksim {new.attrs['nksim_version']} "
             f"({new_path.name}); {old.attrs['trials']} virtual trials per protocol, seed {old.attrs['seed']}, "
             f"resolution {old.attrs['resolution']}.", "",
             "| protocol | summary | kind | n | old mean | new mean | paired diff (new - old) | 95 % CI | tolerance "
             "| two-sample p | equivalent |", "|---|---|---|---:|---:|---:|---:|---|---:|---:|---|"]
    for proto, text, kind, n, ma, mb, mean, lo, hi, delta, p2, ok in rows:
        unit = "log ratio" if kind == "log" else ("points" if kind != "cohort" else "")
        lines.append(f"| {proto} | {text} | {kind} | {n} | {ma:.4g} | {mb:.4g} | {mean:+.4f} {unit} | "
                     f"[{lo:+.4f}, {hi:+.4f}] | ±{delta:.4g} | {p2:.3g} | {'yes' if ok else '**NO**'} |")
    cpu_old = json.loads(old.attrs["cpu_seconds"])
    cpu_new = json.loads(new.attrs["cpu_seconds"])
    lines += ["", "| protocol | CPU s old | CPU s new | ratio |", "|---|---:|---:|---:|"]
    for proto in protocols:
        ratio = cpu_old[proto] / cpu_new[proto]
        lines.append(f"| {proto} | {cpu_old[proto]:.1f} | {cpu_new[proto]:.1f} | {ratio:.2f}x |")
    lines += ["", f"{len(rows) - failed} of {len(rows)} rows equivalent within their tolerance."]
    text = "\n".join(lines)
    print(text)
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(text + "\n")
    return failed


def main(argv: list[str] | None = None) -> int:
    """Command line: ``run`` or ``compare`` (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("out", type=Path)
    r.add_argument("--trials", type=int, default=200)
    r.add_argument("--workers", type=int, default=2)
    c = sub.add_parser("compare")
    c.add_argument("old", type=Path)
    c.add_argument("new", type=Path)
    c.add_argument("--report", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.cmd == "run":
        run(args.out, args.trials, args.workers)
        return 0
    return 1 if compare(args.old, args.new, args.report) else 0


if __name__ == "__main__":
    sys.exit(main())
