"""experiments/validation/run_validation.py: the table's structure on a tiny configuration (not the numbers)."""
from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

import pytest

import nksim

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "validation" / "run_validation.py"


@pytest.fixture(scope="module")
def validation():
    spec = importlib.util.spec_from_file_location("run_validation", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod        # dataclasses look their module up while the class is built
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        sys.modules.pop(spec.name, None)
        raise
    return mod


@pytest.fixture(scope="module")
def quick_run(validation, tmp_path_factory):
    out = tmp_path_factory.mktemp("validation")
    # tiny: 4 x 4 voxels over the same region, 2 patients per regimen, 2 virtual trials, no figure
    rows, results, paths = validation.run(replicates=5, seed=1, out=out, quick=True, figure=False,
                                          lattice_overrides={"lattice.side": 4, "lattice.voxel_side": 4000.0},
                                          patients=2)
    return rows, results, paths, out


def test_table_structure(validation, quick_run):
    rows, results, paths, out = quick_run
    assert set(results) == {r.key for r in (*validation.REGIMENS, *validation.REFERENCE)}
    for ds in results.values():
        assert ds.sizes["replicate"] == 2 and ds.sizes["patient"] == 2      # --quick: 2 virtual trials
        assert float(ds["time"].max()) >= 28
    trials = {r.trial for r in rows}
    for reg in validation.REGIMENS:
        assert reg.trial in trials
    quantities = " ".join(r.quantity for r in rows)
    for word in ("IL-15", "share expanding", "peak donor NK per uL", "day of peak", "detectable at day 14",
                 "detectable at day 28", "Hi-Cy/Flu vs lower-intensity"):
        assert word in quantities
    for r in rows:
        assert r.agrees in {"yes", "no", "n/a"}
        assert r.published and r.simulated and r.rule and r.source
        assert r.role in {"validation", "calibration target"}
    assert all(r.agrees == "n/a" for r in rows if r.role == "calibration target")
    text = validation.format_table(rows)
    header = text.splitlines()[0]
    for col in ("trial/regimen", "quantity", "published", "simulated", "agrees"):
        assert col in header
    assert len(text.splitlines()) == len(rows) + 2
    assert validation.markdown_table(rows).count("\n") == len(rows) + 1


def test_outputs_written(quick_run):
    rows, _, paths, out = quick_run
    with open(paths["csv"]) as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == len(rows)
    assert {"trial", "quantity", "published", "simulated", "agrees", "rule", "median", "p05", "p95"} <= set(table[0])
    payload = json.loads(Path(paths["json"]).read_text())
    assert payload["meta"]["replicates"] == 2
    assert payload["meta"]["parameter_status"] == nksim.load_parameters("default").status
    assert len(payload["rows"]) == len(rows)


def test_main_quick_cli(validation, tmp_path, capsys, monkeypatch):
    """The command line with --quick (here on a 4 x 4 lattice through the resolution table)."""
    monkeypatch.setitem(validation.RESOLUTIONS, "calibration", {"lattice.side": 4, "lattice.voxel_side": 4000.0})
    assert validation.main(["--quick", "--out", str(tmp_path), "--seed", "2"]) == 0
    printed = capsys.readouterr().out
    assert "agrees" in printed and "models/default.toml" in printed
    assert (tmp_path / "validation.png").stat().st_size > 0


def test_remission_rows_give_the_published_share_beside_both_potencies(validation):
    rems = (validation.Remission("ahmadvand2023", "Ahmadvand", 0, 9),
            validation.Remission("no_such_protocol", "not shipped", 3, 10))
    rows = validation.remission_rows(replicates=2, seed=3, resolution="calibration", workers=1, remissions=rems,
                                     bootstrap=500)
    ahm, missing = rows
    assert ahm["observed"] == 0.0 and ahm["ci95"][0] == 0.0 and 0.30 < ahm["ci95"][1] < 0.36  # exact: 0-33.6 %
    assert set(ahm["models"]) == set(validation.POTENCY_MODELS)
    for q in ahm["models"].values():
        assert 0.0 <= q["p05"] <= q["median"] <= q["p95"] <= 1.0
        assert q["agrees"] == (q["p05"] <= 0.0 <= q["p95"])
    assert missing["skipped"] == "protocol not shipped" and missing["models"] == {}
    table = validation.remission_markdown(rows)
    assert "0/9 = 0 % (0-34 %)" in table and "protocol not shipped" in table
