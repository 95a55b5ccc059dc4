"""ABC-SMC (pyabc) of a :class:`~nksim.calibration.model.CalibrationModel`.

* Prior: independent uniforms on each fitted parameter's sampling scale (``log`` = uniform in
  log10), bounds from the model's ``prior`` (or the config's ``[fit.prior]``).
* Distance: :func:`nksim.calibration.distance.total_distance` (likelihood-ratio shaped).
* Proposal: pyabc's multivariate-normal kernel with its covariance scaled by
  ``transition_scaling`` (2 by default: keeps the effective sample size near half the
  population in 11 dimensions, where the unscaled kernel lets it collapse).
* Epsilon: pyabc's weighted quantile schedule (``epsilon_quantile`` of the last generation's
  distances), starting from a prior sample; stops at ``min_epsilon``, ``max_generations``,
  ``max_simulations`` or when the acceptance rate falls below ``min_acceptance_rate``.
* Samplers: in-process single-core (``workers=1``; reproducible: the global NumPy generator
  that pyabc draws proposals from is seeded with the config seed, and every simulation seed is
  a function of (config seed, theta)), or Dask -- the same LocalCluster/``--scheduler`` runner
  as sweeps (:func:`nksim.cluster.dask_client`) -- with pyabc's
  ``DaskDistributedSampler``; Dask runs are statistically equivalent but not bit-reproducible
  (pyabc draws proposals on the workers).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._optional import require
from .config import CalibrationConfig

log = logging.getLogger("nksim.calibrate")


class AbcModel:
    """Picklable pyabc model: ``pars`` (safe names, sampling scale) -> summary dict."""

    def __init__(self, config: CalibrationConfig, observed=None):
        self.config = config
        self.observed = observed
        self._model = None

    def __getstate__(self):
        """Pickle state without the built model (workers rebuild it lazily)."""
        return {"config": self.config, "observed": self.observed, "_model": None}

    @property
    def model(self):
        """The :class:`~nksim.calibration.model.CalibrationModel`, built on first use."""
        if self._model is None:
            from .model import CalibrationModel

            self._model = CalibrationModel(self.config, self.observed)
        return self._model

    def theta(self, pars: Mapping[str, float]) -> dict[str, float]:
        """Map pyabc parameters (safe names, sampling scale) -> model keys and values."""
        return {f.key: f.from_unit(float(pars[f.safe_name])) for f in self.config.fit}

    def __call__(self, pars: Mapping[str, float]) -> dict:
        """Simulate the summary dict for one pyabc parameter set."""
        return self.model.simulate(self.theta(pars))


class AbcDistance:
    """Picklable pyabc distance callable."""

    def __init__(self, model: AbcModel):
        self.abc_model = model

    def __call__(self, x: Mapping, x0: Mapping) -> float:
        """Distance of the simulated summaries ``x`` from the observed ``x0``."""
        return self.abc_model.model.distance(x, x0)


@dataclass
class AbcRun:
    """Result of :func:`run_abc`: the pyabc history, its database URL, wall time (s), simulations, workers."""

    history: object  # pyabc.History
    db_url: str
    seconds: float
    n_simulations: int
    workers: int


def prior_distribution(config: CalibrationConfig):
    """The pyabc prior: independent uniforms on each fitted parameter's bounds (sampling scale)."""
    pyabc = require("pyabc", "calibrate", "nksim.calibration")

    return pyabc.Distribution(**{f.safe_name: pyabc.RV("uniform", f.bounds[0], f.bounds[1] - f.bounds[0])
                                 for f in config.fit})


class _ProgressHandler(logging.Handler):
    """Print pyabc's generation lines (generation, epsilon, acceptance rate) as progress."""

    def __init__(self, stream):
        super().__init__(logging.INFO)
        self.stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if msg.startswith("t:") or msg.startswith("Accepted") or msg.startswith("Stop") \
                or msg.startswith("Calibration sample") or msg.startswith("Stopping"):
            print(f"  abc | {msg}", file=self.stream, flush=True)


