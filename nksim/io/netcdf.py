"""netCDF files of nksim: atomic writing and safe reading (h5netcdf engine, CF-1.8 char strings)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import xarray as xr

from ..errors import NksimInputError, OutputExistsError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_netcdf(ds: xr.Dataset, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``ds`` to ``path`` (netCDF4 via h5netcdf) atomically.

    Refuses to replace an existing file unless ``overwrite``; writes to a temporary file in
    the same folder and renames it, so an interrupted write never leaves a broken file or
    destroys the previous one.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError("already exists; pass overwrite=True (CLI: --overwrite) to replace it", source=path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        encoding: dict[str, dict[str, object]] = {
            v: {"zlib": True, "complevel": 4} for v in ds.data_vars if ds[v].dtype.kind in "fiu"}
        # Strings as classic char arrays: CF-1.8 tools do not support netCDF-4 vlen strings.
        for name, var in ds.variables.items():
            if var.dtype.kind in "OUS":
                encoding[str(name)] = {"dtype": "S1"}
        ds.to_netcdf(tmp, engine="h5netcdf", encoding=encoding)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def open_output(path: str | Path) -> xr.Dataset:
    """Open an nksim netCDF output, with a clear error if it is missing, corrupt or foreign."""
    path = Path(path)
    if not path.is_file():
        raise NksimInputError("no such output file", source=path)
    try:
        ds = xr.load_dataset(path, engine="h5netcdf")
    except Exception as exc:  # h5py/h5netcdf raise various types for corrupt files
        raise NksimInputError(f"cannot read as netCDF ({type(exc).__name__}: {exc}); the file is corrupt or not "
                              "an nksim output", source=path) from None
    if "nksim_version" not in ds.attrs:
        raise NksimInputError("not an nksim output (no 'nksim_version' attribute)", source=path)
    return ds
