"""The search: Optuna's TPE over the design space, in synchronous batches, on the fixed search bank.

Each batch ``b`` builds a fresh in-memory Optuna study holding every earlier trial, with a TPE
sampler seeded from ``(seed, b)`` (:class:`numpy.random.SeedSequence`), asks ``batch_size``
proposals (``constant_liar``: proposals of one batch keep apart), turns each into a feasible
schedule (:meth:`~nksim.optimise.space.DesignSpace.candidate`), evaluates the new schedules on the
search bank (common random numbers: every schedule on the same units) and tells each trial the
mean of the objective over the bank. The proposals are therefore a deterministic function of the
seed and the evaluations: the same seed gives the same trials, whatever the number of workers,
and a killed run, replayed with its kept evaluations (:mod:`nksim.optimise.store`), continues with
exactly the proposals the uninterrupted run would have made.

The search bank's mean of its best schedule is biased upward (it is the maximum of noisy
estimates); it only ranks proposals. The answer comes from the confirm and estimate banks
(:mod:`nksim.optimise.select`).
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .bank import Bank
from .candidate import Candidate
from .select import cluster_mean_se
from .space import DesignSpace
from .store import EvaluationCache, evaluate_cached


@dataclass(frozen=True)
class SearchSettings:
    """Trials in all, per synchronous batch, random start-up trials, seed, objective outcome."""

    trials: int = 48
    batch_size: int = 8
    startup_trials: int = 16
    seed: int = 0
    objective: str = "pft"
    polish_rounds: int = 3

    @property
    def n_batches(self) -> int:
        """Number of synchronous TPE batches."""
        return -(-self.trials // self.batch_size)


@dataclass
class Trial:
    """One proposal: its search parameters, schedule and value on the search bank."""

    number: int
    batch: int
    params: dict[str, Any]
    candidate: Candidate
    value: float
    se: float
    repeat: bool
    source: str = "tpe"


@dataclass
class SearchHistory:
    """Every trial in order, and each distinct schedule's search-bank value."""

    trials: list[Trial] = field(default_factory=list)

    def distinct(self) -> list[Trial]:
        """The first trial of each distinct schedule, in order."""
        return [t for t in self.trials if not t.repeat]

    def top(self, k: int) -> list[Trial]:
        """The ``k`` distinct schedules with the largest search-bank value (ties: the earlier trial)."""
        return sorted(self.distinct(), key=lambda t: (-t.value, t.number))[:k]

    def incumbent(self) -> Trial | None:
        """The distinct schedule with the largest search-bank value so far (None before any trial)."""
        top = self.top(1)
        return top[0] if top else None


def batch_seed(seed: int, batch: int) -> int:
    """The TPE sampler's seed of batch ``batch`` (a 32-bit integer spawned from ``(seed, batch)``)."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, int(batch)]).generate_state(1)[0])


def _sampler(settings: SearchSettings, batch: int):
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=batch_seed(settings.seed, batch),
                                          n_startup_trials=settings.startup_trials,
                                          multivariate=True, group=True, constant_liar=True)


def run_search(problem: Any, space: DesignSpace, bank: Bank, settings: SearchSettings, cache: EvaluationCache, *,
               workers: int = 1, on_batch: Callable[[SearchHistory], None] | None = None,
               on_unit: Callable[[Any], None] | None = None) -> SearchHistory:
    """Search ``space`` on ``bank`` (module docstring); ``on_batch`` is called after every batch."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    history = SearchHistory()
    frozen: list[Any] = []
    seen: set[str] = set()
    for b in range(settings.n_batches):
        n = min(settings.batch_size, settings.trials - b * settings.batch_size)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study = optuna.create_study(direction="maximize", sampler=_sampler(settings, b))
            study.add_trials(frozen)
            asked = [study.ask() for _ in range(n)]
            cands = [space.candidate(t) for t in asked]
        outcomes = evaluate_cached(problem, cands, bank, cache, workers=workers, on_unit=on_unit)
        for t, c, o in zip(asked, cands, outcomes, strict=True):
            mean, se = cluster_mean_se(o[settings.objective], bank)
            history.trials.append(Trial(number=len(history.trials), batch=b, params=dict(t.params), candidate=c,
                                        value=float(mean), se=float(se), repeat=c.key() in seen))
            seen.add(c.key())
            frozen.append(optuna.trial.create_trial(params=dict(t.params), distributions=dict(t.distributions),
                                                    value=float(mean)))
        if on_batch is not None:
            on_batch(history)
    polish(problem, space, bank, settings, cache, history, workers=workers, on_batch=on_batch, on_unit=on_unit)
    return history


def polish(problem: Any, space: DesignSpace, bank: Bank, settings: SearchSettings, cache: EvaluationCache,
           history: SearchHistory, *, workers: int = 1, on_batch: Callable[[SearchHistory], None] | None = None,
           on_unit: Callable[[Any], None] | None = None) -> None:
    """Local search from the incumbent, at most ``settings.polish_rounds`` rounds.

    Each round evaluates the incumbent's one-step neighbours (:meth:`DesignSpace.neighbours`) on the
    search bank and moves to the best if it improves.

    TPE finds the region; with common random numbers the paired differences between neighbours are
    low-noise, so a few hill-climbing steps reach the region's top reliably (deterministic: no
    random numbers, ties broken by the order of the moves).
    """
    seen = {t.candidate.key() for t in history.trials}
    for r in range(settings.polish_rounds):
        best = history.incumbent()
        if best is None:
            return
        moves = [c for c in space.neighbours(best.candidate) if c.key() not in seen]
        if not moves:
            return
        outcomes = evaluate_cached(problem, moves, bank, cache, workers=workers, on_unit=on_unit)
        for c, o in zip(moves, outcomes, strict=True):
            mean, se = cluster_mean_se(o[settings.objective], bank)
            history.trials.append(Trial(number=len(history.trials), batch=settings.n_batches + r, params={},
                                        candidate=c, value=float(mean), se=float(se), repeat=False, source="polish"))
            seen.add(c.key())
        if on_batch is not None:
            on_batch(history)
        if history.incumbent() is best:
            return
