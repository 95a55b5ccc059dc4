"""Interactive browser view of one virtual patient (Mesa SolaraViz).

Needs the ``viz`` extra (``python -m pip install -e ".[viz]"``: Solara, Altair,
Matplotlib through ``mesa[viz]``). Start it with either of::

    python -m nksim.mesa_ref.viz            # serves http://127.0.0.1:8765 (--port, --host)
    solara run nksim.mesa_ref.app           # the same page (nksim/mesa_ref/app.py), Solara's launcher

The page shows the marrow lattice (voxel colour = blast share of the cells, brightness
grows with occupancy; NK agents as dots, yellow = killer-competent, grey = not), live plots of donor
chimerism in blood and of marrow blast %, and sliders for the main parameters and the
schedule (Flu/Cy, two NK infusions). "Reset" rebuilds the patient with the slider values;
each "Step" advances one simulated day. The model is :class:`nksim.mesa_ref.PatientModel`,
the Mesa reference (one agent per cell), so keep the lattice small: the region stands for
the whole marrow with ``scale`` cells per cell place, so a trial dose gives only a few NK
agents on a small lattice (the blood-side chimerism does not depend on the lattice).
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings

import numpy as np
from matplotlib.figure import Figure

from nksim._optional import require
from nksim.engine.layout import S
from nksim.mesa_ref.agents import NKCell
from nksim.mesa_ref.model import PatientModel
from nksim.parameters import load_parameters
from nksim.patients import median_patient_overrides
from nksim.protocol import EVENT_UNITS, Protocol, protocol_from_dict

solara = require("solara", "viz", "nksim.mesa_ref.viz")
with warnings.catch_warnings():
    # Solara's hook linter flags Mesa 3.3's own ComponentsView at import ("use_state found despite early
    # return"): a note about Mesa's code that a user of this view can do nothing about
    warnings.filterwarnings("ignore", message=r".*found despite early return", category=UserWarning)
    _mesa_viz = require("mesa.visualization", "viz", "nksim.mesa_ref.viz", package="mesa[viz]")
Slider, SolaraViz = _mesa_viz.Slider, _mesa_viz.SolaraViz


def view_protocol(*, flu_dose: float = 20.0, cy_dose: float = 20.0, days_before_infusion: int = 7,
                  dose_1: float = 5e6, dose_2: float = 10e6, interval: int = 7, end_day: int = 60) -> Protocol:
    """The Ahmadvand 2023 schedule shape.

    Flu on 3 days and Cy on the last 2 of them, the last
    lymphodepleting dose ``days_before_infusion`` days before the first of two NK infusions
    ``interval`` days apart (doses in kg-1; a dose of 0 means no infusion).
    """
    last = -int(days_before_infusion)

    def ev(day: float, kind: str, dose: float) -> dict:
        return {"day": day, "kind": kind, "dose": dose, "unit": EVENT_UNITS[kind]}

    events = [ev(last - k, "fludarabine", flu_dose) for k in (2, 1, 0) if flu_dose > 0]
    events += [ev(last - k, "cyclophosphamide", cy_dose) for k in (1, 0) if cy_dose > 0]
    events += [ev(day, "nk_infusion", dose) for day, dose in ((0, dose_1), (interval, dose_2))
               if dose > 0 and day < end_day]  # an infusion after the follow-up is dropped
    return protocol_from_dict({
        "protocol": {"name": "view", "start_day": last - 2, "end_day": end_day, "assessment_days": [end_day],
                     "infusions_after_lymphodepletion": False, "nk_product": "expanded"},
        "events": events,
        "patients": [{"id": "view", "group": "a"}],
    }, "<nksim.mesa_ref.viz>")


class PatientView(PatientModel):
    """The reference model with keyword parameters for the sliders; one ``step()`` = one day.

    The patient is the population median (random effects switched off) with the slider
    values; everything else comes from ``models/default.toml``.
    """

    def __init__(self, *, side: int = 32, cells_per_edge: int = 8, baseline_blast_pct: float = 40.0,
                 susceptible_fraction: float = 0.5, blast_growth_rate: float = 0.02, kill_probability: float = 0.5,
                 competent_fraction: float = 0.5, il15_proliferation_max: float = 0.4, rejection_rate: float = 0.2,
                 flu_dose: float = 20.0, cy_dose: float = 20.0, days_before_infusion: int = 7,
                 dose_1: float = 5.0, dose_2: float = 10.0, interval: int = 7, end_day: int = 60, seed: int = 0):
        params = load_parameters("default").with_values({
            "lattice.side": side,
            "lattice.voxel_side": cells_per_edge * 10.0,
            "lattice.cell_diameter": 10.0,
            "blasts.baseline_pct": baseline_blast_pct,
            "blasts.susceptible_fraction": susceptible_fraction,
            "blasts.net_growth_rate": blast_growth_rate,
            "nk.kill_probability": kill_probability,
            "nk.competent_fraction": competent_fraction,
            "nk.il15_proliferation_max": il15_proliferation_max,
            "nk.rejection_rate": rejection_rate,
            **median_patient_overrides(),
        }, origin="<viz sliders>")
        protocol = view_protocol(flu_dose=flu_dose, cy_dose=cy_dose, days_before_infusion=days_before_infusion,
                                 dose_1=dose_1 * 1e6, dose_2=dose_2 * 1e6, interval=interval, end_day=end_day)
        super().__init__(params, protocol, seed=int(seed))

    def step(self) -> None:
        """Advance one simulated day."""
        for _ in range(self.rules.steps_per_day):
            self.advance()

    def history(self):
        """The daily DataCollector table with chimerism columns (percent) added."""
        df = self.datacollector.get_model_vars_dataframe().set_index("time")
        donor, host_nk = df["donor_nk_blood"], df["host_nk_blood"]
        host_t = df["host_t_blood"] + df["host_treg_blood"]  # all host T cells (Tregs since 0.6.0)
        df["chimerism_nk"] = 100.0 * donor / (donor + host_nk).where(donor + host_nk > 0)
        df["chimerism_pbmc"] = 100.0 * donor / (donor + host_nk + host_t).where(donor + host_nk + host_t > 0)
        return df


# --------------------------------------------------------------------------- components
def lattice_figure(model: PatientModel) -> Figure:
    """The marrow lattice as a figure.

    Colour = blast share of cells (blue normal .. red blast), brightness
    grows with occupancy (black = empty); NK agents as dots (yellow competent, grey not).
    """
    counts = model.lattice_counts()
    blasts = counts[S.lattice_susceptible_blasts] + counts[S.lattice_resistant_blasts]
    cells = blasts + counts[S.lattice_normal]
    share = np.divide(blasts, cells, out=np.zeros(blasts.shape), where=cells > 0)
    occupancy = cells / model.rules.voxel_capacity
    brightness = np.where(cells > 0, 0.35 + 0.65 * occupancy, 0.0)
    rgb = np.stack([share, 0.15 * np.ones_like(share), 1.0 - share], axis=-1) * brightness[..., None]
    fig = Figure(figsize=(5.2, 5.2))
    ax = fig.subplots()
    ax.imshow(rgb, interpolation="nearest", origin="upper")
    nks = model.agents_of(NKCell)
    if nks:
        jitter = model.rng.uniform(-0.3, 0.3, size=(len(nks), 2))
        rc = np.array([a.cell.coordinate for a in nks], dtype=float) + jitter
        colours = ["gold" if a.competent else "lightgrey" for a in nks]
        ax.scatter(rc[:, 1], rc[:, 0], s=30, c=colours, edgecolors="black", linewidths=0.6)
    obs = model.observe()
    day = model.rules.start_day + model.step_index // model.rules.steps_per_day
    ax.set_title(f"day {day:+.0f}: blasts {obs['marrow_blast_pct']:.1f} %, NK agents {len(nks)}\n"
                 f"{model.rules.lattice_side}x{model.rules.lattice_side} voxels, K = {model.rules.voxel_capacity}, "
                 f"1 cell = {model.rules.scale:.2g} cells", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


def LatticeView(model: PatientModel):
    """Solara component: the lattice figure."""
    return solara.FigureMatplotlib(lattice_figure(model), format="png", bbox_inches="tight")


def _time_plot(model: PatientView, columns: dict[str, str], ylabel: str, log: bool = False):
    df = model.history()
    fig = Figure(figsize=(5.2, 3.0))
    ax = fig.subplots()
    for col, label in columns.items():
        values = df[col].where(df[col] > 0) if log else df[col]  # log axis: zero (no donor cells) not drawn
        ax.plot(df.index, values, marker=".", label=label)
    for event in model.protocol.events_for(model.patient):
        ax.axvline(event.day, color="tab:green" if event.kind == "nk_infusion" else "tab:grey", lw=0.6, ls=":")
    if log and (df[list(columns)] > 0).any().any():
        ax.set_yscale("log")
    ax.set_xlabel("day since first NK infusion")
    ax.set_ylabel(ylabel)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return solara.FigureMatplotlib(fig, format="png")


def ChimerismPlot(model: PatientView):
    """Solara component: donor chimerism of blood NK and lymphocytes over time."""
    return _time_plot(model, {"chimerism_nk": "of blood NK", "chimerism_pbmc": "of blood lymphocytes"},
                      "donor chimerism (%)", log=True)


def BlastPlot(model: PatientView):
    """Solara component: marrow blast percentage over time."""
    return _time_plot(model, {"marrow_blast_pct": "marrow blasts"}, "blasts (% of nucleated cells)")


MODEL_PARAMS = {
    "side": Slider("lattice side (voxels)", 32, 8, 64, 4),
    "cells_per_edge": Slider("cells per voxel edge (K = n^2)", 8, 2, 16, 1),
    "baseline_blast_pct": Slider("baseline blasts (%)", 40.0, 5.0, 90.0, 5.0),
    "susceptible_fraction": Slider("NK-susceptible blast fraction", 0.5, 0.05, 0.95, 0.05),
    "blast_growth_rate": Slider("net blast growth (day-1)", 0.02, 0.0, 0.1, 0.005),
    "kill_probability": Slider("kill probability per contact", 0.5, 0.0, 1.0, 0.05),
    "competent_fraction": Slider("killer-competent fraction", 0.5, 0.0, 1.0, 0.05),
    "il15_proliferation_max": Slider("IL-15 max proliferation (day-1)", 0.4, 0.0, 1.5, 0.05),
    "rejection_rate": Slider("rejection at baseline host T (day-1)", 0.2, 0.0, 1.0, 0.05),
    "flu_dose": Slider("fludarabine (mg m-2 day-1, 3 days)", 20.0, 0.0, 40.0, 5.0),
    "cy_dose": Slider("cyclophosphamide (mg kg-1 day-1, 2 days)", 20.0, 0.0, 60.0, 5.0),
    "days_before_infusion": Slider("last Flu/Cy dose to 1st infusion (days)", 7, 1, 14, 1),
    "dose_1": Slider("1st NK dose (1e6 kg-1)", 5.0, 1.0, 200.0, 1.0),  # > 0: day 0 is the first infusion
    "dose_2": Slider("2nd NK dose (1e6 kg-1)", 10.0, 0.0, 200.0, 1.0),
    "interval": Slider("interval between infusions (days)", 7, 1, 28, 1),
    "end_day": Slider("follow-up (days)", 60, 14, 365, 1),
    "seed": Slider("seed", 0, 0, 999, 1),
}


def make_page(model: PatientView | None = None):
    """The SolaraViz page (a Solara element)."""
    return SolaraViz(
        model if model is not None else PatientView(),
        components=[LatticeView, ChimerismPlot, BlastPlot],
        model_params=MODEL_PARAMS,
        name="nksim - Mesa reference model, one patient (1 step = 1 day)",
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m nksim.mesa_ref.viz``: serve the page with Solara on ``--host``/``--port``."""
    ap = argparse.ArgumentParser(prog="python -m nksim.mesa_ref.viz", description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--open", action="store_true", help="open a browser tab")
    args = ap.parse_args(argv)
    cmd = [sys.executable, "-m", "solara", "run", "nksim.mesa_ref.app", "--host", args.host,
           "--port", str(args.port), "--production", "--open" if args.open else "--no-open"]
    os.execv(sys.executable, cmd)  # replace this process: stopping it stops the server


if __name__ == "__main__":
    sys.exit(main())
