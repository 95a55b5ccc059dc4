"""Per-row outcome emulators learnt from a simulation bank, and the likelihood they give.

The joint fit (:mod:`nksim.calibration.joint`) needs, for every calibration row and any parameter
vector ``u`` (a point of the prior's unit cube), the probability of the row's observation. The
simulator is stochastic and dear, so the probability is learnt from the bank
(:mod:`nksim.calibration.bank`) with the structure the data have:

* **share rows** (``k`` of ``n`` patients: CR at day 28, expansion on day 14): patients of a trial
  are independent given the parameters, so ``k ~ Binomial(n, p(u))``, where ``p(u)`` is the
  probability that one patient of the row's protocol counts as a success. ``p(u)`` is learnt by a
  probabilistic classifier on the bank's labelled patients (every simulated patient that counts is
  one example ``(u, 0/1)``): scikit-learn's ``HistGradientBoostingClassifier`` (log-loss, early
  stopping on a validation split), which represents the interactions the screen found (NK-driven
  remission only when killing, homing and expansion are all high). Only the mean function is
  learnt; the binomial form is exact for independent patients.
* **quantity rows** (a median over patients: the CAR-T day-0 lymphocyte count, NKAE's peak
  chimerism): ``log10`` of the per-virtual-trial statistic is modelled as Gaussian with mean
  ``m(u)`` (``HistGradientBoostingRegressor``) and a constant standard deviation (the out-of-fold
  residuals' RMS: the spread of a trial's statistic at fixed parameters plus the emulator's error).

The emulators' own error is not propagated beyond that residual term; the recovery study
(:func:`nksim.calibration.joint.coverage_study`) is what checks whether the resulting posterior
intervals are honest.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import NksimInputError
from .registry import TrialObservation

if TYPE_CHECKING:  # pragma: no cover
    import xarray

#: Probabilities are kept inside [P_FLOOR, 1 - P_FLOOR] in the binomial likelihood (a classifier's
#: 0 or 1 would make one observation veto a region outright).
P_FLOOR = 1e-4
#: Smallest residual standard deviation of a quantity row (log10 units).
SD_FLOOR = 0.02


@dataclass
class RowEmulator:
    """The learnt outcome model of one registry row (see module docstring)."""

    name: str
    kind: str  # "share" or "quantity"
    model: Any
    sd: float = math.nan  # quantity rows: residual standard deviation of log10(statistic)
    n_examples: int = 0
    diagnostics: dict[str, float] = field(default_factory=dict)

    def predict(self, u: np.ndarray) -> np.ndarray:
        """``p(u)`` for share rows; ``m(u)`` (log10 scale) for quantity rows. ``u``: (n, k) unit-cube points."""
        u = np.atleast_2d(np.asarray(u, float))
        if self.kind == "share":
            if isinstance(self.model, float):  # a row with a single class in the bank
                return np.full(u.shape[0], self.model)
            return self.model.predict_proba(u)[:, 1]
        return self.model.predict(u)

    def log_likelihood(self, u: np.ndarray, observed: tuple[float, float]) -> np.ndarray:
        """Log-likelihood of the row's observation at each point of ``u``.

        ``observed``: ``(k, n)`` for share rows; ``(log10 value, sd)`` for quantity rows, ``sd`` the
        observation's own error (log10 units), added in quadrature to the emulator's residual one.
        """
        from scipy import stats

        if self.kind == "share":
            k, n = observed
            p = np.clip(self.predict(u), P_FLOOR, 1.0 - P_FLOOR)
            return stats.binom.logpmf(int(k), int(n), p)
        y, sd_obs = observed
        return stats.norm.logpdf(y, loc=self.predict(u), scale=math.hypot(self.sd, sd_obs))


def _classifier(seed: int):
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(learning_rate=0.05, max_iter=400, max_leaf_nodes=15, min_samples_leaf=40,
                                          l2_regularization=1.0, early_stopping=True, validation_fraction=0.15,
                                          n_iter_no_change=20, random_state=seed)


def _regressor(seed: int):
    from sklearn.ensemble import HistGradientBoostingRegressor

    return HistGradientBoostingRegressor(learning_rate=0.05, max_iter=400, max_leaf_nodes=15, min_samples_leaf=20,
                                         l2_regularization=1.0, early_stopping=True, validation_fraction=0.15,
                                         n_iter_no_change=20, random_state=seed)


def share_examples(u: np.ndarray, outcome: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labelled patients of a share row: ``u`` (points, k) and ``outcome`` (points, slot) -> (X, y)."""
    ok = np.isfinite(outcome)
    rows = np.nonzero(ok)[0]
    y = outcome[ok]
    if not np.isin(y, (0.0, 1.0)).all():
        raise NksimInputError("a share row's outcomes must be 0, 1 or NaN", source="fit_row_emulator", key="outcome")
    return u[rows], y.astype(int)


