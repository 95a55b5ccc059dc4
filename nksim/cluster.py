"""Dask runner: a LocalCluster of single-threaded worker processes, or an existing scheduler.

Every worker's numba kernel is warmed once (also late joiners).

Nothing a local cluster opens listens beyond loopback: the scheduler, the worker processes and the
scheduler's HTTP server (which distributed always starts, for its health and metrics routes) are
bound to 127.0.0.1, the HTTP server on a free port. The dashboard is served only on request
(``--dashboard [ADDRESS]``, :data:`nksim.argtypes.DEFAULT_DASHBOARD` by default), and its URL is printed.

Neutral ground shared by sweeps (:mod:`nksim.sweep.runner`) and calibration
(:mod:`nksim.calibration.abc`); needs the ``[sweep]`` (or ``[calibrate]``) extra.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ._optional import require
from .errors import NksimInputError
from .parameters import ParameterSet
from .simulate import warm_up

#: The scheduler's HTTP server when no dashboard is asked for: loopback, a free port.
QUIET_HTTP_ADDRESS = "127.0.0.1:0"

WorkerPlugin = require("distributed", "sweep", "nksim.cluster (Dask workers)").WorkerPlugin


class WarmPlugin(WorkerPlugin):
    """Dask worker plugin: load the numba kernel once per worker (also late joiners) before its tasks.

    Carries the model parameters (a picklable ParameterSet), so workers need no access to the
    model files.
    """

    name = "nksim-warm-up"

    def __init__(self, params: ParameterSet | None, ignore_sigint: bool = False):
        self.params = params
        self.ignore_sigint = ignore_sigint

    def setup(self, worker=None) -> None:
        """Ignore SIGINT on local workers (the client stops them), then warm the kernel."""
        import signal
        import threading

        if self.ignore_sigint and threading.current_thread() is threading.main_thread():
            # local cluster: Ctrl-C reaches the whole process group; let the client stop the
            # workers cleanly instead of each worker dying with a traceback
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        warm_up(self.params)


@contextmanager
def dask_client(*, workers: int | None = None, scheduler: str | None = None,
                params: ParameterSet | None = None, dashboard: str | None = None) -> Iterator[Any]:
    """A ``distributed.Client``: a new LocalCluster of ``workers`` processes, or ``scheduler``'s.

    ``params`` is the model the warm-up plugin compiles/loads on each worker (None: the shipped
    default). ``dashboard``: serve the local cluster's dashboard at this ``HOST:PORT`` (None: no
    dashboard, everything on loopback); with ``scheduler``, print the link of that scheduler's
    dashboard. Prints the dashboard's URL when one is asked for. Closes what it opened.
    """
    from distributed import Client, LocalCluster

    if dashboard is not None:
        require("bokeh", "sweep", "the Dask dashboard (--dashboard)")
    cluster = None
    if scheduler is None:
        n = workers if workers is not None else (os.cpu_count() or 1)
        # no dashboard: dashboard_address None turns the page off, and the HTTP server that remains (health
        # routes) moves from the fixed port 8787 to a free one, so that concurrent runs do not compete
        quiet = {"dashboard_address": QUIET_HTTP_ADDRESS} if dashboard is None else None
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address=dashboard, scheduler_kwargs=quiet, silence_logs=logging.ERROR)
        client = Client(cluster)
    else:
        try:
            client = Client(scheduler, timeout="15s")
        except (OSError, TimeoutError) as exc:
            raise NksimInputError(f"cannot connect to the Dask scheduler: {exc}", source=scheduler,
                                  key="--scheduler") from None
    if dashboard is not None:
        print(f"Dask dashboard: {client.dashboard_link}", flush=True)
    try:
        client.register_plugin(WarmPlugin(params, ignore_sigint=cluster is not None), name=WarmPlugin.name)
        if not client.nthreads():  # e.g. a dask-jobqueue cluster still waiting for its jobs
            print("waiting for Dask workers to join the scheduler ...", flush=True)
            client.wait_for_workers(1)
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
