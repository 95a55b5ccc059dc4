"""Low-level Zarr (v3) I/O: groups, arrays with dimension names, building a store aside, reading as xarray.

Generic helpers used by the sweep store (:mod:`nksim.sweep.store`, which keeps what is
sweep-specific: the plan and format checks, the layout of the arrays, which batches are done):

* :func:`open_group` -- open an existing store's root group after checking that the path is a
  Zarr v3 group, with an :class:`~nksim.errors.NksimInputError` naming the path otherwise;
* :func:`create_group` / :func:`create_array` -- a new Zarr v3 group and arrays with
  ``dimension_names`` (readable with ``xarray.open_zarr``), optionally filled;
* :func:`build_aside` -- create a store in a temporary folder next to its final path and rename
  it into place, so a half-created store never exists under the requested name;
* :func:`open_dataset` -- the store as a lazy xarray Dataset (no consolidated metadata, no
  mask-and-scale: fill values stay as written);
* :func:`netcdf_ready` -- a Dataset read from Zarr made writable as netCDF (scalar global
  attributes, object strings);
* :func:`store_digest` -- SHA-256 over every file of a store (equal digests = identical stores);
* :func:`chunk_file` / :func:`file_checksum` -- the file holding one chunk of an array, and a
  64-bit checksum of a file's bytes (the sweep store records one per written chunk).

Needs the optional ``zarr`` package (``pip install "nksim[sweep]"``).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import xarray as xr

from .._optional import require
from ..errors import NksimInputError

zarr = require("zarr", "sweep", "nksim.sweep")


def open_group(path: str | Path, mode: str = "r", *, what: str = "Zarr group") -> zarr.Group:
    """Open the root group of the Zarr v3 store at ``path`` (``mode`` ``"r"`` or ``"r+"``).

    Refuses, without touching anything, a path that is not a directory, has no ``zarr.json``,
    has unreadable metadata or holds an array rather than a group (``what`` names the expected
    kind of store in that message).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NksimInputError("exists and is not a directory, so it is not a Zarr store; refusing to touch it",
                              source=path)
    if not (path / "zarr.json").is_file():
        raise NksimInputError("is not a Zarr v3 store (no zarr.json); refusing to touch it", source=path)
    try:
        node = zarr.open(store=str(path), mode=mode)
    except Exception as exc:  # zarr raises many types for corrupt metadata
        raise NksimInputError(f"cannot read the Zarr metadata ({type(exc).__name__}: {exc}); the store is corrupt "
                              "or foreign", source=path) from None
    if not isinstance(node, zarr.Group):
        raise NksimInputError(f"is a Zarr array, not an {what}", source=path)
    return node


def create_group(path: str | Path) -> zarr.Group:
    """A new, empty Zarr v3 group at ``path`` (refused if something is already there)."""
    return zarr.open_group(store=str(path), mode="w-", zarr_format=3)


def create_array(group: zarr.Group, name: str, shape: tuple[int, ...], dtype: Any, dims: Sequence[str], *,
                 chunks: tuple[int, ...] | None = None, fill: Any = None, attrs: Mapping[str, Any] | None = None,
                 values: Any = None, compressors: Any = "auto", config: Mapping[str, Any] | None = None) -> Any:
    """Create array ``name`` in ``group`` with ``dimension_names`` ``dims``; write ``values`` if given.

    One chunk unless ``chunks``; fill value ``fill`` and attributes ``attrs``.
    """
    a = group.create_array(name, shape=shape, dtype=dtype, chunks=chunks or shape, fill_value=fill,
                           compressors=compressors, dimension_names=dims, attributes=dict(attrs or {}),
                           config=dict(config) if config is not None else None)
    if values is not None:
        a[...] = values
    return a


def build_aside(path: str | Path, initialise: Callable[[Path], None]) -> Path:
    """Create a store at ``path`` by building it in a temporary folder next to it, then renaming it into place.

    ``initialise(tmp)`` is called on the temporary folder; an empty directory at ``path`` is
    replaced. An error or interruption removes the temporary folder and leaves ``path`` as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.creating-{uuid.uuid4().hex[:8]}"
    try:
        initialise(tmp)
        if path.exists():  # an empty directory
            path.rmdir()
        os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def open_dataset(path: str | Path) -> xr.Dataset:
    """The Zarr v3 store at ``path`` as a lazy xarray Dataset (fill values kept as written)."""
    return xr.open_zarr(path, consolidated=False, zarr_format=3, mask_and_scale=False)


def netcdf_ready(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` (read from Zarr) made writable as netCDF.

    Only scalar global attributes are kept and numpy ``StringDType``/unicode variables become
    object strings (netCDF char arrays).
    """
    ds.attrs = {k: v for k, v in ds.attrs.items() if isinstance(v, (str, int, float))}
    for name in list(ds.variables):
        if ds[name].dtype.kind in "TU":  # StringDType -> object strings (netCDF char arrays)
            ds[name] = ds[name].compute().astype(object)
    return ds


#: Name of a writer's lock file inside a store (not data: left out of :func:`store_digest`).
LOCK_FILE_NAME = ".nksim-writer.lock"


def store_digest(path: str | Path) -> str:
    """SHA-256 of every file (relative path and bytes) in a store: equal digests = identical stores.

    Lock files (:data:`LOCK_FILE_NAME`) are not data and are left out.
    """
    root = Path(path)
    h = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_file() and q.name != LOCK_FILE_NAME):
        h.update(str(p.relative_to(root)).encode())
        h.update(b"\0")
        h.update(p.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def chunk_file(array: Any, root: str | Path, coords: Sequence[int]) -> Path:
    """Path of the file holding chunk ``coords`` of ``array`` in the local store at ``root``."""
    return Path(root, *array.path.split("/"), *array.metadata.encode_chunk_key(tuple(coords)).split("/"))


def file_checksum(data: bytes) -> int:
    """64-bit checksum of ``data``: the first 8 bytes of its SHA-256 as an integer, never 0 (0 = none recorded)."""
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "big") or 1
