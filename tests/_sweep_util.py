"""Helpers for the sweep tests: tiny specs (6x6 lattice, 120 days) built in memory."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

TINY: dict[str, Any] = {
    "sweep": {"name": "tiny", "seed": 11, "end_day": 120, "assessment_days": [28, 90], "landmark_day": 90,
              "batch_size": 4},
    "cohort": {"patients": 3, "replicates": 2},
    "parameters": {"lattice.side": 6},
    "factors": {"interval": [7, 14], "dose_split": [[100, 0], [50, 50]]},
}


def tiny(**changes: Any) -> dict[str, Any]:
    """A copy of TINY with tables updated (``factors`` replaced): tiny(cohort={"patients": 5})."""
    d = copy.deepcopy(TINY)
    for table, values in changes.items():
        if values is None:
            d.pop(table, None)
        elif isinstance(values, dict) and isinstance(d.get(table), dict) and table != "factors":
            d[table].update(values)
        else:
            d[table] = values
    return d


def tiny_spec(**changes: Any):
    from nksim.sweep import spec_from_dict

    return spec_from_dict(tiny(**changes), "<tiny>")


def write_toml(path: Path, data: dict[str, Any]) -> Path:
    """Minimal TOML writer for the test specs (tables of scalars/lists, arrays of tables)."""
    def val(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v + '"'
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(val(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f'"{k}" = {val(x)}' for k, x in v.items()) + "}"
        return repr(v)

    lines = []
    for table, body in data.items():
        if isinstance(body, list):
            for item in body:
                lines.append(f"[[{table}]]")
                lines += [f'"{k}" = {val(v)}' for k, v in item.items()]
        else:
            lines.append(f"[{table}]")
            lines += [f'"{k}" = {val(v)}' for k, v in body.items()]
    path.write_text("\n".join(lines) + "\n")
    return path
