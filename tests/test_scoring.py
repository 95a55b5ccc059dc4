"""Scoring the trial registry against a model (nksim.calibration.scoring, ``nksim score``).

The verdict of every check on constructed values; the scorer on a small sub-registry (3 protocols)
at a tiny lattice: deterministic for a seed and independent of workers, intervals containing their
medians, bad inputs refused; the command's files, its lock and what it leaves on disk.
"""
from __future__ import annotations

import math
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import nksim
from nksim.calibration import registry as R
from nksim.calibration import scoring as S
from nksim.cli import main
from nksim.io.lock import OUTPUT_LOCK_NAME, output_lock

TINY = {"lattice.side": 4, "lattice.voxel_side": 4000.0}
#: Bachanova 2014 (targets, held-out, context), Miller Flu and low-dose Cy (held-out rows, some 'lower' than a
#: Bachanova row): 3 protocols simulated to day 28.
PROTOCOLS = ("bachanova2014_hi_cy_flu", "miller2005_flu", "miller2005_lo_cy_mp")
ARMS = ("bachanova2014_hi_cy_flu", "miller2005_flu", "miller2005_lo_cy_mp")
REGISTRY_DIR = R.REGISTRY_DIR


@pytest.fixture(scope="module")
def reg() -> R.Registry:
    return R.load_registry()


@pytest.fixture(scope="module")
def sub_registry(tmp_path_factory) -> Path:
    """A registry folder with the three arms' files only."""
    folder = tmp_path_factory.mktemp("registry") / "trials"
    folder.mkdir()
    for arm in ARMS:
        (folder / f"{arm}.toml").write_bytes((REGISTRY_DIR / f"{arm}.toml").read_bytes())
    return folder


@pytest.fixture(scope="module")
def scored(sub_registry):
    return S.score_registry("default", sub_registry, roles=("target", "held_out", "context"), replicates=3, seed=11,
                            resolution="default", lattice_overrides=TINY, progress=False, draws=400)


# ----------------------------------------------------------------------------- verdicts on constructed values
def _obs(reg, name, **changes):
    return replace(reg.observation(name), **changes)


def test_binomial_90(reg):
    o = reg.observation("bjorklund_cr_first12")           # 4/12, binomial_90
    assert S.verdict(o, 0.3, 0.1, 0.5) == (True, "")
    assert S.verdict(o, 0.1, 0.0, 0.25)[0] is False      # 0.333 above the interval
    assert S.verdict(o, 0.5, 1 / 3, 0.6)[0] is True       # on the edge: inside
    assert S.verdict(o, math.nan, math.nan, math.nan)[0] is False  # nothing simulated: fails


def test_factor_and_range(reg):
    o = reg.observation("bachanova_il2dt_peak_in_expanders")  # 1000 uL-1 within a factor 3
    assert S.verdict(o, 400.0, 100.0, 900.0)[0] is True
    assert S.verdict(o, 3000.0, 1.0, 1e4)[0] is True          # the edge
    assert S.verdict(o, 300.0, 100.0, 900.0)[0] is False
    assert S.verdict(o, 3100.0, 100.0, 9000.0)[0] is False
    agrees, note = S.verdict(o, math.nan, math.nan, math.nan)  # no simulated expander: fails by the rule
    assert agrees is False and "undefined" in note
    rfs = reg.observation("fehniger_rfs_d3e6")                # 337 days; not reached (inf) fails
    assert S.verdict(rfs, math.inf, 300.0, math.inf)[0] is False
    assert S.verdict(rfs, 200.0, 90.0, math.inf)[0] is True
    shapiro = reg.observation("shapiro_fold_d28")             # a reported range 10-50 with factor 2
    assert shapiro.value_range == (10.0, 50.0)
    assert S.verdict(shapiro, 5.0, 1, 9)[0] is True and S.verdict(shapiro, 100.0, 1, 200)[0] is True
    assert S.verdict(shapiro, 4.9, 1, 9)[0] is False and S.verdict(shapiro, 101.0, 1, 200)[0] is False
    day = reg.observation("curti2011_peak_day")               # range [7, 14]
    assert S.verdict(day, 7.0, 1, 20)[0] is True and S.verdict(day, 14.0, 1, 20)[0] is True
    assert S.verdict(day, 15.0, 1, 20)[0] is False and S.verdict(day, 6.0, 1, 20)[0] is False


