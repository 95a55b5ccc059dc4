"""Start-up work that `nksim run` avoids, and that avoiding it changes nothing (no timing assertions)."""
from __future__ import annotations

import gc
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import nksim  # noqa: F401  (installs the deferred dask lookup)
from nksim import cli


def test_xarray_does_not_import_dask_array_until_someone_does(tmp_path):
    """A fresh process: DataArrays, comparisons and a netCDF write leave dask.array unimported."""
    pytest.importorskip("dask")
    code = textwrap.dedent(f"""
        import sys
        import numpy as np
        import nksim, xarray as xr
        ds = xr.Dataset({{"a": (("x",), np.arange(4.0))}}, coords={{"g": ("x", list("aabb"))}})
        sub = ds.where(ds.g == "a", drop=True)
        nksim.write_netcdf(ds, {str(tmp_path / "x.nc")!r})
        print("dask.array" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_dask_arrays_still_work_once_imported():
    da = pytest.importorskip("dask.array")
    import xarray as xr
    from xarray.namedarray.pycompat import array_type

    assert da.Array in array_type("dask")
    x = xr.DataArray(da.ones(6, chunks=3), dims="t")
    assert x.chunks == ((3, 3),)
    assert float(x.sum().compute()) == 6.0
    assert float(xr.Dataset({"v": ("t", np.arange(6.0))}).chunk({"t": 2}).v.mean().compute()) == 2.5


def test_command_freezes_imported_objects_but_main_with_argv_does_not(monkeypatch):
    before = gc.get_freeze_count()
    with pytest.raises(SystemExit):
        cli.main(["--version"])  # tests and scripts: the garbage collector is left alone
    assert gc.get_freeze_count() == before
    monkeypatch.setattr(sys, "argv", ["nksim", "--version"])
    try:
        with pytest.raises(SystemExit):
            cli.main()  # the nksim command: a process that ends now
        assert gc.get_freeze_count() > before
    finally:
        gc.unfreeze()
        cli._COMMAND_PROCESS = False  # as after any main(argv) call
