"""Calibration against the Ahmadvand 2023 trial (``nksim calibrate``, ``nksim screen``, ``nksim score``).

Public API::

    load_config, CalibrationConfig        # calibration/<name>.toml
    load_observed, default_observed       # calibration/data/ (outcomes, analogue targets, series)
    load_registry, Registry               # calibration/data/trials/: every trial arm's observations and the
    TrialArm, TrialObservation            #   declared target / held-out split (issue 26)
    simulated_per_patient, simulated_per_trial, predictive_interval   # their simulated counterparts
    score_registry, scores_summary, scores_table   # every target / held-out row scored against a model
                                                   #   (nksim score; nksim/calibration/scoring.py)
    CalibrationModel                      # theta -> virtual trial -> summaries, distance
    run_calibration                       # ABC-SMC + posterior + predictive checks + figures
    run_screen, screen_figure             # Morris elementary effects (SALib); figure from nksim.plot
    run_registry_screen                   # the same screen on the registry's rows (nksim screen --registry)
    run_recovery, recovery_figure         # parameter recovery on synthetic trials; figure from nksim.plot
    apply_to_model                        # posterior medians -> a model TOML

See docs/architecture.md ("Calibration") and calibration/README.md.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "load_config": ".config", "CalibrationConfig": ".config",
    "load_observed": ".data", "default_observed": ".data", "ObservedTrial": ".data",
    "load_registry": ".registry", "Registry": ".registry", "TrialArm": ".registry",
    "TrialObservation": ".registry", "simulated_per_patient": ".registry", "simulated_per_trial": ".registry",
    "predictive_interval": ".registry",
    "score_registry": ".scoring", "scores_summary": ".scoring", "scores_table": ".scoring",
    "scores_markdown": ".scoring",
    "CalibrationModel": ".model",
    "run_calibration": ".run",
    "run_screen": ".screen", "screen_figure": "..plot.calibration", "run_registry_screen": ".registry_screen",
    "run_recovery": ".recovery", "recovery_figure": "..plot.calibration",
    "apply_to_model": ".posterior",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:  # lazy: pyabc/SALib load only when used
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module 'nksim.calibration' has no attribute '{name}'")
