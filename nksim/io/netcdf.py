"""netCDF files of nksim: atomic writing and safe reading (h5netcdf engine, CF-1.8 char strings)."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import xarray as xr

from ..errors import NksimInputError, OutputExistsError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: Datasets up to this size (bytes in memory, uncompressed) are encoded in memory before anything is written.
IN_MEMORY_LIMIT = 2 << 30


def _encoding(ds: xr.Dataset) -> dict[str, dict[str, object]]:
    encoding: dict[str, dict[str, object]] = {
        v: {"zlib": True, "complevel": 4} for v in ds.data_vars if ds[v].dtype.kind in "fiu"}
    # Strings as classic char arrays: CF-1.8 tools do not support netCDF-4 vlen strings.
    for name, var in ds.variables.items():
        if var.dtype.kind in "OUS":
            encoding[str(name)] = {"dtype": "S1"}
    return encoding


def _free_bytes(folder: Path) -> float:
    try:
        return shutil.disk_usage(folder).free
    except OSError:  # pragma: no cover
        return 0.0


def write_netcdf(ds: xr.Dataset, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``ds`` to ``path`` (netCDF4 via h5netcdf) atomically.

    Refuses to replace an existing file unless ``overwrite``; writes to a temporary file in
    the same folder and renames it, so an interrupted or failed write never leaves a broken
    file or destroys the previous one. The file is encoded in memory first (unless it is
    larger than :data:`IN_MEMORY_LIMIT` and the disk has room for it uncompressed) and then
    written with plain file I/O: a full disk or a missing permission is an ordinary
    :class:`OSError` naming the file (HDF5 itself can crash the process when a disk fills up
    under an open file).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError("already exists; pass overwrite=True (CLI: --overwrite) to replace it", source=path)
    path.parent.mkdir(parents=True, exist_ok=True)
    encoding = _encoding(ds)
    data = None
    if ds.nbytes <= IN_MEMORY_LIMIT or _free_bytes(path.parent) < 2 * ds.nbytes:
        data = ds.to_netcdf(engine="h5netcdf", encoding=encoding)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if data is not None:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
        else:
            os.close(fd)
            ds.to_netcdf(tmp, engine="h5netcdf", encoding=encoding)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if exc.filename is None or str(exc.filename) == tmp:  # name the target, not the temporary file
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
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
