"""Output Dataset schema (CF-1.8 metadata, provenance) and safe netCDF writing/reading."""
from __future__ import annotations

import json

import cf_units
import numpy as np
import pytest
import xarray as xr

import nksim
from nksim import OutputExistsError, open_output, write_netcdf
from nksim.output import COUNTERS

REQUIRED = [
    "donor_chimerism_nk", "donor_chimerism_pbmc", "donor_nk_blood", "donor_nk_marrow", "host_nk_blood",
    "host_t_blood", "il15", "flu_conc", "cy_conc", "marrow_blast_pct", "blasts_total", "normal_total", "nk_kills",
    "response", "time_to_progression", "lattice_susceptible_blasts", "lattice_resistant_blasts", "lattice_normal",
    "lattice_nk", "region_counts",
]


@pytest.fixture(scope="module")
def ds(small_cohort):
    return small_cohort


def test_required_variables_and_dims(ds, ahmadvand):
    for v in REQUIRED:
        assert v in ds.data_vars, v
    assert ds.sizes["patient"] == 10 and ds.sizes["replicate"] == 2
    assert ds.donor_nk_blood.dims == ("patient", "replicate", "time")
    assert ds.response.dims == ("patient", "replicate", "assessment")
    assert ds.time_to_progression.dims == ("patient", "replicate")
    assert ds.lattice_nk.dims == ("patient", "replicate", "snapshot_time", "y", "x")
    np.testing.assert_array_equal(ds.time.values, np.arange(ahmadvand.start_day, ahmadvand.end_day + 1))
    np.testing.assert_array_equal(ds.assessment.values, ahmadvand.assessment_days)
    np.testing.assert_array_equal(ds.snapshot_time.values, ahmadvand.snapshot_days)
    assert ds.sizes["x"] == ds.sizes["y"] == 8
    assert list(ds.patient.values) == [p.id for p in ahmadvand.patients]
    np.testing.assert_array_equal(ds.evaluable.values, [int(p.evaluable) for p in ahmadvand.patients])
    assert list(ds.group.values) == [p.group for p in ahmadvand.patients]
    assert tuple(ds.counter.values) == COUNTERS


def test_units_parse_and_long_names(ds):
    for name, var in list(ds.data_vars.items()) + list(ds.coords.items()):
        assert var.attrs.get("long_name"), f"{name} has no long_name"
        if name in ds.data_vars:
            assert "units" in var.attrs, f"{name} has no units"
        if "units" in var.attrs:
            cf_units.Unit(var.attrs["units"])  # raises if not a UDUNITS-2 unit


@pytest.mark.parametrize(
    "name, unit",
    [("donor_nk_blood", "uL-1"), ("host_nk_blood", "uL-1"), ("flu_conc", "mg L-1"), ("cy_conc", "mg L-1"),
     ("marrow_blast_pct", "percent"), ("donor_chimerism_nk", "percent"), ("time_to_progression", "day"),
     ("il15", "1"), ("drug_kill_hazard", "day-1")],
)
def test_specific_units(ds, name, unit):
    assert cf_units.Unit(ds[name].attrs["units"]) == cf_units.Unit(unit)


def test_coordinate_units(ds):
    assert cf_units.Unit(ds.time.attrs["units"]) == cf_units.Unit("day")
    assert cf_units.Unit(ds.x.attrs["units"]) == cf_units.Unit("um")


def test_response_flags(ds):
    r = ds.response
    assert r.attrs["flag_meanings"] == "CR PR SD PD"
    np.testing.assert_array_equal(r.attrs["flag_values"], [0, 1, 2, 3])
    assert r.dtype == np.int8
    assert set(np.unique(r.values)) <= {0, 1, 2, 3}


def test_global_attributes(ds, small_params):
    a = ds.attrs
    assert a["Conventions"] == "CF-1.8"
    assert a["nksim_version"] == nksim.__version__
    assert a["parameter_digest"] == small_params.digest()
    assert a["parameter_status"] == nksim.load_parameters("default").status and a["parameter_status"]
    assert a["protocol"] == "ahmadvand2023"
    assert a["seed"] == 20240611 and a["replicates"] == 2
    params = json.loads(a["parameters"])
    assert params["lattice.side"] == {"value": 8.0, "unit": "1"}
    events = json.loads(a["protocol_events"])
    assert set(events) == {"g1", "g2"}
    for key in ("title", "history", "source", "git_commit", "parameter_set"):
        assert key in a


