"""Keep xarray from importing ``dask.array`` in a process that has not imported it (start-up time).

When dask is installed (the ``[sweep]`` and ``[calibrate]`` extras), xarray imports
``dask.array`` the first time it builds a variable from data (``xarray.core.variable.
as_compatible_data`` asks ``array_type("dask")`` for an ``isinstance`` test), even when nothing
in the process uses dask: 0.3-0.4 s of CPU time in ``nksim run``, which never does. No dask
array can exist before ``dask.array`` is imported, so until then the answer ``()`` (no type) gives
the same result for every ``isinstance`` test; once it is imported (by the user, Dask, Zarr
sweeps), the real type is returned. :func:`defer_dask_array_import` puts such a deferred entry
in xarray's cache of duck-array modules; anything else asked of it (version, module) imports
dask as xarray would. Nothing is changed when xarray's internals differ from what this
expects (then xarray behaves as before), or when xarray has already looked dask up.
Importing this module (``nksim/__init__.py`` does, first) installs the entry.
"""
from __future__ import annotations

import sys


class _DeferredDask:
    """Stand-in for ``xarray.namedarray.pycompat.DuckArrayModule("dask")`` that imports dask only when needed."""

    __slots__ = ("_factory", "_real")

    def __init__(self, factory) -> None:
        self._factory = factory
        self._real = None

    def _resolve(self):
        if self._real is None:
            self._real = self._factory("dask")
        return self._real

    @property
    def type(self) -> tuple:
        if self._real is None and "dask.array" not in sys.modules:
            return ()  # no dask array can exist yet
        return self._resolve().type

    def __getattr__(self, name: str):  # module, version, available: what xarray would have found
        return getattr(self._resolve(), name)


def defer_dask_array_import() -> bool:
    """Install the deferred dask entry in xarray's duck-array cache; True when installed."""
    try:
        from xarray.namedarray import pycompat

        cache = pycompat._cached_duck_array_modules
        factory = pycompat.DuckArrayModule
        pycompat._get_cached_duck_array_module  # noqa: B018 -- the lookup this relies on
    except (ImportError, AttributeError):  # another xarray: leave it alone
        return False
    if not isinstance(cache, dict) or "dask" in cache:
        return False
    cache["dask"] = _DeferredDask(factory)
    return True


defer_dask_array_import()
