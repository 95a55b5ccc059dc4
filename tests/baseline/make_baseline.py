"""Regenerate the numeric baseline that ``tests/test_baseline.py`` compares against.

Run it only on purpose, when a change is *meant* to change outputs::

    python tests/baseline/make_baseline.py

then bump the version in ``nksim/_version.py`` and add an entry marked **[outputs changed]**
to ``CHANGELOG.md`` saying what changed and why. The configuration is small (a 6 x 6 lattice,
two patients, two replicates, the trial protocol to day 365) so that the comparison runs in
seconds, yet it exercises every process of the engine: Flu/Cy, both NK infusions, homing,
killing, division and death of every cell kind.
"""
from __future__ import annotations

import sys
from pathlib import Path

import xarray as xr

HERE = Path(__file__).resolve().parent
BASELINE = HERE / "baseline.nc"

#: The pinned configuration (model overrides, protocol, patients, replicates, seed).
OVERRIDES = {"lattice.side": 6, "nk.homing_rate": 10.0, "nk.max_kills": 10, "expanded_nk.tissue_uptake_rate": 2.0}
PROTOCOL = "ahmadvand2023"
PATIENTS = ("p02", "p07")
REPLICATES = 2
SEED = 20261130


def simulate_baseline() -> xr.Dataset:
    """The pinned configuration's Dataset, without the attributes that name time or commit."""
    import nksim

    params = nksim.load_parameters("default").with_values(OVERRIDES)
    ds = nksim.simulate_cohort(params, PROTOCOL, patients=list(PATIENTS), replicates=REPLICATES, seed=SEED)
    ds.attrs = {"nksim_version": nksim.__version__, "comment": "numeric baseline; regenerate with "
                "tests/baseline/make_baseline.py only when outputs are meant to change"}
    return ds


def main() -> int:
    ds = simulate_baseline()
    encoding = {v: {"zlib": True, "complevel": 6} for v in ds.data_vars if ds[v].dtype.kind in "fiu"}
    ds.to_netcdf(BASELINE, engine="h5netcdf", encoding=encoding)
    print(f"wrote {BASELINE} ({BASELINE.stat().st_size / 1e3:.0f} kB) with nksim {ds.attrs['nksim_version']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
