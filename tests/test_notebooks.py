"""The example notebooks (experiments/notebooks/*.ipynb) run headless and write their figures.

Each notebook is executed with nbclient in a fresh ``python3`` kernel, with a cell injected after
its ``parameters``-tagged cell that sends the figures to ``outputs/notebooks/ci/<notebook>/``
(git-ignored; emptied before each run), lowers the figure
resolution, switches matplotlib to Agg (figures are saved, not also rendered inline) and ignores
results already in ``outputs/`` (so the run is the same on every machine).
The committed notebooks must carry no outputs and no execution counts.
"""
from __future__ import annotations

import ast
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "experiments" / "notebooks"
NOTEBOOKS = sorted(NB_DIR.glob("*.ipynb"))

#: Figures each notebook must write (notebooks not listed must write at least one PNG).
EXPECTED_PNGS = {
    "a_trial_simulated_vs_observed": {"a_time_courses.png", "a_time_courses_by_group.png",
                                      "a_swimmer_vs_observed.png", "a_km_dose_groups.png", "a_lattice.png"},
    "b_two_infusion_schedules": {"b_heatmap_pfs.png", "b_heatmap_peak_chimerism.png", "b_contrasts.png",
                                 "b_km_schedules.png", "b_time_courses_schedules.png"},
    "c_calibration_diagnostics": {"c_morris.png", "c_abc_diagnostics.png", "c_prior_posterior.png",
                                  "c_predictive_check.png", "c_swimmer_calibrated.png",
                                  "c_time_courses_calibrated.png"},
    "d_python_api_tour": {"d_one_patient.png", "d_trial_figure.png", "d_lattice.png"},
    "e_twin_one_patient": {"e_twin.png"},
}

#: Values injected after the parameters cell (only names that the parameters cell defines).
OVERRIDES = {"DPI": 40, "USE_EXISTING": False}


def parameters_cell(nb) -> int:
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "a notebook needs exactly one cell tagged 'parameters'"
    assert nb.cells[tagged[0]].cell_type == "code"
    assert tagged[0] == min(i for i, c in enumerate(nb.cells) if c.cell_type == "code"), \
        "the parameters cell must be the first code cell"
    return tagged[0]


def defined_names(source: str) -> set[str]:
    return {t.id for node in ast.parse(source).body if isinstance(node, ast.Assign)
            for t in node.targets if isinstance(t, ast.Name)}


def test_notebooks_exist():
    names = {p.stem for p in NOTEBOOKS}
    assert set(EXPECTED_PNGS) <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_notebook_is_clean(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), "first cell: title"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}: committed with outputs"
            assert cell.execution_count is None, f"{path.name}: committed with execution counts"
    names = defined_names(nb.cells[parameters_cell(nb)].source)
    assert "OUT" in names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_headless(path):
    import shutil

    # the figures of the CI run go under outputs/ (git-ignored), one scratch folder per notebook,
    # emptied first so that only this run's files count
    figures = ROOT / "outputs" / "notebooks" / "ci" / path.stem
    shutil.rmtree(figures, ignore_errors=True)
    nb = nbformat.read(path, as_version=4)
    i = parameters_cell(nb)
    names = defined_names(nb.cells[i].source)
    values = {"OUT": str(figures), **{k: v for k, v in OVERRIDES.items() if k in names}}
    injected = nbformat.v4.new_code_cell(
        "# injected by tests/test_notebooks.py (figures are only saved: no inline rendering)\n"
        "import matplotlib.pyplot as plt\nplt.switch_backend('agg')\n"
        + "\n".join(f"{k} = {v!r}" for k, v in values.items()))
    injected.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(i + 1, injected)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    t0 = time.perf_counter()
    client.execute()  # raises CellExecutionError (with the traceback) on any error
    elapsed = time.perf_counter() - t0
    written = {p.name for p in figures.glob("*.png")}
    expected = EXPECTED_PNGS.get(path.stem)
    if path.stem == "c_calibration_diagnostics" and (ROOT / "calibration" / "posterior" / "recovery.nc").exists():
        expected = expected | {"c_recovery.png"}  # the recovery figure only when a recovery study is committed
    if expected is None:
        assert written, f"{path.name} wrote no figure"
    else:
        assert expected <= written, f"{path.name}: missing {sorted(expected - written)}"
    for name in written:
        assert (figures / name).stat().st_size > 5_000, f"{name} is (nearly) empty"
    print(f"{path.name}: {elapsed:.1f} s")
