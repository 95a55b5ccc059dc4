"""Checking, selecting and splitting the input Datasets of :mod:`nksim.plot`; percentile statistics."""
from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from ._protocol import protocol_schedule
from ._style import _as_str, _nice


def _available(ds: xr.Dataset) -> list[str]:
    return sorted(str(v) for v in ds.data_vars)


def _need(ds: xr.Dataset, names: Iterable[str], what: str = "variable") -> None:
    if not isinstance(ds, xr.Dataset):
        raise TypeError(f"expected an xarray.Dataset (an nksim output), got {type(ds).__name__}")
    missing = [n for n in names if n not in ds.variables]
    if missing:
        raise ValueError(f"{what}{'s' if len(missing) > 1 else ''} {', '.join(repr(m) for m in missing)} not in the "
                         f"dataset; available variables: {_available(ds)}")


def _need_coord(ds: xr.Dataset, name: str, what: str) -> None:
    if name not in ds.variables:
        raise ValueError(f"{what} {name!r} is not in the dataset; available coordinates: "
                         f"{sorted(str(c) for c in ds.coords)}, variables: {_available(ds)}")


# --- splitting by group / scenario ---------------------------------------------------------------
def _group_label(ds: xr.Dataset, by: str, key: Any) -> str:
    if by == "scenario":
        lab = ""
        if "label" in ds.coords or "label" in ds.variables:
            try:
                lab = " " + str(np.asarray(ds["label"].sel(scenario=key).values).item())
            except (KeyError, ValueError, IndexError):
                lab = ""
        return f"#{_as_str(key)}{lab}"
    if by == "group":
        sched = protocol_schedule(ds).get(str(key))
        if sched:
            doses = [x for _, k, x in sched if k == "nk_infusion"]
            if doses:
                return f"group {key} (NK {' + '.join(_nice(x) for x in doses)} kg$^{{-1}}$)"
        return f"group {key}"
    return f"{by} {_as_str(key)}"


def _split(ds: xr.Dataset, by: str | None, select: Sequence[Any] | None = None
           ) -> list[tuple[str, str, xr.Dataset]]:
    """``[(key, label, subset)]`` along a dimension or a 1-D coordinate ``by`` (None: one group)."""
    if by is None:
        return [("all", "all", ds)]
    if by in ds.dims:
        values = list(ds[by].values) if by in ds.coords else list(range(ds.sizes[by]))
        index = {v: [i] for i, v in enumerate(values)}
        dim = by
    elif by in ds.coords and ds[by].ndim == 1:
        dim = ds[by].dims[0]
        raw = [_as_str(v) for v in np.asarray(ds[by].values)]
        values = list(dict.fromkeys(raw))
        index = {v: [i for i, r in enumerate(raw) if r == v] for v in values}
    else:
        raise ValueError(f"cannot split by {by!r}: it is neither a dimension nor a 1-D coordinate of the dataset; "
                         f"available dimensions: {sorted(str(d) for d in ds.dims)}, coordinates: "
                         f"{sorted(str(c) for c in ds.coords)}")
    if select is not None:
        wanted = [select] if isinstance(select, (str, int, np.integer)) else list(select)
        by_str = {_as_str(v): v for v in values}
        chosen = []
        for w in wanted:
            if w in index:
                chosen.append(w)
            elif _as_str(w) in by_str:
                chosen.append(by_str[_as_str(w)])
            else:
                raise ValueError(f"{by} {w!r} is not in the dataset; available: {[_as_str(v) for v in values]}")
        values = chosen
    return [(_as_str(v), _group_label(ds, by, v), ds.isel({dim: index[v]})) for v in values]


def _pick(ds: xr.Dataset, names: Sequence[str], keep: set[str], select: Mapping[str, Any] | None
          ) -> tuple[xr.Dataset, list[str]]:
    """Reduce ``ds[names]`` to one element along every dim of those variables not in ``keep``.

    ``select`` gives the value (by coordinate value, else by position) per dim; other dims
    take their first element. Returns the subset and notes like ``"replicate 0"``.
    """
    sub = ds[list(names)]
    select = dict(select or {})
    unknown = [k for k in select if k not in sub.dims and k not in keep]
    if unknown:
        raise ValueError(f"cannot select {unknown}: not a dimension of {list(names)}; dimensions: "
                         f"{sorted(str(d) for d in sub.dims)}")
    notes = []
    for dim in [d for d in sub.dims if d not in keep]:
        has_coord = dim in sub.coords
        if dim in select:
            value = select[dim]
            if has_coord:
                avail = [_as_str(v) for v in np.asarray(sub[dim].values)]
                if _as_str(value) not in avail:
                    raise ValueError(f"{dim} {value!r} is not in the dataset; available: {avail}")
                pos = avail.index(_as_str(value))
            else:
                if not (0 <= int(value) < sub.sizes[dim]):
                    raise ValueError(f"{dim} {value!r} out of range 0..{sub.sizes[dim] - 1}")
                pos = int(value)
        else:
            pos = 0
        label = _as_str(sub[dim].values[pos]) if has_coord else str(pos)
        sub = sub.isel({dim: pos})
        notes.append(f"{dim} {label}")
    return sub, notes


def _samples(da: xr.DataArray, keep: str) -> np.ndarray:
    """Values as a 2-D array (keep, samples): every other dim flattened."""
    other = [d for d in da.dims if d != keep]
    return np.asarray(da.transpose(keep, *other).values, dtype=float).reshape(da.sizes[keep], -1)


def _stats(arr: np.ndarray, qs: Sequence[float]) -> tuple[np.ndarray, list[np.ndarray]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN days (sweep: before a scenario starts)
        med = np.nanmedian(arr, axis=1)
        pct = [np.nanpercentile(arr, 100.0 * q, axis=1) for q in qs]
    return med, pct
