"""Checkpoints of ``nksim run``: finished simulations kept on disk until the output is written.

A checkpoint is a folder (``<out>/.partial`` for ``nksim run``) holding

* ``run.json`` -- the identity of the run (a SHA-256 of everything that determines the numbers:
  parameter values, protocol, seed, replicates, the nksim version and the result code) and a
  readable description of it;
* one ``<patient key>-<replicate>.npz`` per finished (patient, replicate) simulation: the raw
  kernel arrays and the patient's random effects, tagged with the identity.

Every file is written atomically (temporary file, then rename), so a run killed at any moment
(Ctrl-C, SIGTERM, SIGKILL, a power cut before the rename) leaves only whole files; an ``.npz``
is a zip archive with a CRC per array, so a file that cannot be read back whole is recomputed,
never used. Simulation (patient, replicate) has its own random streams
(:mod:`nksim.streams`), so a run continued from a checkpoint gives the Dataset bit for bit
identical to an uninterrupted run. A checkpoint of other inputs is refused, never mixed in.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import fields, is_dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ._version import __version__
from .engine.raw import RawRun
from .errors import NksimInputError
from .parameters import ParameterSet
from .patients import PatientEffects
from .protocol import Protocol
from .streams import patient_key

#: Modules whose code determines a simulation's raw arrays (hashed into the identity).
_RESULT_MODULES = ("engine/blood.py", "engine/build.py", "engine/kernel.py", "engine/layout.py", "engine/pcg64.py",
                   "engine/samplers.py", "simulate.py", "patients.py", "streams.py", "protocol.py", "parameters.py",
                   "quantities.py")

_EFFECT_FIELDS = tuple(f.name for f in fields(PatientEffects))


def _plain(obj: Any) -> Any:
    """``obj`` as JSON-able plain data (dataclasses and mappings as dicts, tuples as lists, floats exact)."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return repr(obj)


@lru_cache(maxsize=1)
def _code_digest() -> str:
    """SHA-256 (16 hex digits) of the nksim version and of the modules that determine raw simulation output."""
    h = hashlib.sha256(__version__.encode())
    root = Path(__file__).resolve().parent
    for rel in _RESULT_MODULES:
        h.update(rel.encode())
        h.update((root / rel).read_bytes())
    return h.hexdigest()[:16]


def run_identity(params: ParameterSet, protocol: Protocol, seed: int, replicates: int,
                 patients: Iterable[str]) -> dict[str, Any]:
    """What determines the numbers of a cohort run, as plain data (its digest names the checkpoint's run).

    The protocol is taken whole except its ``origin`` (the path it was read from).
    """
    proto = _plain(protocol)
    proto.pop("origin", None)
    return {"parameters": params.values(), "protocol": proto, "seed": int(seed), "replicates": int(replicates),
            "patients": list(patients), "nksim_version": __version__, "code": _code_digest()}


def _digest(identity: Mapping[str, Any]) -> str:
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def _differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """The top-level entries where two identities differ, readably (for the refusal message)."""
    out = []
    for key in new:
        if old.get(key) == new[key]:
            continue
        if key == "parameters" and isinstance(old.get(key), dict):
            keys = sorted(k for k in set(old[key]) | set(new[key]) if old[key].get(k) != new[key].get(k))
            out.append(f"parameter values ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})")
        elif key in ("seed", "replicates", "nksim_version"):
            out.append(f"{key} {old.get(key)} (now {new[key]})")
        else:
            out.append(key)
    return ", ".join(out) or "its identity"


