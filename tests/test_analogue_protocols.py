"""The shipped protocols, the analogue-trial protocols in particular.

Miller 2005, Bachanova 2014, NKAE consolidation, CAR-T lymphodepletion: every file loads, every
event has a source, and the cytokine support is there where the trial gave it (docs/model.md s3b:
analogue targets are compared with a simulation of the analogue's own protocol).
"""
from __future__ import annotations

import tomllib

import numpy as np
import pytest

import nksim
from nksim.protocol import PROTOCOLS_DIR

SHIPPED = sorted(p.stem for p in PROTOCOLS_DIR.glob("*.toml"))

#: Analogue protocols and the cytokine event kinds the trial gave (empty: none).
ANALOGUES: dict[str, set[str]] = {
    "miller2005_lo_cy_mp": {"il2"},
    "miller2005_flu": {"il2"},
    "miller2005_hi_cy_flu": {"il2"},
    "bachanova2014_hi_cy_flu": {"il2"},
    "nkae_consolidation": {"il2"},
    "cart_flucy_ld": set(),
}
#: Protocols of trials without cytokine support.
NO_CYTOKINES = {"ahmadvand2023", "hi_cy_flu", "cart_flucy_ld"}
CYTOKINES = {"il2", "il15_agonist", "n803", "rhil15_iv", "rhil15_sc"}


def test_analogue_protocols_are_shipped():
    assert set(ANALOGUES) <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_protocol_loads(name):
    p = nksim.load_protocol(name)
    assert p.name == name
    assert p.patients
    for pt in p.patients:
        evs = p.events_for(pt)
        assert any(e.kind == "nk_infusion" for e in evs)
        assert evs[0].day >= p.start_day


@pytest.mark.parametrize("name", SHIPPED)
def test_every_event_has_a_source(name):
    """Each event names its source, or (older files) sits in a dose group that names one."""
    raw = tomllib.loads((PROTOCOLS_DIR / f"{name}.toml").read_text())
    assert raw["protocol"].get("source", "").strip()
    for i, e in enumerate(raw.get("events", [])):
        assert str(e.get("source", "")).strip(), f"{name}: events[{i}] has no source"
    for gid, g in raw.get("groups", {}).items():
        for i, e in enumerate(g.get("events", [])):
            has = str(e.get("source", "")).strip() or str(g.get("source", "")).strip()
            assert has, f"{name}: groups.{gid}.events[{i}] has no source (nor has its group)"


@pytest.mark.parametrize("name", sorted(ANALOGUES))
def test_analogue_events_carry_their_own_source(name):
    p = nksim.load_protocol(name)
    for evs in (p.events, *p.groups.values()):
        assert all(e.source.strip() for e in evs)


@pytest.mark.parametrize("name", sorted(set(SHIPPED) & (set(ANALOGUES) | NO_CYTOKINES)))
def test_cytokine_support_where_the_trial_used_it(name):
    p = nksim.load_protocol(name)
    want = ANALOGUES.get(name, set())
    for pt in p.patients:
        kinds = {e.kind for e in p.events_for(pt)} & CYTOKINES
        assert kinds == want, f"{name}/{pt.id}: cytokine events {kinds}, trial used {want}"


