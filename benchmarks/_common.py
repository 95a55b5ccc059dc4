"""Helpers shared by the benchmark scripts (run them as ``python benchmarks/<script>.py``)."""
from __future__ import annotations

import datetime as _dt
import hashlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def source_digest() -> dict:
    """SHA-256 (16 hex) and mtime of the engine sources: the numbers belong to this code version."""
    out = {}
    for f in sorted((ROOT / "nksim" / "engine").glob("*.py")):
        mtime = _dt.datetime.fromtimestamp(f.stat().st_mtime, _dt.UTC)
        out[f.name] = {"sha256_16": hashlib.sha256(f.read_bytes()).hexdigest()[:16],
                       "mtime_utc": mtime.isoformat(timespec="seconds")}
    return out
