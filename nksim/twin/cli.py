"""``nksim twin`` (argument definitions and command)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..argtypes import int_at_least

_pos_int = int_at_least(1, "positive integer")


def add_twin_parser(sub) -> None:
    """Add the ``twin`` subcommand to an argparse subparsers object."""
    p = sub.add_parser("twin", help="condition on one patient's series and compare her next infusions",
                       description="Weight a bank of virtual patients (posterior draws x random effects) by one "
                       "patient's measurements up to the decision day, resample, and simulate every candidate next "
                       "infusion with common random numbers: the recommendation, its uncertainty and diagnostics.")
    p.add_argument("spec", type=Path, help="twin spec TOML (e.g. experiments/twin/example.toml)")
    p.add_argument("--out", type=Path, required=True, help="output folder: REPORT.md, twin.nc, twin.png")
    p.add_argument("--workers", type=_pos_int, default=None, help="simulation threads (default: CPU count)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="TABLE.KEY=VALUE",
                   help="override a spec value, e.g. --set twin.resample=100 --set twin.bank.draws=10")
    p.add_argument("--no-figures", action="store_true", help="write REPORT.md and twin.nc only")


def cmd_twin(args: argparse.Namespace) -> int:
    """``nksim twin``: returns 0; input errors are one line (exit 2)."""
    import os

    from .run import twin
    from .spec import load_spec

    spec = load_spec(args.spec, args.overrides)
    print(f"twin '{spec.name}': patient {spec.patient_id}, decision on day {spec.decision_day:g}; bank "
          f"{spec.bank_draws * spec.bank_patients} virtual patients, {len(spec.candidates())} candidates x "
          f"{spec.resample} resampled", flush=True)
    res = twin(spec, args.out, workers=args.workers or os.cpu_count() or 1, figures=not args.no_figures)
    a = res.dataset.attrs
    print(f"effective sample size {a['effective_sample_size']:.1f}; prior-data share "
          f"{100 * a['prior_predictive_share']:.1f} %{' (ATYPICAL)' if a['atypical'] else ''}")
    if a.get("conditioning") == "abc-smc":
        print(f"patient-level ABC-SMC: {a['smc_particles']} particles, {a['smc_stages']} stages, "
              f"{a['smc_simulations']} simulations" + ("" if a["smc_converged"] else
                                                        " -- NOT CONVERGED (raise [twin.smc] max_stages)"))
    print(("best: " + a["best_label"]) if a["separable"] else "the data cannot separate the candidates "
          f"(largest mean: {a['best_label']})")
    print(f"report: {args.out / 'REPORT.md'}")
    return 0
