"""nksim file I/O, apart from the model core (as ``xarray.backends``).

* :mod:`~nksim.io.netcdf` -- atomic netCDF writing (:func:`write_netcdf`) and safe reading of
  nksim outputs (:func:`open_output`);
* :mod:`~nksim.io.zarr` -- low-level Zarr (v3) I/O of the sweep store: opening and checking a
  group, creating arrays with dimension names, building a store aside and renaming it into
  place, reading it as a lazy xarray Dataset, preparing it for netCDF export, digests, chunk
  files and their checksums;
* :mod:`~nksim.io.lock` -- an exclusive writer lock (``fcntl.flock``) that names its holder.

Only the netCDF functions are imported here; :mod:`nksim.io.zarr` needs the optional ``zarr``
package (``nksim[sweep]``) and is imported where used.
"""
from __future__ import annotations

from .netcdf import open_output, write_netcdf

__all__ = ["open_output", "write_netcdf"]
