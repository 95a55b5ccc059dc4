"""Dask runner: a LocalCluster of single-threaded worker processes, or an existing scheduler.

Every worker's numba kernel is warmed once (also late joiners).

Nothing a local cluster opens listens beyond loopback: the scheduler, the worker processes and the
scheduler's HTTP server (which distributed always starts, for its health and metrics routes) are
bound to 127.0.0.1, the HTTP server on a free port. The dashboard is served only on request
(``--dashboard [ADDRESS]``, :data:`nksim.argtypes.DEFAULT_DASHBOARD` by default), and its URL is printed.

An existing scheduler (``--scheduler ADDRESS``) is checked before any work
(:func:`check_scheduler`: ``PROTOCOL://HOST:PORT`` as distributed parses it, e.g.
``tcp://10.0.0.1:8786``). If it has no workers yet (e.g. a dask-jobqueue cluster whose jobs wait
in the queue), the client says so and waits for the first one at most
:data:`DEFAULT_WORKER_TIMEOUT` seconds (environment variable ``NKSIM_WORKER_TIMEOUT``), then
fails with one line instead of waiting forever.

Neutral ground shared by sweeps (:mod:`nksim.sweep.runner`) and calibration
(:mod:`nksim.calibration.abc`); needs the ``[sweep]`` (or ``[calibrate]``) extra.
"""
from __future__ import annotations

import logging
import math
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

#: Seconds a run on an existing scheduler (``--scheduler``) waits for its first worker before failing.
DEFAULT_WORKER_TIMEOUT = 600.0
#: Environment variable that sets that wait in seconds (a number > 0).
WORKER_TIMEOUT_ENV = "NKSIM_WORKER_TIMEOUT"
#: The form of a scheduler address, for messages.
SCHEDULER_FORM = "PROTOCOL://HOST:PORT, e.g. tcp://10.0.0.1:8786 (protocol tcp, tls, ws, wss or ucx; port 1-65535)"


def worker_timeout() -> float:
    """Seconds to wait for a scheduler's first worker: ``NKSIM_WORKER_TIMEOUT`` or :data:`DEFAULT_WORKER_TIMEOUT`."""
    text = os.environ.get(WORKER_TIMEOUT_ENV)
    if text is None or not text.strip():
        return DEFAULT_WORKER_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise NksimInputError(f"must be a number of seconds > 0 (how long --scheduler waits for a first worker; "
                              f"default {DEFAULT_WORKER_TIMEOUT:g}), got {text!r}", source="environment",
                              key=WORKER_TIMEOUT_ENV)
    return value


def check_scheduler(address: object) -> str:
    """A scheduler address as distributed parses it, else NksimInputError naming ``--scheduler`` and the form.

    Accepted: ``PROTOCOL://HOST:PORT`` (or ``HOST:PORT``, which distributed reads as tcp) for
    the network protocols distributed knows (:data:`SCHEDULER_FORM`); the in-process ``inproc://``
    cannot be reached from a command. Also checks ``NKSIM_WORKER_TIMEOUT`` (:func:`worker_timeout`).
    Called before any work by :func:`nksim.sweep.run_sweep` and :func:`nksim.calibration.run_calibration`.
    """
    from distributed.comm.addressing import parse_address, parse_host_port
    from distributed.comm.registry import backends

    def bad(why: str) -> NksimInputError:
        return NksimInputError(f"{address!r} is not a Dask scheduler address ({why}); expected {SCHEDULER_FORM}",
                               key="--scheduler")

    if not isinstance(address, str) or not address.strip():
        raise bad("not a non-empty string")
    text = address.strip()
    try:
        scheme, loc = parse_address(text, strict=False)
    except (ValueError, TypeError) as exc:
        raise bad(str(exc)) from None
    if scheme not in backends or scheme == "inproc":
        raise bad(f"unknown protocol {scheme!r}")
    try:
        host, port = parse_host_port(loc)
    except (ValueError, TypeError) as exc:
        raise bad(str(exc)) from None
    if not host or any(c.isspace() or c in "/?#@" for c in host):
        raise bad(f"host {host!r} is not a host name or IP address")
    if not 0 < int(port) < 65536:
        raise bad(f"port {port} is outside 1-65535")
    worker_timeout()
    return text

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
        scheduler = check_scheduler(scheduler)
        try:
            client = Client(scheduler, timeout="15s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise NksimInputError(f"cannot connect to the Dask scheduler: {exc}", source=scheduler,
                                  key="--scheduler") from None
    if dashboard is not None:
        print(f"Dask dashboard: {client.dashboard_link}", flush=True)
    try:
        client.register_plugin(WarmPlugin(params, ignore_sigint=cluster is not None), name=WarmPlugin.name)
        if not client.nthreads():  # e.g. a dask-jobqueue cluster still waiting for its jobs
            wait = worker_timeout()
            print(f"waiting up to {wait:g} s for a Dask worker to join the scheduler {scheduler} "
                  f"({WORKER_TIMEOUT_ENV} sets the wait) ...", flush=True)
            try:
                client.wait_for_workers(1, timeout=wait)
            except TimeoutError:
                raise NksimInputError(f"no Dask worker joined the scheduler within {wait:g} s; start workers (dask "
                                      f"worker {scheduler}) or wait longer ({WORKER_TIMEOUT_ENV}=SECONDS)",
                                      source=scheduler, key="--scheduler") from None
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
