"""The quantity declarations (nksim.quantities) and everything derived from them agree."""
from __future__ import annotations

import cf_units
import numpy as np
import pytest

import nksim
from nksim import quantities as Q
from nksim.engine import layout as L
from nksim.engine.build import kernel_parameters
from nksim.output import COUNTERS, TIME_VARIABLES
from nksim.patients import draw_effects
from nksim.protocol import EVENT_CODES


def test_kernel_slots_are_unique_and_cover_every_kernel_parameter():
    assert len(set(Q.KERNEL_SLOTS)) == len(Q.KERNEL_SLOTS) == L.N_P
    for spec in Q.PARAMETERS.values():
        assert (spec.slot in L.KP._fields) == spec.kernel, spec.key


def test_derived_inputs_name_existing_parameters():
    for d in Q.DERIVED_INPUTS:
        for key in d.uses:
            assert key in Q.PARAMETERS, f"{d.slot} uses unknown key {key}"


@pytest.mark.parametrize("unit", sorted({s.unit for s in Q.PARAMETERS.values()}
                                        | {d.unit for d in Q.DERIVED_INPUTS}
                                        | {v.units for v in Q.all_variables().values()}
                                        | {u for _, u, _ in Q.BLOOD_STATE}))
def test_every_declared_unit_is_udunits(unit):
    cf_units.Unit(unit)  # raises ValueError for a unit CF tools cannot parse


def test_event_codes_are_the_layout_codes():
    assert EVENT_CODES == {name: getattr(L.EV, name) for name in L.EV._fields}
    assert [k.name for k in Q.EVENT_KINDS] == list(EVENT_CODES)


def test_output_tables_follow_the_declarations():
    assert list(TIME_VARIABLES) == [v.name for v in Q.RECORD]
    assert all(TIME_VARIABLES[v.name] == (i, v.units, v.long_name) for i, v in enumerate(Q.RECORD))
    assert COUNTERS == tuple(name for name, _ in Q.COUNTERS)


def test_kernel_parameters_follow_the_declarations():
    """Every slot is filled from its declaration: kernel=True parameters unchanged, derived ones by derive()."""
    params = nksim.load_parameters("default")
    eff = draw_effects(params, np.random.default_rng(0))
    kp = kernel_parameters(params, eff, -9.0, 365.0, nk_product="expanded")
    for spec in Q.PARAMETERS.values():
        if spec.kernel:
            assert kp[getattr(L.KP, spec.slot)] == params[spec.key], spec.key
    # the NK product selects the trafficking parameters
    assert kp[L.KP.donor_tissue_uptake_rate] == params["expanded_nk.tissue_uptake_rate"]
    assert kp[L.KP.donor_tissue_return_rate] == params["expanded_nk.tissue_return_rate"]
    fresh = kernel_parameters(params, eff, -9.0, 365.0, nk_product="fresh")
    assert fresh[L.KP.donor_tissue_uptake_rate] == params["nk.tissue_uptake_rate"]
    assert fresh[L.KP.donor_tissue_return_rate] == params["nk.tissue_return_rate"]
    with pytest.raises(ValueError, match="unknown NK product"):
        kernel_parameters(params, eff, -9.0, 365.0, nk_product="frozen")
    assert kp[L.KP.nk_refractory_days] == params["nk.refractory_time"] / 24.0
    assert kp[L.KP.n_steps] == (365 + 9) * 24 / params["numerics.dt"]
    assert kp[L.KP.blast_net_growth_rate] == eff.blast_net_growth_rate
    assert np.all(np.isfinite(kp))


def test_every_record_column_is_written_by_the_kernel():
    """Day 0 of a run holds a value in every column that is defined before any NK cell arrives."""
    params = nksim.load_parameters("default").with_values({"lattice.side": 4})
    ds = nksim.simulate(params, "ahmadvand2023", seed=1)
    undefined_without_agents = {"nk_exhausted_fraction"}
    for v in Q.RECORD:
        first = ds[v.name].isel(time=0).item()
        assert np.isfinite(first) or v.name in undefined_without_agents, v.name
        assert ds[v.name].attrs == {"units": v.units, "long_name": v.long_name}


def test_observables_use_one_formula():
    rec = np.zeros((3, L.N_R))
    rec[:, L.R.donor_nk_blood] = [0.0, 1.0, 3.0]
    rec[:, L.R.host_nk_blood] = [0.0, 3.0, 1.0]
    rec[:, L.R.host_t_blood] = [0.0, 4.0, 4.0]
    np.testing.assert_allclose(Q.observe("donor_chimerism_nk", rec), [0.0, 25.0, 75.0])
    np.testing.assert_allclose(Q.observe("donor_chimerism_pbmc", rec), [0.0, 12.5, 37.5])
    with pytest.raises(KeyError, match="unknown observable"):
        Q.observe("no_such_thing", rec)


def test_mesa_rules_expose_every_kernel_slot():
    pytest.importorskip("mesa")
    from nksim.mesa_ref.model import Rules

    kp = np.arange(L.N_P, dtype=float) + 0.5
    rules = Rules(kp)
    for name in L.KP._fields:
        expected = int(kp[getattr(L.KP, name)]) if name in Q.INTEGER_SLOTS else kp[getattr(L.KP, name)]
        assert getattr(rules, name) == expected
    with pytest.raises(AttributeError):
        rules.donor_kill_probability = 0.1


def test_cache_guard_discards_caches_of_another_layout(tmp_path):
    from nksim.engine import cache_guard

    class FakeCache:
        _cache_path = str(tmp_path)

    class FakeDispatcher:
        _cache = FakeCache()

    (tmp_path / "kernel.run_patient-1.py311.nbi").write_text("x")
    (tmp_path / "kernel.run_patient-1.py311.1.nbc").write_text("x")
    (tmp_path / "other.f-1.py311.nbi").write_text("x")
    # blood.py's cached functions freeze the layout too (a kernel recompiled after a layout change links them:
    # 2026-12-06, a new kernel slot with blood.py's cache kept gave wrong allo-priming and runaway expansion)
    (tmp_path / "blood.rk4_blood-1.py311.nbi").write_text("x")
    assert cache_guard.check(FakeDispatcher(), ("kernel", "blood"), "digest-a") is True
    assert not list(tmp_path.glob("kernel.*")) and not list(tmp_path.glob("blood.*"))
    assert (tmp_path / "other.f-1.py311.nbi").exists()
    (tmp_path / "kernel.run_patient-1.py311.nbi").write_text("x")
    assert cache_guard.check(FakeDispatcher(), "kernel", "digest-a") is False  # same layout: kept
    assert (tmp_path / "kernel.run_patient-1.py311.nbi").exists()
    assert cache_guard.check(FakeDispatcher(), "kernel", "digest-b") is True