def _write_atomic(path: Path, write) -> None:
    """Call ``write(file object)`` on a temporary file next to ``path``, then rename it to ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class RunCheckpoint:
    """The checkpoint folder of one cohort run (see the module docstring).

    Create it with the run's inputs, call :meth:`check` before simulating (refuses a checkpoint
    of other inputs), :meth:`load` to get the finished simulations, :meth:`save` after each
    one, and :meth:`discard` once the final output is written.
    """

    def __init__(self, folder: str | Path, params: ParameterSet, protocol: Protocol, seed: int, replicates: int,
                 patients: Iterable[str] | None = None):
        self.folder = Path(folder)
        ids = [p.id for p in protocol.patients] if patients is None else list(patients)
        self.identity = run_identity(params, protocol, seed, replicates, ids)
        self.digest = _digest(self.identity)
        self.total = len(ids) * int(replicates)

    @property
    def _meta(self) -> Path:
        return self.folder / "run.json"

    def _file(self, patient: str, replicate: int) -> Path:
        return self.folder / f"{patient_key(patient):08x}-{int(replicate)}.npz"

    def check(self, *, discard_other: bool = False) -> None:
        """Refuse (NksimInputError naming the folder and what differs) a checkpoint of another run.

        ``discard_other``: delete such a checkpoint instead (``nksim run --overwrite``).
        An unreadable ``run.json`` counts as another run's.
        """
        if not self.folder.exists():
            return
        try:
            stored = json.loads(self._meta.read_text(encoding="utf-8"))
            same = stored.get("digest") == self.digest
            old = stored.get("identity", {})
        except (OSError, ValueError, AttributeError):
            same, old = False, {}
        if not self._meta.exists() and not any(self.folder.glob("*.npz")):
            return  # an empty folder (killed before the first simulation was kept)
        if same:
            return
        if discard_other:
            self.discard()
            return
        n = len(list(self.folder.glob("*.npz")))
        raise NksimInputError(
            f"holds {n} finished simulations of another run (it differs in {_differences(old, self.identity)}); "
            "they are never mixed into this one: finish that run with its own command, or delete the folder "
            "(or pass --overwrite) to discard them", source=self.folder, key="checkpoint")

    def _ensure(self) -> None:
        if self._meta.exists():
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        blob = json.dumps({"digest": self.digest, "identity": self.identity}, sort_keys=True, indent=1).encode()
        _write_atomic(self._meta, lambda fh: fh.write(blob))

    def save(self, run: RawRun) -> None:
        """Keep one finished simulation (atomic write)."""
        self._ensure()
        effects = np.array([getattr(run.effects, f) for f in _EFFECT_FIELDS], dtype=np.float64)
        arrays = {"identity": np.array(self.digest), "patient": np.array(run.patient),
                  "replicate": np.array(run.replicate, dtype=np.int64), "effects": effects,
                  "rec": run.rec, "cnt": run.cnt, "snaps": run.snaps}
        _write_atomic(self._file(run.patient, run.replicate), lambda fh: np.savez_compressed(fh, **arrays))

    def _read(self, path: Path) -> RawRun | None:
        """The simulation kept in ``path``, or None if it is not whole or not of this run."""
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["identity"]) != self.digest:
                    return None
                effects = PatientEffects(**dict(zip(_EFFECT_FIELDS, (float(v) for v in z["effects"]))))
                run = RawRun(str(z["patient"]), int(z["replicate"]), effects, z["rec"], z["cnt"], z["snaps"])
        except Exception:  # truncated, garbled (zip CRC) or foreign: recompute it
            return None
        return run if path == self._file(run.patient, run.replicate) else None

    def load(self, jobs: Iterable[tuple[str, int]]) -> dict[tuple[str, int], RawRun]:
        """The kept simulations among ``jobs`` ((patient id, replicate) pairs), read back whole."""
        if not self._meta.exists():
            return {}
        found = {}
        for pid, rep in jobs:
            f = self._file(pid, rep)
            if f.is_file():
                run = self._read(f)
                if run is not None and run.patient == pid and run.replicate == rep:
                    found[(pid, rep)] = run
        return found

    def count(self) -> int:
        """Number of simulations kept (files; not read back)."""
        return len(list(self.folder.glob("*.npz"))) if self._meta.exists() else 0

    def discard(self) -> None:
        """Delete the checkpoint folder (after the final output is written)."""
        shutil.rmtree(self.folder, ignore_errors=True)