@pytest.mark.parametrize(("check", "bound", "median", "expected"), [
    ("at_least", 2.0, 2.0, True), ("at_least", 2.0, 1.99, False),
    ("at_most", 0.0, 0.0, True), ("at_most", 0.0, 0.1, False),
    ("above", 1.0, 1.0, False), ("above", 1.0, 1.01, True),
    ("below", 2.0, 2.0, False), ("below", 2.0, 1.5, True),
])
def test_bounds(reg, check, bound, median, expected):
    o = _obs(reg, "bjorklund_treg_rise", check=check, bound=bound)
    assert S.verdict(o, median, median - 1, median + 1)[0] is expected


def test_higher_and_lower_compare_with_versus(reg):
    lower = reg.observation("be_n803_donor_nk_d14")   # lower than be_il2_donor_nk_d14
    higher = reg.observation("be_n803_host_t_d14")    # higher than be_il2_host_t_d14
    assert S.verdict(lower, 1.0, 0, 2, versus_median=5.0)[0] is True
    assert S.verdict(lower, 5.0, 0, 9, versus_median=5.0)[0] is False   # equal is not lower
    assert S.verdict(higher, 300.0, 0, 400, versus_median=40.0)[0] is True
    assert S.verdict(higher, 30.0, 0, 400, versus_median=40.0)[0] is False
    assert S.verdict(higher, 30.0, 0, 400, versus_median=math.nan)[0] is False
    assert S.verdict(higher, math.nan, 0, 400, versus_median=40.0)[0] is False


def test_targets_and_unscored_rows(reg):
    t = reg.observation("bachanova_expansion_d14")    # target 4/42: inside its interval?
    assert S.verdict(t, 0.1, 0.05, 0.2)[0] is True
    assert S.verdict(t, 0.0, 0.0, 0.05)[0] is False
    q = reg.observation("cart_ld_lymphocytes_d0")     # target 100 uL-1
    assert S.verdict(q, 120.0, 60.0, 300.0)[0] is True and S.verdict(q, 96.0, 96.0, 96.0)[0] is False
    assert "90 % predictive interval" in S.target_rule(t) and "42 patients" in S.target_rule(t)
    assert S.verdict(reg.observation("bachanova_cr_pooled"), 0.1, 0.0, 0.2) == (None, "context row (not scored)")
    assert S.verdict(reg.observation("bachanova_dfs_6mo"), math.nan, math.nan, math.nan)[0] is None


def test_derived_seeds_are_stable_and_distinct():
    a = S.derived_seed(20261130, "protocol:bachanova2014_il2dt")
    assert a == S.derived_seed(20261130, "protocol:bachanova2014_il2dt")
    assert 0 <= a < 2**64
    assert a != S.derived_seed(20261130, "protocol:bachanova2014_hi_cy_flu")
    assert a != S.derived_seed(20261131, "protocol:bachanova2014_il2dt")
    # fixed value: a change here changes every published score
    assert S.derived_seed(0, "protocol:x") == int(np.random.SeedSequence(0, spawn_key=tuple(
        int(w) for w in np.frombuffer(__import__("hashlib").sha256(b"protocol:x").digest()[:8], "<u4")))
        .generate_state(1, np.uint64)[0])


def test_protocol_run_cuts_the_protocol(reg):
    obs = [o for o in reg.by_protocol()["fehniger2018_cndo109"] if o.has_counterpart]
    proto, ids = S.protocol_run("fehniger2018_cndo109", obs)
    assert proto.end_day == 365.0 and proto.assessment_days[0] == 28.0 and proto.snapshot_days == ()
    assert len(ids) == len(nksim.load_protocol("fehniger2018_cndo109").patients)
    proto, ids = S.protocol_run("bachanova2014_hi_cy_flu", [reg.observation("bachanova_cr_cohort1")])
    assert proto.end_day == 28.0 and proto.assessment_days == (28.0,)
    full = nksim.load_protocol("bachanova2014_hi_cy_flu")
    assert {full.patient(i).group for i in ids} == {"cd3_depleted"}
    proto, _ = S.protocol_run("cart_flucy_ld", [reg.observation("cart_ld_lymphocytes_d0")])
    assert proto.end_day == 0.0 and proto.assessment_days == (0.0,)


