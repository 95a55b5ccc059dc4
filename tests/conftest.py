"""Shared fixtures for the nksim test suite.

Simulations in the default (not slow) run use small lattices (``lattice.side`` 4-8) so
that the whole suite finishes in a few minutes on 2 cores, numba compilation included.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import pytest

import nksim
from nksim.protocol import EVENT_UNITS, Protocol, protocol_from_dict

#: Lattice side used by the quick tests.
SMALL_SIDE = 8


def build_protocol(
    events: Iterable[tuple[float, str, float]],
    *,
    start_day: float = 0,
    end_day: float = 10,
    assessment_days: Sequence[float] | None = None,
    snapshot_days: Sequence[float] = (),
    patients: Sequence[Mapping] | None = None,
    groups: Mapping[str, Iterable[tuple[float, str, float]]] | None = None,
    infusions_after_lymphodepletion: bool = True,
    nk_product: str = "fresh",
    name: str = "test",
) -> Protocol:
    """A protocol from ``(day, kind, dose)`` tuples (doses in the unit EVENT_UNITS requires).

    ``patients`` defaults to one patient ``p1`` in group ``a``.
    """

    def ev(items):
        return [{"day": d, "kind": k, "dose": x, "unit": EVENT_UNITS[k]} for d, k, x in items]

    data: dict = {
        "protocol": {
            "name": name,
            "start_day": start_day,
            "end_day": end_day,
            "assessment_days": list(assessment_days) if assessment_days is not None else [end_day],
            "snapshot_days": list(snapshot_days),
            "infusions_after_lymphodepletion": infusions_after_lymphodepletion,
            "nk_product": nk_product,
        },
        "events": ev(events),
        "patients": list(patients) if patients is not None else [{"id": "p1", "group": "a"}],
    }
    if groups:
        data["groups"] = {g: {"events": ev(e)} for g, e in groups.items()}
    return protocol_from_dict(data, "<test>")


def fixed_blast_patient(pid: str = "p1", pct: float = 100.0, group: str = "a") -> dict:
    """A protocol patient entry whose baseline marrow blast percentage is fixed."""
    return {"id": pid, "group": group, "baseline_blast_pct": {"value": pct, "unit": "percent"}}


def region_scale(params: nksim.ParameterSet, body_weight: float) -> float:
    """Whole-marrow cells per region cell, computed from the documented formula.

    scale = marrow_cells_per_kg * weight / reference_cellularity / (voxels * K), K = (voxel/cell)^2
    """
    side = params["lattice.side"]
    k = round((params["lattice.voxel_side"] / params["lattice.cell_diameter"]) ** 2)
    capacity = params["anatomy.marrow_cells_per_kg"] * body_weight / (params["anatomy.reference_cellularity"] / 100.0)
    return capacity / (side * side * k)


def voxel_capacity(params: nksim.ParameterSet) -> int:
    return int(round((params["lattice.voxel_side"] / params["lattice.cell_diameter"]) ** 2))


@pytest.fixture(scope="session")
def make_protocol():
    """The :func:`build_protocol` helper as a fixture."""
    return build_protocol


@pytest.fixture(scope="session")
def default_params() -> nksim.ParameterSet:
    return nksim.load_parameters("default")


@pytest.fixture(scope="session")
def small_params(default_params) -> nksim.ParameterSet:
    return default_params.with_values({"lattice.side": SMALL_SIDE}, origin="<tests: small lattice>")


@pytest.fixture(scope="session")
def ahmadvand() -> Protocol:
    return nksim.load_protocol("ahmadvand2023")


@pytest.fixture(scope="session")
def small_cohort(small_params, ahmadvand):
    """The shipped trial protocol, all 10 patients x 2 replicates, on an 8 x 8 lattice."""
    return nksim.simulate_cohort(small_params, ahmadvand, replicates=2, seed=20240611)