def test_analogue_regimens():
    """Doses and days read from the sources (see each file's header)."""
    def days(p, pid, kind):
        return sorted(e.day for e in p.events_for(pid) if e.kind == kind)

    def doses(p, pid, kind):
        return {e.dose for e in p.events_for(pid) if e.kind == kind}

    for name in ("miller2005_hi_cy_flu", "bachanova2014_hi_cy_flu"):
        p = nksim.load_protocol(name)
        for pt in p.patients:
            assert days(p, pt.id, "fludarabine") == [-6, -5, -4, -3, -2]
            assert doses(p, pt.id, "fludarabine") == {25.0}
            assert days(p, pt.id, "cyclophosphamide") == [-5, -4]
            assert doses(p, pt.id, "cyclophosphamide") == {60.0}
            assert days(p, pt.id, "nk_infusion") == [0]
            assert days(p, pt.id, "il2") == [0, 2, 4, 6, 8, 10]      # every other day x 6
    b = nksim.load_protocol("bachanova2014_hi_cy_flu")
    assert doses(b, b.patients[0].id, "il2") == {9.0}                 # 9 x 10^6 units (Fig 1)
    assert {pt.group for pt in b.patients} == {"cd3_depleted", "cd56_selected"}
    flu = nksim.load_protocol("miller2005_flu")
    assert not days(flu, flu.patients[0].id, "cyclophosphamide")
    locy = nksim.load_protocol("miller2005_lo_cy_mp")
    assert not days(locy, locy.patients[0].id, "fludarabine")
    nkae = nksim.load_protocol("nkae_consolidation")
    assert len(nkae.patients) == 7
    assert sum(len(days(nkae, pt.id, "nk_infusion")) for pt in nkae.patients) == 13
    assert all(pt.covariates["baseline_blast_pct"] < 5 for pt in nkae.patients)   # remission
    cart = nksim.load_protocol("cart_flucy_ld")
    for pt in cart.patients:
        bsa, w = pt.covariates["body_surface_area"], pt.covariates["body_weight"]
        assert [pytest.approx(500 * bsa / w, abs=1e-3)] == list(doses(cart, pt.id, "cyclophosphamide"))
        assert days(cart, pt.id, "fludarabine") == [-5, -4, -3]
        assert days(cart, pt.id, "nk_infusion") == [0]


@pytest.mark.parametrize("name", sorted(ANALOGUES))
def test_analogue_protocol_simulates(name):
    """A short run on a tiny lattice: finite blood series, IL-15 rises after lymphodepletion."""
    params = nksim.load_parameters("default").with_values({"lattice.side": 4, "lattice.voxel_side": 4000.0})
    p = nksim.load_protocol(name)
    ds = nksim.simulate_cohort(params, p, patients=[p.patients[0].id], replicates=1, seed=3)
    for v in ("donor_nk_blood", "host_nk_blood", "host_t_blood", "il15"):
        assert np.isfinite(ds[v].values).all()
    assert float(ds.il15.max()) > 1.0


#: The protocols of the responding trials (issue 24, docs/evidence/protocols.md): NK product, tolerant host, and the
#: cytokine (or IL2DT) event kinds of every patient.
RESPONDING: dict[str, tuple[str, bool, set[str]]] = {
    "bachanova2014_il2dt": ("fresh", False, {"il2", "il2dt"}),
    "cooley2019_rhil15_iv": ("fresh", False, {"rhil15_iv"}),
    "cooley2019_rhil15_sc": ("fresh", False, {"rhil15_sc"}),
    "romee2016_ciml": ("ciml", False, {"il2"}),
    "fehniger2018_cndo109": ("fresh", False, set()),
    "bjorklund2018_no_il2": ("fresh", False, set()),
    "curti2011_elderly": ("fresh", False, {"il2"}),
    "geller2011_no_tbi": ("fresh", False, {"il2"}),
    "berrien_elliott2022_n803": ("ciml", False, {"n803"}),
    "berrien_elliott2022_il2": ("ciml", False, {"il2"}),
    "bednarski2022_tolerant": ("ciml", True, set()),
    "shapiro2022_tolerant": ("ciml", True, {"il2"}),
}


@pytest.mark.parametrize("name", sorted(RESPONDING))
def test_responding_trial_protocol_loads_and_simulates(name):
    """Every arm of issue 24 ships: its product, host and cytokines as its header says; a short run is finite."""
    assert name in SHIPPED
    product, tolerant, kinds = RESPONDING[name]
    p = nksim.load_protocol(name)
    assert (p.nk_product, p.host_tolerant) == (product, tolerant)
    for pt in p.patients:
        assert {e.kind for e in p.events_for(pt)} & (CYTOKINES | {"il2dt"}) == kinds, pt.id
    header = (PROTOCOLS_DIR / f"{name}.toml").read_text().split("[protocol]")[0]
    assert "ASSUMPTION" in header and "Confidence" in header  # what is from the source, what is assumed
    params = nksim.load_parameters("default").with_values({"lattice.side": 4, "lattice.voxel_side": 4000.0})
    ds = nksim.simulate_cohort(params, p, patients=[p.patients[0].id], replicates=1, seed=3)
    for v in ("donor_nk_blood", "host_nk_blood", "host_t_blood", "host_treg_blood", "il15", "il15_exogenous"):
        assert np.isfinite(ds[v].values).all(), v
    assert float(ds.donor_nk_total.sel(time=1).max()) > 0
