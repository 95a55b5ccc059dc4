"""Write experiments/twin/example_patient.csv: a SYNTHETIC patient made by the model (not trial data).

    python experiments/twin/make_example_patient.py [--overwrite]

The patient is virtual patient ``truth`` of a known posterior draw (printed and written in the
file's header, so a reader can check what ``nksim twin`` recovers), simulated under the schedule
given in ``example.toml`` to day 7, and measured with the spec's assay model (log-normal chimerism
error, detection limit 0.01 %, a 200-cell marrow count); seed fixed, so re-running reproduces the file.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    from nksim import quantities as Q
    from nksim._version import __version__
    from nksim.fileio import write_atomic
    from nksim.parameters import load_parameters
    from nksim.protocol import Patient
    from nksim.simulate import run_one
    from nksim.sweep.draws import parameter_draws
    from nksim.sweep.scenario import build_protocol
    from nksim.twin.likelihood import simulate_measurement
    from nksim.twin.spec import load_spec

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)
    out = HERE / "example_patient.csv"
    if out.exists() and not args.overwrite:
        print(f"{out} exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    # the spec names the file this script writes: read it with this script standing in for the patient file
    spec = load_spec(HERE / "example.toml", [f'twin.patient="{Path(__file__).name}"'])
    base = load_parameters(spec.model_path)
    seed = 777
    draw = parameter_draws(base, 1, spec.draws_from, seed, "example patient")[0]
    params = base.with_values({**draw, **spec.parameters}, origin="example patient")
    proto = build_protocol(spec.given.protocol_dict(name="example", end_day=spec.decision_day,
                                                    assessment_days=[spec.decision_day]), ["truth"], "example")
    run = run_one(params, proto, Patient("truth", "all"), seed, 0)
    rng = np.random.default_rng(seed)
    rows = []
    lod = 0.01
    for day in (1, 3, 7):
        truth = Q.observe("donor_chimerism_pbmc", run.rec)[int(day - proto.start_day)]
        v, below = simulate_measurement("donor_chimerism_pbmc", np.array([truth]), lod, spec.assay, rng)
        value = "<lod" if below[0] else f"{v[0]:.4g}"
        rows.append(f"twin01,{day},donor_chimerism_pbmc,{value},percent,{lod},STR-PCR (synthetic),"
                    f"synthetic: nksim {__version__} (NOT trial data),synthetic")
    b0 = float(run.rec[0, Q.RECORD_INDEX["marrow_blast_pct"]])
    v, _ = simulate_measurement("marrow_blast_pct", np.array([b0]), None, spec.assay, rng)
    rows.append(f"twin01,{proto.start_day:g},marrow_blast_pct,{v[0]:.4g},percent,,aspirate (synthetic),"
                f"synthetic: nksim {__version__} (NOT trial data),synthetic")
    shown = ", ".join(f"{k}={draw[k]:.4g}" for k in sorted(draw)[:6])
    header = [f"# SYNTHETIC patient for experiments/twin/example.toml: NOT trial data. Made by make_example_patient.py "
              f"(nksim {__version__}, seed {seed}): virtual patient 'truth' of one draw from '{spec.draws_from}',",
              f"# simulated under [twin.given] to day {spec.decision_day:g} and measured with [twin.assay]. "
              f"Draw (first keys): {shown} ...",
              "patient,day,quantity,value,unit,lod,method,source,confidence"]
    write_atomic(out, "\n".join(header + rows) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
