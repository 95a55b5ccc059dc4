"""Evaluations kept on disk: one checksummed file per (bank, schedule), so a killed run resumes.

``<out>/evaluations/<bank>/<schedule digest>.npz`` holds the per-unit outcomes of one schedule on
one bank, the run's identity digest, the bank's digest, the schedule's key and a SHA-256 of all of
them and the arrays' bytes. Files are written atomically (temporary file, then rename), so a run
killed at any moment leaves only whole files. A file is used only when it reads back whole, is of
this run, bank and schedule and matches its digest; any other is deleted (with a warning naming
it) and the schedule simulated again. Because the search is a deterministic function of the
evaluations (:mod:`nksim.optimise.search`), a resumed run replays the same proposals, finds their
evaluations here and continues exactly where the killed one stopped.
"""
from __future__ import annotations

import hashlib
import io
import json
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..errors import NksimWarning
from ..fileio import write_atomic
from .bank import Bank
from .candidate import Candidate
from .problem import OUTCOMES


def _content_digest(identity: str, bank: str, key: str, arrays: Mapping[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for part in (identity, bank, key):
        h.update(part.encode())
        h.update(b"\0")
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name], dtype=np.float64)
        h.update(name.encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


class EvaluationCache:
    """Per-(bank, schedule) outcomes in memory and, with a folder, on disk (module docstring)."""

    def __init__(self, folder: str | Path | None, identity: str):
        self.folder = Path(folder) if folder is not None else None
        self.identity = identity
        self._mem: dict[tuple[str, str], dict[str, np.ndarray]] = {}
        self.loaded = 0
        self.simulated = 0
        self.discarded: list[Path] = []

    def _path(self, bank: Bank, cand: Candidate) -> Path:
        assert self.folder is not None
        digest = hashlib.sha256(cand.key().encode()).hexdigest()[:24]
        return self.folder / bank.name / f"{digest}.npz"

    def get(self, bank: Bank, cand: Candidate) -> dict[str, np.ndarray] | None:
        """The kept outcomes of ``cand`` on ``bank``, or None (a damaged or foreign file is deleted)."""
        key = (bank.digest(), cand.key())
        if key in self._mem:
            return self._mem[key]
        if self.folder is None:
            return None
        path = self._path(bank, cand)
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"][()]))
                arrays = {name: np.array(z[name], dtype=np.float64) for name in OUTCOMES}
            ok = (meta.get("identity") == self.identity and meta.get("bank") == bank.digest()
                  and meta.get("key") == cand.key()
                  and meta.get("sha256") == _content_digest(self.identity, bank.digest(), cand.key(), arrays)
                  and all(a.shape == (bank.n_units,) for a in arrays.values()))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError):
            ok = False
        if not ok:
            warnings.warn(f"{path}: a damaged or foreign evaluation file was deleted; the schedule is simulated "
                          "again", NksimWarning, stacklevel=2)
            path.unlink(missing_ok=True)
            self.discarded.append(path)
            return None
        self._mem[key] = arrays
        self.loaded += 1
        return arrays

    def put(self, bank: Bank, cand: Candidate, arrays: Mapping[str, np.ndarray]) -> None:
        """Keep the outcomes (atomically on disk when the cache has a folder)."""
        arrays = {name: np.ascontiguousarray(arrays[name], dtype=np.float64) for name in OUTCOMES}
        self._mem[(bank.digest(), cand.key())] = arrays
        if self.folder is None:
            return
        path = self._path(bank, cand)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"identity": self.identity, "bank": bank.digest(), "key": cand.key(),
                "sha256": _content_digest(self.identity, bank.digest(), cand.key(), arrays)}
        buf = io.BytesIO()
        np.savez(buf, meta=np.array(json.dumps(meta)), **arrays)
        write_atomic(path, buf.getvalue())


def evaluate_cached(problem, cands: list[Candidate], bank: Bank, cache: EvaluationCache, workers: int = 1,
                    on_unit=None) -> list[dict[str, np.ndarray]]:
    """Outcomes of every candidate on ``bank``: kept ones read, the others simulated (each schedule once)."""
    todo: dict[str, Candidate] = {}
    for c in cands:
        if c.key() not in todo and cache.get(bank, c) is None:
            todo[c.key()] = c
    if todo:
        new = problem.evaluate(list(todo.values()), bank, workers=workers, on_unit=on_unit)
        cache.simulated += len(todo)
        for c, o in zip(todo.values(), new, strict=True):
            cache.put(bank, c, o)
    out = []
    for c in cands:
        got = cache.get(bank, c)
        assert got is not None
        out.append(got)
    return out
