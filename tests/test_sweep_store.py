"""Zarr store: resume after interruption, refusal of foreign/other-spec stores (in-process runs)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import zarr
from _sweep_util import tiny_spec

from nksim.errors import NksimInputError, OutputExistsError
from nksim.sweep import SweepStore, build_plan, run_batch, run_sweep, store_digest


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted in-process run of the tiny sweep and its digest."""
    out = tmp_path_factory.mktemp("ref") / "ref.zarr"
    rep = run_sweep(tiny_spec(), out, workers=0)
    assert rep.complete and rep.batches_run == rep.n_batches == 8
    return out, store_digest(out)


def test_store_contents(reference):
    out, _ = reference
    st = SweepStore.open_existing(out)
    plan = st.plan
    assert st.done().all() and st.scenarios_complete().all()
    x = st.read("donor_nk_blood")
    assert x.shape == (4, 1, 3, 2, plan.n_time) and x.dtype == np.float32
    t = st.coord("time")
    assert t[0] == -9 and t[-1] == 120
    assert np.all(np.isfinite(x))  # all scenarios start on day -9 here
    r = st.read("response")
    assert r.dtype == np.int8 and set(np.unique(r)) <= {0, 1, 2, 3}
    assert list(st.coord("label"))[:2] == ["interval=7 dose_split=100/0", "interval=7 dose_split=50/50"]


def test_resume_after_interruption_equals_uninterrupted(tmp_path, reference):
    _, digest = reference
    out = tmp_path / "resumed.zarr"
    first = run_sweep(tiny_spec(), out, workers=0, max_batches=3)  # "killed" after 3 batches
    assert first.batches_run == 3 and not first.complete
    st = SweepStore.open_existing(out, writable=True)
    assert list(st.pending()) == [3, 4, 5, 6, 7]
    # a batch whose chunks were written but whose done flag was not (killed in between)
    res = run_batch(st.plan, 5)
    s, d, ps, rs = st.plan.batch(5)
    for name, data in res["arrays"].items():
        st.array(name)[s, d, ps, rs] = data + (1 if data.dtype.kind == "f" else 0)  # and even corrupted
    second = run_sweep(tiny_spec(), out, workers=0)
    assert second.batches_before == 3 and second.batches_run == 5 and second.complete
    assert store_digest(out) == digest
    third = run_sweep(tiny_spec(), out, workers=0)  # complete: nothing to do, nothing changed
    assert third.batches_run == 0 and store_digest(out) == digest


def test_store_of_another_spec_is_refused_and_untouched(tmp_path, reference):
    ref, digest = reference
    out = tmp_path / "copy.zarr"
    shutil.copytree(ref, out)
    with pytest.raises(OutputExistsError, match="belongs to another sweep.*never mixed"):
        run_sweep(tiny_spec(sweep={"seed": 12}), out, workers=0)
    with pytest.raises(OutputExistsError, match="another sweep"):
        run_sweep(tiny_spec(parameters={"lattice.side": 7}), out, workers=0)
    assert store_digest(out) == digest


def test_other_nksim_version_is_refused(tmp_path, reference):
    ref, _ = reference
    out = tmp_path / "old.zarr"
    shutil.copytree(ref, out)
    meta = json.loads((out / "zarr.json").read_text())
    meta["attributes"]["nksim_version"] = "0.0.1"
    (out / "zarr.json").write_text(json.dumps(meta))
    before = store_digest(out)
    with pytest.raises(OutputExistsError, match="written by nksim 0.0.1"):
        run_sweep(tiny_spec(), out, workers=0)
    assert store_digest(out) == before


def test_foreign_or_unreadable_stores_are_refused(tmp_path):
    spec = tiny_spec()
    plan = build_plan(spec)
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "data.csv").write_text("a,b\n1,2\n")
    with pytest.raises(NksimInputError, match="not a Zarr v3 store"):
        run_sweep(spec, folder, workers=0)
    assert (folder / "data.csv").read_text() == "a,b\n1,2\n"
    afile = tmp_path / "file.zarr"
    afile.write_text("x")
    with pytest.raises(NksimInputError, match="not a directory"):
        SweepStore.open_for_run(afile, plan)
    other = tmp_path / "other.zarr"
    zarr.open_group(str(other), mode="w").attrs["owner"] = "someone else"
    with pytest.raises(NksimInputError, match="not an nksim sweep store"):
        run_sweep(spec, other, workers=0)
    corrupt = tmp_path / "corrupt.zarr"
    corrupt.mkdir()
    (corrupt / "zarr.json").write_text("{not json")
    with pytest.raises(NksimInputError, match="cannot read the Zarr metadata"):
        SweepStore.open_existing(corrupt)
    with pytest.raises(NksimInputError, match="no such sweep store"):
        SweepStore.open_existing(tmp_path / "missing.zarr")
    empty = tmp_path / "empty.zarr"
    empty.mkdir()  # an empty folder is fine: the store is created there
    assert SweepStore.open_for_run(empty, plan).pending().size == plan.n_batches
    assert not list(tmp_path.glob(".*creating*"))


def test_result_from_another_plan_is_not_written(tmp_path, reference):
    ref, _ = reference
    out = tmp_path / "x.zarr"
    shutil.copytree(ref, out)
    st = SweepStore.open_existing(out, writable=True)
    other = build_plan(tiny_spec(sweep={"seed": 99}))
    with pytest.raises(RuntimeError, match="cannot go into store"):
        st.write_batch(run_batch(other, 0))


def test_resume_with_corrected_parameter_sources_equals_uninterrupted(tmp_path):
    """A model file whose source texts were corrected mid-sweep resumes the store: same numbers, same store."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    original = tiny_spec(sweep={"model": str(root / "models" / "default.toml")})
    digest = store_digest(run_sweep(original, tmp_path / "whole.zarr", workers=0).store)
    text = (root / "models" / "default.toml").read_text()
    edited = tmp_path / "default.toml"
    edited.write_text(re.sub(r'(?m)^source = "', 'source = "corrected: ', text))
    out = tmp_path / "resumed.zarr"
    first = run_sweep(original, out, workers=0, max_batches=3)
    assert first.batches_run == 3 and not first.complete
    second = run_sweep(tiny_spec(sweep={"model": str(edited)}), out, workers=0)
    assert second.batches_before == 3 and second.complete
    assert store_digest(out) == digest
    changed = tmp_path / "changed.zarr"
    shutil.copytree(out, changed)
    moved = tmp_path / "moved.toml"                                     # a value changed: refused, untouched
    moved.write_text(re.sub(r"(?m)^value = 70\.0$", "value = 71.0", text, count=1))
    assert moved.read_text() != text
    with pytest.raises(OutputExistsError, match="another sweep"):
        run_sweep(tiny_spec(sweep={"model": str(moved)}), changed, workers=0)
    assert store_digest(changed) == digest