def fit_row_emulator(name: str, kind: str, u: np.ndarray, outcome: np.ndarray | None = None,
                     statistic: np.ndarray | None = None, *, seed: int = 0) -> RowEmulator:
    """Learn one row's emulator from bank points ``u`` (points, k).

    Share rows use ``outcome`` (points, slot: 0/1/NaN per simulated patient); quantity rows use
    ``statistic`` (points,: the row's statistic per point, in the row's unit, > 0).
    """
    from sklearn.model_selection import KFold, cross_val_predict

    u = np.asarray(u, float)
    if kind == "share":
        X, y = share_examples(u, np.asarray(outcome, float))
        if y.size == 0:
            raise NksimInputError(f"row {name!r}: no simulated patient counts in the bank", source="fit_row_emulator",
                                  key=name)
        if y.min() == y.max():  # one class only: the bank says the share is (almost) always 0 or 1
            frac = (y.sum() + 0.5) / (y.size + 1.0)  # Jeffreys-like estimate, never exactly 0 or 1
            return RowEmulator(name, kind, float(frac), n_examples=int(y.size),
                               diagnostics={"share_in_bank": float(y.mean())})
        model = _classifier(seed).fit(X, y)
        p = model.predict_proba(X)[:, 1]
        # held-out quality: log-loss of 5-fold out-of-fold predictions against the prior-share baseline
        cv = KFold(5, shuffle=True, random_state=seed)
        p_oof = np.clip(cross_val_predict(_classifier(seed), X, y, cv=cv, method="predict_proba")[:, 1], 1e-6,
                        1 - 1e-6)
        base = np.clip(y.mean(), 1e-6, 1 - 1e-6)
        ll = float(-np.mean(y * np.log(p_oof) + (1 - y) * np.log1p(-p_oof)))
        ll0 = float(-np.mean(y * np.log(base) + (1 - y) * np.log1p(-base)))
        return RowEmulator(name, kind, model, n_examples=int(y.size),
                           diagnostics={"share_in_bank": float(y.mean()), "mean_p_fitted": float(p.mean()),
                                        "log_loss_out_of_fold": ll, "log_loss_constant": ll0,
                                        "skill": 1.0 - ll / ll0 if ll0 > 0 else 0.0})
    if kind != "quantity":
        raise NksimInputError(f"kind must be 'share' or 'quantity', got {kind!r}", source="fit_row_emulator",
                              key="kind")
    s = np.asarray(statistic, float)
    ok = np.isfinite(s) & (s > 0)
    if ok.sum() < 20:
        raise NksimInputError(f"row {name!r}: fewer than 20 bank points with a positive statistic",
                              source="fit_row_emulator", key=name)
    X, y = u[ok], np.log10(s[ok])
    model = _regressor(seed).fit(X, y)
    cv = KFold(5, shuffle=True, random_state=seed)
    resid = y - cross_val_predict(_regressor(seed), X, y, cv=cv)
    sd = max(float(np.sqrt(np.mean(resid ** 2))), SD_FLOOR)
    return RowEmulator(name, kind, model, sd=sd, n_examples=int(y.size),
                       diagnostics={"sd_log10": sd, "sd_log10_constant": float(np.std(y)),
                                    "skill": 1.0 - sd ** 2 / max(float(np.var(y)), 1e-12)})


def observed_pair(o: TrialObservation, sd_log10: float = 0.0) -> tuple[float, float]:
    """A row's observation as the emulator's likelihood takes it: ``(k, n)`` or ``(log10 value, sd_log10)``."""
    if o.is_share:
        if o.k is None or o.n is None:
            raise NksimInputError(f"share row {o.name!r} needs k and n to be fitted", source=o.file, key=o.key)
        return float(o.k), float(o.n)
    if o.value is None or not o.value > 0:
        raise NksimInputError(f"quantity row {o.name!r} needs a positive value to be fitted", source=o.file, key=o.key)
    return math.log10(o.value), float(sd_log10)


@dataclass
class JointEmulator:
    """The emulators of all fitted rows (in order) and the summed log-likelihood they give."""

    rows: tuple[RowEmulator, ...]

    def log_likelihood(self, u: np.ndarray, data: Mapping[str, tuple[float, float]]) -> np.ndarray:
        """Summed log-likelihood of ``data`` (row name -> observed pair) at each point of ``u``."""
        u = np.atleast_2d(np.asarray(u, float))
        total = np.zeros(u.shape[0])
        for r in self.rows:
            if r.name in data:
                total += r.log_likelihood(u, data[r.name])
        return total

    def row(self, name: str) -> RowEmulator:
        """The emulator of row ``name``."""
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(name)


def fit_joint_emulator(bank: xarray.Dataset, rows: Sequence[TrialObservation], *, seed: int = 0) -> JointEmulator:
    """Learn every row's emulator from a bank (:func:`nksim.calibration.bank.open_bank`)."""
    u = bank["u"].values
    names = list(bank["row"].values)
    out = []
    for i, o in enumerate(rows):
        if o.name not in names:
            raise NksimInputError(f"row {o.name!r} is not in the bank", source="fit_joint_emulator", key=o.name)
        j = names.index(o.name)
        if o.is_share:
            out.append(fit_row_emulator(o.name, "share", u, outcome=bank["outcome"].values[:, j, :], seed=seed + i))
        else:
            out.append(fit_row_emulator(o.name, "quantity", u, statistic=bank["statistic"].values[:, j], seed=seed + i))
    return JointEmulator(tuple(out))