def run_abc(config: CalibrationConfig, db_path: Path, *, workers: int = 1, scheduler: str | None = None,
            observed=None, progress: bool = True, resume: bool = False, rng_dir: Path | None = None,
            dashboard: str | None = None) -> AbcRun:
    """Run ABC-SMC; the pyabc history goes to the SQLite file ``db_path``.

    ``rng_dir``: keep there the state of NumPy's global generator (which pyabc's single-core
    sampler draws proposals from) as each generation is stored. ``resume``: continue the run
    stored in ``db_path`` instead of starting one (the history must come from this config);
    with the state of its last generation in ``rng_dir``, a single-core run continues bit for
    bit as if it had not been interrupted. ``dashboard``: serve the local Dask cluster's dashboard
    there (:func:`nksim.cluster.dask_client`; Dask runs only). The stopping rules apply to the whole run
    (``max_generations`` counts the stored generations too).
    """
    import sys

    pyabc = require("pyabc", "calibrate", "nksim.calibration")

    model = AbcModel(config, observed)
    obs = model.model.observed_summary()
    db_url = f"sqlite:///{Path(db_path).resolve()}"
    handler = _ProgressHandler(sys.stderr) if progress else None
    # pyabc logs to "ABC*" loggers with its own handler: replace it for the run (progress lines
    # only, or silence), restore afterwards
    loggers = [logging.getLogger(n) for n in ("ABC", "ABC.Sampler", "ABC.Epsilon", "ABC.Distance", "ABC.History")]
    saved = [(lg.level, list(lg.handlers), lg.propagate) for lg in loggers]
    for lg in loggers:
        for h in list(lg.handlers):
            lg.removeHandler(h)
        lg.propagate = False
        lg.setLevel(logging.INFO if handler is not None else logging.WARNING)
        if handler is not None:
            lg.addHandler(handler)
    np.random.seed(config.seed % 2**32)  # noqa: NPY002  pyabc samples from numpy's global RNG
    t0 = time.perf_counter()
    try:
        if scheduler is None and workers <= 1:
            sampler = pyabc.sampler.SingleCoreSampler()
            history = _run(pyabc, model, config, sampler, db_url, obs, resume, rng_dir)
            n_workers = 1
        else:
            require("distributed", "calibrate", "calibration on Dask workers")
            from ..cluster import dask_client

            with dask_client(workers=workers, scheduler=scheduler, params=config.base_parameters(),
                             dashboard=dashboard) as client:
                n_workers = max(1, sum(client.nthreads().values()))
                sampler = pyabc.sampler.DaskDistributedSampler(dask_client=client, batch_size=4)
                history = _run(pyabc, model, config, sampler, db_url, obs, resume, rng_dir)
    finally:
        for lg, (lvl, handlers, prop) in zip(loggers, saved):
            for h in list(lg.handlers):
                lg.removeHandler(h)
            for h in handlers:
                lg.addHandler(h)
            lg.setLevel(lvl)
            lg.propagate = prop
    return AbcRun(history, db_url, time.perf_counter() - t0, int(history.total_nr_simulations), n_workers)


def _run(pyabc, model: AbcModel, config: CalibrationConfig, sampler, db_url: str, obs: Mapping, resume: bool,
         rng_dir: Path | None):
    a = config.abc
    abc = pyabc.ABCSMC(model, prior_distribution(config), AbcDistance(model), population_size=a.population_size,
                       eps=pyabc.epsilon.QuantileEpsilon(alpha=a.epsilon_quantile), sampler=sampler,
                       transitions=pyabc.MultivariateNormalTransition(scaling=a.transition_scaling))
    generations = a.max_generations
    if resume:
        history = abc.load(db_url, 1, dict(obs))
        done = int(history.n_populations)
        if stopped(history, config):
            return history
        state = load_rng_state(rng_dir, done - 1) if rng_dir is not None else None
        if state is not None:
            np.random.set_state(state)  # noqa: NPY002  the state the uninterrupted run had here
        elif rng_dir is None or not _rng_file(rng_dir, done - 1).is_file():  # (a damaged one was named already)
            log.warning("the random state after generation %d was not kept: the continued run is statistically "
                        "equivalent to an uninterrupted one, not identical", done - 1)
        generations -= done
    else:
        abc.new(db_url, dict(obs))
    if rng_dir is not None:
        _keep_rng_states(abc.history, rng_dir)
    return abc.run(minimum_epsilon=a.min_epsilon, max_nr_populations=generations,
                   min_acceptance_rate=a.min_acceptance_rate, max_total_nr_simulations=a.max_simulations)