def test_median_interval_covers_the_median_at_its_level():
    """Order-statistic interval of a median: exact coverage 1 - 2 P(B <= k - 1) >= 95 %, B ~ Binomial(n, 1/2).

    Whatever the distribution; 4000 samples of 51 exponentials agree with it within 4 standard errors. NaNs
    dropped, empty -> NaN.
    """
    from scipy.stats import binom

    rng = np.random.default_rng(1)
    true, n, reps = math.log(2.0), 51, 4000                   # the median of Exp(1)
    samples = [np.sort(rng.exponential(size=n)) for _ in range(reps)]
    lo_hi = [R.median_interval(x) for x in samples]
    k = next(i + 1 for i, x in enumerate(samples[0]) if x == lo_hi[0][0])   # the order statistic used
    exact = 1.0 - 2.0 * binom.cdf(k - 1, n, 0.5)
    assert exact >= 0.95 and lo_hi[0][1] == samples[0][n - k]
    cover = np.mean([lo <= true <= hi for lo, hi in lo_hi])
    assert abs(cover - exact) < 4.0 * math.sqrt(exact * (1.0 - exact) / reps)
    lo, hi = R.median_interval(np.array([3.0, np.nan, 1.0, 2.0]))
    assert (lo, hi) == (1.0, 3.0)                             # n = 3: the whole range
    assert all(math.isnan(v) for v in R.median_interval(np.array([np.nan])))


def test_monte_carlo_flags_a_median_whose_interval_holds_a_bound(reg):
    o = reg.observation("bachanova_il2dt_peak_in_expanders")  # factor 3 of 1000: bounds 333.3 and 3000
    assert S.monte_carlo(o, 290.0, 340.0) is True and S.monte_carlo(o, 2900.0, 3100.0) is True
    assert S.monte_carlo(o, 400.0, 900.0) is False and S.monte_carlo(o, 100.0, 330.0) is False
    assert S.monte_carlo(o, math.nan, 340.0) is None
    day = reg.observation("curti2011_peak_day")               # range [7, 14]
    assert S.monte_carlo(day, 6.0, 8.0) is True and S.monte_carlo(day, 8.0, 13.0) is False
    at_least = reg.observation("rubnitz_kir_mismatched_nk_d14")  # at least 5.8
    assert S.monte_carlo(at_least, 5.0, 6.0) is True and S.monte_carlo(at_least, 1.0, 5.0) is False
    lower = reg.observation("be_n803_donor_nk_d14")
    assert S.monte_carlo(lower, 1.0, 3.0, versus_interval=(2.5, 9.0)) is True
    assert S.monte_carlo(lower, 1.0, 2.0, versus_interval=(2.5, 9.0)) is False     # always lower
    assert S.monte_carlo(lower, 0.4, 0.5, versus_interval=(0.3, 0.4)) is False     # never lower (0.4 is not < 0.4)
    assert S.monte_carlo(lower, 1.0, 2.0) is None
    higher = reg.observation("be_n803_host_t_d14")
    assert S.monte_carlo(higher, 3.0, 4.0, versus_interval=(1.0, 3.0)) is True     # 3 is not > 3, 4 is > 1
    assert S.monte_carlo(higher, 3.5, 4.0, versus_interval=(1.0, 3.0)) is False    # always higher
    # degenerate intervals at an inclusive bound are settled; across it they are not
    no_exp = reg.observation("miller_flu_no_expansion")           # at_most 0
    assert S.monte_carlo(no_exp, 0.0, 0.0) is False and S.monte_carlo(no_exp, 0.0, 0.1) is True
    above = reg.observation("miller_lo_cy_detectable_d7")         # above 0
    assert S.monte_carlo(above, 0.0, 0.0) is False and S.monte_carlo(above, 0.0, 0.1) is True
    assert S.monte_carlo(reg.observation("bjorklund_cr_first12"), 0.1, 0.5) is None   # binomial_90: not assessed
    assert S.monte_carlo(reg.observation("bachanova_cr_cohort1"), 0.1, 0.5) is None   # a target: not assessed


