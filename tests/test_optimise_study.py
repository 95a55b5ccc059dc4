"""The committed optimal-schedule study (experiments/studies/optimal_schedule/): its script runs from a checkout."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("optuna")

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "studies" / "optimal_schedule" / "run_study.py"


def _run(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path / "out"), "--report",
                           str(tmp_path / "report"), "--workers", "2", *extra], capture_output=True, text=True,
                          timeout=600, check=False)


def test_quick_study_of_one_run_writes_its_report_and_figures(tmp_path):
    r = _run(tmp_path, "--only", "trial_product", "--no-grid-check")
    assert r.returncode == 0, r.stderr[-2000:]
    dest = tmp_path / "report" / "trial_product"
    for name in ("REPORT.md", "history.csv", "near_optimal.png", "profiles.png", "per_draw_best.png"):
        assert (dest / name).is_file(), name
    assert "Selected schedule" in (dest / "REPORT.md").read_text()
    assert not (tmp_path / "report" / "study.json").exists()  # a quick run never replaces the committed record


def test_committed_record_matches_the_committed_report():
    record = json.loads((SCRIPT.parent / "results" / "study.json").read_text())
    report = (SCRIPT.parent / "REPORT.md").read_text()
    assert set(record["runs"]) == {"trial_product", "expanding_two_infusions", "expanding_nk_potent"}
    for r in record["runs"].values():
        assert r["attrs"]["selected_label"] in report
        assert f"{r['attrs']['held_out_gain']:+.1f} days" in report
    assert record["grid_check"]["grid_best_in_near_optimal_set"] is True


@pytest.mark.slow
def test_quick_study_with_the_grid_check(tmp_path):
    r = _run(tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    rec = json.loads(r.stdout[r.stdout.index("{"):])
    assert rec["grid_check"]["grid_best_in_near_optimal_set"] is True
    assert 1 <= rec["grid_check"]["near_optimal_size"] <= len(rec["grid_check"]["grid"])