def test_netcdf_round_trip(ds, tmp_path):
    path = write_netcdf(ds, tmp_path / "out" / "trial.nc")
    assert path.is_file()
    back = open_output(path)
    assert set(back.data_vars) == set(ds.data_vars)
    for v in ds.data_vars:
        np.testing.assert_array_equal(back[v].values, ds[v].values, err_msg=v)
        assert back[v].dtype == ds[v].dtype, v
        assert back[v].attrs.get("units") == ds[v].attrs.get("units"), v
    for cname in ds.coords:
        np.testing.assert_array_equal(back[cname].values, ds[cname].values, err_msg=cname)
    for k in ("Conventions", "nksim_version", "parameter_digest", "parameters", "protocol", "seed"):
        assert back.attrs[k] == ds.attrs[k], k
    np.testing.assert_array_equal(back.response.attrs["flag_values"], [0, 1, 2, 3])
    assert not list(tmp_path.joinpath("out").glob(".*tmp")), "temporary file left behind"


def test_refuses_to_overwrite(ds, tmp_path):
    path = tmp_path / "trial.nc"
    path.write_bytes(b"previous results")
    with pytest.raises(OutputExistsError) as info:
        write_netcdf(ds, path)
    assert isinstance(info.value, nksim.NksimInputError)
    assert "trial.nc" in str(info.value)
    assert path.read_bytes() == b"previous results"
    write_netcdf(ds, path, overwrite=True)
    assert open_output(path).sizes["patient"] == 10


def test_failed_write_keeps_previous_file(ds, tmp_path):
    path = tmp_path / "trial.nc"
    path.write_bytes(b"previous results")
    bad = ds.copy()
    bad.attrs["unserialisable"] = {"a": 1}  # netCDF attributes cannot be dicts
    with pytest.raises(TypeError, match="unserialisable"):  # xarray refuses dict attributes
        write_netcdf(bad, path, overwrite=True)
    assert path.read_bytes() == b"previous results"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trial.nc"]


def test_open_missing_file(tmp_path):
    with pytest.raises(nksim.NksimInputError, match="nothing_here.nc"):
        open_output(tmp_path / "nothing_here.nc")


def test_open_corrupt_file(tmp_path):
    path = tmp_path / "corrupt.nc"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 8)
    with pytest.raises(nksim.NksimInputError) as info:
        open_output(path)
    assert "corrupt.nc" in str(info.value)


def test_open_truncated_output(ds, tmp_path):
    good = write_netcdf(ds, tmp_path / "good.nc")
    cut = tmp_path / "truncated.nc"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    with pytest.raises(nksim.NksimInputError, match="truncated.nc"):
        open_output(cut)


def test_open_foreign_netcdf(tmp_path):
    path = tmp_path / "foreign.nc"
    xr.Dataset({"t": ("x", np.arange(3.0))}).to_netcdf(path, engine="h5netcdf")
    with pytest.raises(nksim.NksimInputError) as info:
        open_output(path)
    assert "foreign.nc" in str(info.value) and "nksim" in str(info.value)


def test_single_simulation_dataset(small_params, ahmadvand):
    one = nksim.simulate(small_params.with_values({"lattice.side": 4}), ahmadvand, "p06", seed=1)
    assert "patient" not in one.dims and "replicate" not in one.dims
    assert one.patient.item() == "p06" and one.group.item() == "g2"
    assert one.donor_nk_blood.dims == ("time",)
    assert one.attrs["Conventions"] == "CF-1.8"


def test_source_commit_only_for_a_checkout_of_nksim(tmp_path):
    """A package folder inside another project's repository (a wheel in a venv there) is not that project's commit."""
    import subprocess

    from nksim.output import _source_commit

    def git(*args, cwd):
        subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                       env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                            "GIT_COMMITTER_EMAIL": "t@t", "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})

    repo = tmp_path / "project"
    checkout_pkg = repo / "nksim"
    wheel_pkg = repo / ".venv" / "lib" / "site-packages" / "nksim"
    for d in (checkout_pkg, wheel_pkg):
        d.mkdir(parents=True)
        (d / "__init__.py").write_text("")
    git("init", "-q", cwd=repo)
    git("add", "nksim", cwd=repo)
    git("commit", "-qm", "x", cwd=repo)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    assert len(head) == 40
    assert _source_commit(checkout_pkg) == head
    assert _source_commit(wheel_pkg) == "unknown"
    outside = tmp_path / "plain" / "nksim"
    outside.mkdir(parents=True)
    assert _source_commit(outside) == "unknown"