# ----------------------------------------------------------------------------- the scorer
def test_scored_rows(scored, sub_registry):
    ds = scored
    sub = R.load_registry(sub_registry)
    assert list(ds["observation"].values) == [o.name for o in sub.observations]
    assert ds.attrs["replicates"] == 3 and ds.attrs["seed"] == 11 and ds.attrs["nksim_version"] == nksim.__version__
    med, lo, hi = (ds[v].values for v in ("simulated_median", "simulated_lo", "simulated_hi"))
    sim = ~np.isnan(med)
    assert sim.sum() >= 15
    assert np.all((lo[sim] <= med[sim]) & (med[sim] <= hi[sim]))   # every interval contains its median
    role, verdict, agrees = (ds[v].values.astype(str) if v != "agrees" else ds[v].values
                             for v in ("role", "verdict", "agrees"))
    assert set(verdict[role == "context"]) == {S.NOT_SCORED}
    assert np.all(np.isnan(agrees[role == "context"]))
    assert set(verdict[role != "context"]) <= {S.AGREES, S.DISAGREES}
    assert np.all(np.isin(agrees[role != "context"], (0.0, 1.0)))
    # the Miller rows 'lower than Hi-Cy/Flu' were compared with the Bachanova cohort-1 row's median
    row = ds.sel(observation="miller_flu_il15_below_hi_cy_flu")
    ref = float(ds["simulated_median"].sel(observation="bachanova_il15_rise_cohort1"))
    assert bool(row["agrees"]) == (float(row["simulated_median"]) < ref)
    # the verdicts are those of verdict() on the stored numbers
    for o in sub.observations:
        r = ds.sel(observation=o.name)
        vm = float(ds["simulated_median"].sel(observation=o.versus)) if o.versus else None
        a, _ = S.verdict(o, float(r["simulated_median"]), float(r["simulated_lo"]), float(r["simulated_hi"]),
                         versus_median=vm)
        assert (math.isnan(float(r["agrees"])) if a is None else float(r["agrees"]) == float(a)), o.name
    # Monte Carlo flags: median-based held-out checks only, each from the stored median interval
    mlo, mhi, mc = (ds[v].values for v in ("median_lo", "median_hi", "monte_carlo"))
    for i, o in enumerate(sub.observations):
        if o.role == "held_out" and o.check in S.MEDIAN_CHECKS and not math.isnan(mlo[i]):
            assert mlo[i] <= med[i] <= mhi[i], o.name
            vs = ((float(ds["median_lo"].sel(observation=o.versus)), float(ds["median_hi"].sel(observation=o.versus)))
                  if o.versus else None)
            assert mc[i] == float(S.monte_carlo(o, mlo[i], mhi[i], versus_interval=vs)), o.name
        else:
            assert math.isnan(mc[i]), o.name
    summary = S.scores_summary(ds)
    assert "scored held-out rows agree" in summary and "targets inside their 90 % interval:" in summary
    assert "| `bachanova_expansion_d14` |" in S.scores_markdown(ds)
    assert S.scores_text(ds).count("\n") == ds.sizes["observation"] + 1
    assert S.scores_csv(ds).splitlines()[0].startswith("observation,trial,arm,protocol")


def test_deterministic_and_independent_of_workers(scored, sub_registry):
    again = S.score_registry("default", sub_registry, roles=("target", "held_out", "context"), replicates=3, seed=11,
                             resolution="default", lattice_overrides=TINY, progress=False, draws=400, workers=2)
    assert again.drop_attrs().identical(scored.drop_attrs())
    assert again.attrs["protocol_seeds"] == scored.attrs["protocol_seeds"]
    other = S.score_registry("default", sub_registry, roles=("held_out",), replicates=3, seed=12,
                             resolution="default", lattice_overrides=TINY, progress=False, draws=400)
    assert not np.array_equal(other["simulated_median"].values,
                              scored["simulated_median"].sel(observation=other["observation"]).values,
                              equal_nan=True)


def test_held_out_only_still_simulates_the_rows_compared_with(sub_registry, tmp_path):
    # a held-out row 'lower' than a context row of another arm: the context row is simulated, not reported
    folder = tmp_path / "trials"
    folder.mkdir()
    for arm in ("berrien_elliott2022_il2", "berrien_elliott2022_n803"):
        (folder / f"{arm}.toml").write_bytes((REGISTRY_DIR / f"{arm}.toml").read_bytes())
    ds = S.score_registry("default", folder, roles=["held_out"], replicates=2, seed=3, resolution="default",
                          lattice_overrides=TINY, progress=False, draws=200)
    assert set(ds["role"].values.astype(str)) == {"held_out"}
    assert "be_il2_donor_nk_d14" not in ds["observation"].values
    assert np.all(np.isin(ds["agrees"].values, (0.0, 1.0)))
    assert set(ds["versus"].values.astype(str)) >= {"be_il2_donor_nk_d14"}


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"roles": ("target", "maybe")}, "unknown role 'maybe'"),
    ({"roles": "target"}, "non-empty list"),
    ({"roles": ()}, "non-empty list"),
    ({"replicates": 0}, "replicates must be an integer >= 1"),
    ({"replicates": 2.0}, "replicates must be an integer >= 1"),
    ({"workers": 0}, "workers must be an integer >= 1"),
    ({"seed": -1}, "seed must be an integer"),
    ({"seed": 1.5}, "a seed must be an integer"),
    ({"resolution": "fine"}, "unknown resolution 'fine'"),
    ({"registry": 5}, "registry must be a Registry"),
    ({"params": "no_such_model"}, "no_such_model"),
])
def test_bad_inputs_are_refused(kwargs, match):
    args = {"params": "default", "progress": False, **kwargs}
    with pytest.raises(nksim.NksimInputError, match=match):
        S.score_registry(**args)