def stopped(history, config: CalibrationConfig) -> bool:
    """Whether a stored run already met one of its stopping rules (pyabc's, checked after each generation)."""
    a = config.abc
    pops = history.get_all_populations()
    pops = pops[pops["t"] >= 0]
    if pops.empty:
        return False
    last = pops.iloc[-1]
    return bool(len(pops) >= a.max_generations or last["epsilon"] <= a.min_epsilon
                or last["particles"] / last["samples"] < a.min_acceptance_rate
                or history.total_nr_simulations >= a.max_simulations)


def _rng_file(rng_dir: Path, t: int) -> Path:
    return Path(rng_dir) / f"rng-{int(t)}.npz"


def _keep_rng_states(history, rng_dir: Path) -> None:
    """Save NumPy's global generator state as each generation is stored (before pyabc commits it)."""
    real = history.append_population

    def append_population(t, *args, **kwargs):
        save_rng_state(rng_dir, t)
        return real(t, *args, **kwargs)

    history.append_population = append_population


def _rng_digest(name: str, keys: np.ndarray, pos: int, has_gauss: int, gauss: float) -> str:
    """SHA-256 of a generator state (what a kept state file must match to be used)."""
    import hashlib

    head = f"{name}|{keys.dtype.str}|{keys.shape}|{int(pos)}|{int(has_gauss)}|{float(gauss).hex()}|"
    h = hashlib.sha256(head.encode())
    h.update(np.ascontiguousarray(keys).tobytes())
    return h.hexdigest()


def save_rng_state(rng_dir: Path, t: int) -> None:
    """Write the global generator's state after sampling generation ``t`` (atomic, with a SHA-256 of the state)."""
    import os
    import tempfile

    name, keys, pos, has_gauss, gauss = np.random.get_state()  # noqa: NPY002
    path = _rng_file(rng_dir, t)
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = _rng_digest(name, keys, pos, has_gauss, gauss)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, name=np.array(name), keys=keys, pos=np.array(pos), has_gauss=np.array(has_gauss),
                     gauss=np.array(gauss), digest=np.array(digest))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_rng_state(path: Path) -> tuple:
    """The state kept in ``path``; ValueError saying why when it is not whole, not a state or altered."""
    try:
        with np.load(path, allow_pickle=False) as z:
            name, keys, digest = str(z["name"]), z["keys"], str(z["digest"])
            pos, has_gauss, gauss = int(z["pos"]), int(z["has_gauss"]), float(z["gauss"])
    except KeyError as exc:
        raise ValueError(f"no {exc} entry (not a state file of this nksim)") from None
    except Exception as exc:  # truncated or garbled (zip CRC), not an .npz
        raise ValueError(f"unreadable: {type(exc).__name__}: {exc}") from None
    if name != "MT19937" or keys.dtype != np.uint32 or keys.shape != (624,) or not 0 <= pos <= 624:
        raise ValueError("not a Mersenne-Twister state (wrong name, type or shape)")
    if _rng_digest(name, keys, pos, has_gauss, gauss) != digest:
        raise ValueError("its content does not match its SHA-256 (altered or damaged)")
    return name, keys, pos, has_gauss, gauss


def load_rng_state(rng_dir: Path, t: int) -> tuple | None:
    """The global generator's state kept after generation ``t``, or None if it was not kept or is damaged.

    A damaged, truncated or altered file is never used: a one-line warning names it (the continued
    run is then statistically equivalent to an uninterrupted one, not identical).
    """
    path = _rng_file(rng_dir, t)
    if not path.is_file():
        return None
    try:
        return _read_rng_state(path)
    except ValueError as exc:
        log.warning("%s: the random state kept after ABC generation %d is not used (%s); the continued calibration "
                    "is statistically equivalent to an uninterrupted one, not identical", path, t, exc)
        return None
