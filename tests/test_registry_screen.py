"""Morris screen on the trial registry (nksim.calibration.registry_screen, ``nksim screen --registry``).

A two-protocol sub-registry (NKAE consolidation: Cy/Flu, IL-2, expanded NK; Cooley 2019 subcutaneous
rhIL-15) on a tiny lattice, three parameters: one that acts (``nk.il15_proliferation_max``), one only the
rhIL-15 protocol reads (``rhil15.potency``) and one neither reads (``il2dt.treg_kill``: no IL2DT).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import nksim
from nksim.calibration import registry as R
from nksim.calibration import registry_screen as RS
from nksim.calibration.screen import prior_parameter
from nksim.cli import main

pytest.importorskip("SALib")

TINY = {"lattice.side": 4, "lattice.voxel_side": 4000.0}
ARMS = ("nkae_consolidation", "cooley2019_rhil15_sc")
KEYS = ("nk.il15_proliferation_max", "rhil15.potency", "il2dt.treg_kill")
NKAE_ROWS = ("nkae_peak_chimerism_detected",)
COOLEY_ROWS = ("cooley_sc_expansion_d14", "cooley_sc_remission")


@pytest.fixture(scope="module")
def sub_registry(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("registry") / "trials"
    folder.mkdir()
    for arm in ARMS:
        (folder / f"{arm}.toml").write_bytes((R.REGISTRY_DIR / f"{arm}.toml").read_bytes())
    return folder


def _screen(registry, **kw) -> xr.Dataset:
    args = {"roles": ("target",), "parameters": KEYS, "trajectories": 2, "levels": 4, "replicates": 1, "seed": 7,
            "progress": False, "lattice_overrides": TINY, **kw}
    return RS.run_registry_screen("default", registry, **args)


@pytest.fixture(scope="module")
def screen(sub_registry) -> xr.Dataset:
    return _screen(sub_registry)


def test_dims_outputs_and_attributes(screen):
    assert dict(screen.sizes) == {"parameter": 3, "output": 3, "point": 2 * (3 + 1)}
    assert list(screen["parameter"].values) == list(KEYS)
    assert set(screen["output"].values) == set(NKAE_ROWS + COOLEY_ROWS)
    for v in ("mu", "mu_star", "mu_star_conf", "sigma", "mu_star_rel"):
        assert screen[v].dims == ("parameter", "output")
        assert np.isfinite(screen[v].values).all(), v         # every output defined at every point here
        assert screen[v].attrs["units"] == "1" and screen[v].attrs["long_name"]
    assert np.isfinite(screen["Y"].values).all()
    tr = dict(zip(screen["output"].values, screen["transform"].values))
    assert tr == {"nkae_peak_chimerism_detected": "log10 median", "cooley_sc_expansion_d14": "share",
                  "cooley_sc_remission": "share"}
    assert set(screen["output_units"].values) == {"1"}
    assert all(screen["protocol"].values == [R.load_registry().observation(o).protocol
                                             for o in screen["output"].values])
    assert screen.attrs["replicates"] == 1 and screen.attrs["roles"] == "target"
    assert screen.attrs["trajectories"] == 2 and screen.attrs["levels"] == 4
    assert screen.attrs["lattice_overrides"] == '{"lattice.side": 4, "lattice.voxel_side": 4000.0}'
    shares = screen["Y"].sel(output=list(COOLEY_ROWS)).values
    assert ((shares >= 0) & (shares <= 1)).all()
    text = RS.top_parameters(screen)
    assert all(o in text for o in screen["output"].values)
    csv = RS.registry_screen_csv(screen)
    assert csv.count("\n") == 1 + 3 * 3 and csv.startswith("output,protocol,transform")


def test_common_random_numbers_give_exact_zeros(screen):
    """A parameter no simulated protocol reads has mu* exactly 0; so has one on the protocol that does not read it."""
    ms = screen["mu_star"]
    assert (ms.sel(parameter="il2dt.treg_kill").values == 0).all()
    assert (ms.sel(parameter="rhil15.potency", output=list(NKAE_ROWS)).values == 0).all()
    assert float(ms.sel(parameter="nk.il15_proliferation_max").max()) > 0  # the screen sees a real effect
    assert int(screen["selected"].sel(parameter="il2dt.treg_kill")) == 0


def test_deterministic_for_a_seed_and_independent_of_workers(sub_registry, screen):
    again = _screen(sub_registry, workers=2)
    for v in ("X", "Y", "mu", "mu_star", "sigma"):
        np.testing.assert_array_equal(again[v].values, screen[v].values)


def test_pooled_statistic_matches_the_scorers_per_patient_values(sub_registry):
    from nksim.calibration.scoring import protocol_run, resolution_params
    from nksim.simulate import simulate_cohort

    reg = R.load_registry(sub_registry)
    obs = reg.observation("cooley_sc_expansion_d14")
    proto, ids = protocol_run(obs.protocol, [obs])
    ds = simulate_cohort(resolution_params("default", lattice_overrides=TINY), proto, replicates=2, seed=3,
                         patients=ids)
    flags = R.simulated_per_patient(obs, ds)
    assert RS.pooled_statistic(obs, ds) == pytest.approx(float(np.nanmean(flags)))
    chim = reg.observation("nkae_peak_chimerism_detected")
    assert RS.transform(chim) == "log10 median" and RS.output_units(chim) == "1"
    assert RS.to_output_scale(chim, 100.0) == 2.0 and math.isnan(RS.to_output_scale(chim, 0.0))


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"parameters": ["no.such_key"]}, "not a parameter with a prior"),
    ({"parameters": ["lattice.side"]}, "not a parameter with a prior"),
    ({"parameters": "nk.speed"}, "non-empty list"),
    ({"parameters": []}, "non-empty list"),
    ({"parameters": ["nk.speed", "nk.speed"]}, "named twice"),
    ({"roles": "target"}, "non-empty list"),
    ({"roles": ["maybe"]}, "unknown role"),
    ({"trajectories": 1}, "trajectories must be an integer >= 2"),
    ({"levels": 3}, "levels must be even"),
    ({"levels": 2.0}, "levels must be an integer"),
    ({"replicates": 0}, "replicates must be an integer >= 1"),
    ({"workers": 0}, "workers must be an integer >= 1"),
    ({"seed": -1}, "seed must be an integer"),
    ({"resolution": "fine"}, "unknown resolution"),
    ({"registry": 5}, "registry must be a Registry"),
])
def test_bad_inputs_are_refused(kwargs, match):
    args = {"parameters": ["nk.speed"], "progress": False, **kwargs}
    with pytest.raises(nksim.NksimInputError, match=match):
        RS.run_registry_screen("default", **args)


def test_no_simulated_row_of_the_roles(tmp_path):
    folder = tmp_path / "trials"
    folder.mkdir()
    (folder / "geller2011_no_tbi.toml").write_bytes((R.REGISTRY_DIR / "geller2011_no_tbi.toml").read_bytes())
    with pytest.raises(nksim.NksimInputError, match="no simulated row of role"):
        RS.run_registry_screen("default", folder, roles=["target"], parameters=["nk.speed"], progress=False)


def test_default_parameters_are_every_prior():
    p = nksim.load_parameters("default")
    keys = [f.key for f in RS.registry_screen_parameters(p)]
    assert keys == list(p.priors())
    own = prior_parameter("nk.speed", 3.0, 4.0)
    assert RS.registry_screen_parameters(p, [own, "nk.kill_probability"])[0] is own


# ----------------------------------------------------------------------------- the command
def _argv(out, registry, *extra):
    return ["screen", "--registry", str(registry), "--parameters", "rhil15.potency", "il2dt.treg_kill",
            "--trajectories", "2", "--replicates", "1", "--seed", "5", "--out", str(out), "--no-progress", *extra]


def test_cli_registry_mode(sub_registry, tmp_path, capsys, monkeypatch):
    out = tmp_path / "screen"
    assert main(_argv(out, sub_registry)) == 0
    printed = capsys.readouterr().out
    assert "Morris screen of the trial registry (target rows)" in printed and f"wrote {out / 'morris.csv'}" in printed
    assert sorted(p.name for p in out.iterdir()) == ["morris.csv", "morris.nc", "morris.png"]
    ds = nksim.open_output(out / "morris.nc")
    assert ds.sizes["parameter"] == 2 and ds.attrs["seed"] == 5 and ds.attrs["resolution"] == "calibration"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(_argv(out, sub_registry)) == 2                                  # refused: results there
    assert "--overwrite" in capsys.readouterr().err

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(RS, "run_registry_screen", interrupted)
    assert main(_argv(out, sub_registry, "--overwrite")) == 130
    assert "interrupted; nothing written" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@pytest.mark.parametrize("extra", [["--smoke"], ["--dose-factor", "2"], ["--levels", "3"],
                                   ["--parameters", "no.such_key"]])
def test_cli_registry_bad_options(sub_registry, tmp_path, capsys, extra):
    out = tmp_path / "bad"
    assert main(_argv(out, sub_registry, *extra)) == 2
    assert "nksim" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_cli_registry_options_need_registry(tmp_path, capsys):
    assert main(["screen", "ahmadvand2023", "--roles", "target", "--out", str(tmp_path / "x")]) == 2
    assert "--roles needs --registry" in capsys.readouterr().err
    assert main(["screen", "--out", str(tmp_path / "x")]) == 2
    assert "give a calibration config" in capsys.readouterr().err
    assert main(["screen", "ahmadvand2023", "--registry", "--out", str(tmp_path / "x")]) == 2
    assert "give no calibration config" in capsys.readouterr().err