def test_no_row_of_the_roles(sub_registry, tmp_path):
    folder = tmp_path / "trials"
    folder.mkdir()
    (folder / "geller2011_no_tbi.toml").write_bytes((REGISTRY_DIR / "geller2011_no_tbi.toml").read_bytes())
    with pytest.raises(nksim.NksimInputError, match="no row of role"):
        S.score_registry("default", folder, roles=["target"], progress=False)


# ----------------------------------------------------------------------------- the command
def _argv(out, registry, *extra):
    return ["score", "--registry", str(registry), "--replicates", "2", "--seed", "4", "--out", str(out),
            "--no-progress", "--roles", "held_out", *extra]


def test_cli_writes_its_files_and_refuses_to_overwrite(sub_registry, tmp_path, capsys):
    out = tmp_path / "scores"
    assert main(_argv(out, sub_registry)) == 0
    printed = capsys.readouterr().out
    assert "scored held-out rows agree" in printed and f"wrote {out / 'scores.nc'}" in printed
    assert sorted(p.name for p in out.iterdir()) == ["scores.csv", "scores.md", "scores.nc"]  # no lock, no temp
    ds = nksim.open_output(out / "scores.nc")
    assert ds.attrs["replicates"] == 2 and ds.attrs["resolution"] == "calibration"
    assert ds.attrs["lattice_overrides"] == '{"lattice.side": 5, "lattice.voxel_side": 3200.0}'
    assert (out / "scores.csv").read_text().count("\n") == ds.sizes["observation"] + 1
    assert "| observation |" in (out / "scores.md").read_text()
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()}
    assert main(_argv(out, sub_registry, "--markdown")) == 2                    # refused: results there
    assert "--overwrite" in capsys.readouterr().err
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()} == before
    assert main(_argv(out, sub_registry, "--markdown", "--overwrite", "--seed", "5")) == 0
    assert "| `miller_flu_no_il15_rise` |" in capsys.readouterr().out
    assert nksim.open_output(out / "scores.nc").attrs["seed"] == 5


def test_cli_into_a_locked_out_is_refused(sub_registry, tmp_path, monkeypatch, capsys):
    def boom(*args, **kwargs):
        raise AssertionError("started scoring although --out is locked")

    monkeypatch.setattr(S, "score_registry", boom)
    out = tmp_path / "d"
    with output_lock(out, "nksim run"):
        assert main(_argv(out, sub_registry)) == 2
        err = capsys.readouterr().err
        assert f"{out}: is locked by another writer (nksim run, pid {os.getpid()} on host" in err, err
        assert sorted(p.name for p in out.iterdir()) == [OUTPUT_LOCK_NAME]
    assert not out.exists()


def test_cli_interrupted_or_failing_run_leaves_the_earlier_files(sub_registry, tmp_path, monkeypatch, capsys):
    out = tmp_path / "scores"
    assert main(_argv(out, sub_registry)) == 0
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real = S.score_registry

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(S, "score_registry", interrupted)
    assert main(_argv(out, sub_registry, "--overwrite")) == 130
    err = capsys.readouterr().err
    assert "nksim score: interrupted; nothing written" in err and "are unchanged" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    # the scores are computed, but writing scores.nc fails: the text files are not replaced either
    monkeypatch.setattr(S, "score_registry", real)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device", str(out / "scores.nc"))

    monkeypatch.setattr("nksim.io.write_netcdf", full_disk)
    assert main(_argv(out, sub_registry, "--overwrite", "--seed", "9")) == 1
    assert "No space left on device" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before   # no temporary file left either


def test_cli_bad_options(sub_registry, tmp_path, capsys):
    for bad in (["--replicates", "0"], ["--roles", "maybe"], ["--seed", "-1"], ["--workers", "0"]):
        with pytest.raises(SystemExit) as info:
            main(_argv(tmp_path / "x", sub_registry, *bad))
        assert info.value.code == 2
    assert main(["score", "--model", str(tmp_path / "missing.toml"), "--out", str(tmp_path / "y"),
                 "--no-progress"]) == 2
    assert "missing.toml" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()
