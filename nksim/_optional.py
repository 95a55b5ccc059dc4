"""Optional dependencies: one import helper whose error names the extra to install.

The core (``nksim run``, the Python API of :mod:`nksim.simulate`) needs only the packages in
``[project] dependencies``; sweeps, calibration and the Mesa reference model need extras
(``pyproject.toml``)::

    zarr = require("zarr", extra="sweep", feature="nksim.sweep")

raises, when zarr is not installed::

    MissingOptionalDependency: nksim.sweep needs the optional package 'zarr': pip install "nksim[sweep]"

:class:`MissingOptionalDependency` is an :class:`ImportError`; the command line prints it as a
one-line error.
"""
from __future__ import annotations

import importlib
from types import ModuleType

#: Extra -> what it adds (for messages and the README).
EXTRAS = {
    "sweep": "schedule sweeps (nksim sweep / summarize): dask[distributed,diagnostics], zarr",
    "optimise": "schedule optimisation (nksim optimise): optuna, dask[distributed] (for --scheduler)",
    "calibrate": "calibration (nksim calibrate / screen): pyabc, SALib, pandas, dask[distributed,diagnostics]",
    "mesa": "the Mesa reference model (nksim.mesa_ref): mesa",
    "viz": "the browser view of the Mesa reference model (nksim.mesa_ref.viz): mesa[viz], solara",
    "all": "all of the above",
}


class MissingOptionalDependency(ImportError):
    """An optional package that a feature needs is not installed (message names the extra)."""


def require(module: str, extra: str, feature: str, package: str | None = None) -> ModuleType:
    """Import ``module`` (e.g. ``"zarr"`` or ``"zarr.codecs"``) for ``feature``, or say which extra to install.

    If it cannot be imported, raise :class:`MissingOptionalDependency` telling to install
    ``nksim[extra]``. ``package`` is the distribution name shown in the message (default: the top-level module).
    """
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; known: {sorted(EXTRAS)}")
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.partition(".")[0]
        name = package or top
        msg = f"{feature} needs the optional package '{name}': pip install \"nksim[{extra}]\""
        missing = getattr(exc, "name", None)
        if missing != top:
            # the package is there but too old or one of its own imports failed: say which
            msg += f" (importing {module} failed: {exc})"
        raise MissingOptionalDependency(msg, name=missing) from exc
