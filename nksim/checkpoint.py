"""Checkpoints of ``nksim run``: finished simulations kept on disk until the output is written.

A checkpoint is a folder (``<out>/.partial`` for ``nksim run``) holding

* ``run.json`` -- the identity of the run (a SHA-256 of everything that determines the numbers:
  parameter values, protocol, seed, replicates, the nksim version and the result code) and a
  readable description of it;
* one ``<patient key>-<replicate>.npz`` per finished (patient, replicate) simulation: the raw
  kernel arrays and the patient's random effects, tagged with the identity and with a SHA-256
  of its content (identity, patient, replicate and every array's type, shape and bytes).

Every file is written atomically (temporary file, then rename), so a run killed at any moment
(Ctrl-C, SIGTERM, SIGKILL, a power cut before the rename) leaves only whole files. A kept file
is used only when it reads back whole (an ``.npz`` is a zip archive with a CRC per array), is
of this run, matches its content digest and has the arrays' expected types and shapes; any
other (truncated, garbled, altered, of another run or shape) is deleted and recomputed, never
used, and :meth:`RunCheckpoint.verify` says so. Simulation (patient, replicate) has its own
random streams (:mod:`nksim.streams`), so a run continued from a checkpoint gives the Dataset
bit for bit identical to an uninterrupted run. A checkpoint of other inputs is refused, never
mixed in; a damaged or missing ``run.json`` is rewritten when every kept file carries this
run's identity, and refused (naming it) otherwise.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import fields, is_dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ._version import __version__
from .engine.raw import RawRun
from .errors import NksimInputError, NksimWarning
from .parameters import ParameterSet
from .patients import PatientEffects
from .protocol import Protocol
from .streams import patient_key

#: Modules whose code determines a simulation's raw arrays (hashed into the identity).
_RESULT_MODULES = ("engine/blood.py", "engine/build.py", "engine/kernel.py", "engine/layout.py", "engine/pcg64.py",
                   "engine/samplers.py", "simulate.py", "patients.py", "streams.py", "protocol.py", "parameters.py",
                   "quantities.py")

_EFFECT_FIELDS = tuple(f.name for f in fields(PatientEffects))

#: The arrays of a kept simulation covered by its content digest, in digest order.
_ARRAYS = ("effects", "rec", "cnt", "snaps")


def _content_digest(identity: str, patient: str, replicate: int, arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 of a kept simulation: its run's identity, patient, replicate and every array's type, shape and bytes."""
    h = hashlib.sha256(f"{identity}|{patient}|{int(replicate)}|".encode())
    for name in _ARRAYS:
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.reshape(-1).view(np.uint8))  # the bytes, without a copy
    return h.hexdigest()


def _expected_arrays(params: ParameterSet, protocol: Protocol) -> dict[str, tuple[tuple[int, ...], np.dtype]] | None:
    """(shape, dtype) of each array of a simulation of ``params`` and ``protocol``, as the kernel returns them.

    None when the parameters cannot be resolved (the run then fails before simulating anyway).
    """
    from .engine import layout
    from .engine.build import resolution

    try:
        res = resolution(params)
    except Exception:
        return None
    spd = res.steps_per_day
    days = int(round((protocol.end_day - protocol.start_day) * spd)) // spd + 1  # as run_patient's n_days + 1
    return {"effects": ((len(_EFFECT_FIELDS),), np.dtype(np.float64)),
            "rec": ((days, layout.N_R), np.dtype(np.float64)),
            "cnt": ((days, layout.N_C), np.dtype(np.int64)),
            "snaps": ((len(protocol.snapshot_days), layout.N_S, res.side, res.side), np.dtype(np.int32))}


class _Unusable(Exception):
    """A kept file that must not be used (the message says why)."""


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
    of other inputs), :meth:`verify` to read back the kept simulations (deleting those that
    cannot be used; it says which), :meth:`load` to get them, :meth:`save` after each new one,
    and :meth:`discard` once the final output is written.
    """

    def __init__(self, folder: str | Path, params: ParameterSet, protocol: Protocol, seed: int, replicates: int,
                 patients: Iterable[str] | None = None):
        self.folder = Path(folder)
        ids = [p.id for p in protocol.patients] if patients is None else list(patients)
        self.identity = run_identity(params, protocol, seed, replicates, ids)
        self.digest = _digest(self.identity)
        self.total = len(ids) * int(replicates)
        self._expected = _expected_arrays(params, protocol)
        self._verified: dict[tuple[str, int], RawRun] | None = None  # read back by verify(), for the next load()

    @property
    def _meta(self) -> Path:
        return self.folder / "run.json"

    def _file(self, patient: str, replicate: int) -> Path:
        return self.folder / f"{patient_key(patient):08x}-{int(replicate)}.npz"

    def _record(self) -> tuple[str | None, dict[str, Any], str | None]:
        """(stored digest, stored identity, why ``run.json`` cannot be used: None when it can)."""
        try:
            stored = json.loads(self._meta.read_text(encoding="utf-8"))
            digest, old = stored["digest"], stored.get("identity", {})
            if not isinstance(digest, str) or not isinstance(old, dict):
                raise ValueError("no run digest")
        except FileNotFoundError:
            return None, {}, "it is missing"
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            return None, {}, f"it is damaged or unreadable: {type(exc).__name__}: {exc}".rstrip(": ")
        return digest, old, None

    @staticmethod
    def _tag(path: Path) -> str | None:
        """The run digest a kept file is tagged with (None if it cannot be read)."""
        try:
            with np.load(path, allow_pickle=False) as z:
                return str(z["identity"])
        except Exception:
            return None

    def check(self, *, discard_other: bool = False) -> list[str]:
        """Refuse (NksimInputError naming the folder and what differs) a checkpoint of another run.

        ``discard_other``: delete such a checkpoint instead (``nksim run --overwrite``).
        A damaged or missing ``run.json`` beside kept simulations is rewritten when every
        readable kept file carries this run's identity (they are then verified one by one as
        always), and refused naming it otherwise. Returns what was repaired, one line each.
        """
        if not self.folder.exists():
            return []
        kept = sorted(self.folder.glob("*.npz"))
        if not self._meta.exists() and not kept:
            return []  # an empty folder (killed before the first simulation was kept)
        digest, old, problem = self._record()
        if problem is None and digest == self.digest:
            return []
        if discard_other:
            self.discard()
            return []
        if problem is None:
            n = len(kept)
            raise NksimInputError(
                f"holds {n} finished simulations of another run (it differs in {_differences(old, self.identity)}); "
                "they are never mixed into this one: finish that run with its own command, or delete the folder "
                "(or pass --overwrite) to discard them", source=self.folder, key="checkpoint")
        tags = {self._tag(p) for p in kept}
        others = tags - {self.digest, None}
        if others:
            mine = sum(self._tag(p) == self.digest for p in kept)
            raise NksimInputError(
                f"its record {self._meta} cannot be used ({problem}) and {len(kept) - mine} of its {len(kept)} kept "
                "simulations belong to another run; they are never mixed into this one: delete the folder (or pass "
                "--overwrite) to discard them", source=self.folder, key="checkpoint")
        self._write_meta()
        if self.digest in tags:
            return [f"{self._meta} was not usable ({problem}); rewritten for this run, whose identity every readable "
                    f"kept simulation in {self.folder} carries"]
        return []

    def verify(self) -> list[str]:
        """Read back every kept simulation; delete those that cannot be used (they are recomputed).

        A file is used only when it reads back whole, is of this run, matches its content digest
        and holds arrays of the expected types and shapes. Returns one line naming the deleted
        files and why (empty if none). The next :meth:`load` returns the simulations read here.
        """
        self._verified = {}
        if not self._meta.exists():
            return []
        bad = []
        for path in sorted(self.folder.glob("*.npz")):
            try:
                run = self._read(path)
            except _Unusable as exc:
                bad.append(f"{path.name}: {exc}")
                try:
                    path.unlink(missing_ok=True)
                except OSError:  # a read-only folder: it is never read as a result all the same
                    pass
                continue
            self._verified[(run.patient, run.replicate)] = run
        if not bad:
            return []
        shown = "; ".join(bad[:3]) + (f"; and {len(bad) - 3} more" if len(bad) > 3 else "")
        return [f"{len(bad)} kept simulation file{'s' if len(bad) > 1 else ''} in {self.folder} cannot be used and "
                f"{'are' if len(bad) > 1 else 'is'} recomputed ({shown})"]

    def _write_meta(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        blob = json.dumps({"digest": self.digest, "identity": self.identity}, sort_keys=True, indent=1).encode()
        _write_atomic(self._meta, lambda fh: fh.write(blob))

    def _ensure(self) -> None:
        if not self._meta.exists():
            self._write_meta()

    def save(self, run: RawRun) -> None:
        """Keep one finished simulation (atomic write, with its content digest)."""
        self._ensure()
        effects = np.array([getattr(run.effects, f) for f in _EFFECT_FIELDS], dtype=np.float64)
        arrays = {"effects": effects, "rec": run.rec, "cnt": run.cnt, "snaps": run.snaps}
        content = _content_digest(self.digest, run.patient, run.replicate, arrays)
        arrays.update(identity=np.array(self.digest), patient=np.array(run.patient),
                      replicate=np.array(run.replicate, dtype=np.int64), content=np.array(content))
        _write_atomic(self._file(run.patient, run.replicate), lambda fh: np.savez_compressed(fh, **arrays))

    def _read(self, path: Path) -> RawRun:
        """The simulation kept in ``path``; :class:`_Unusable` saying why it must not be used."""
        try:
            with np.load(path, allow_pickle=False) as z:
                if "content" not in z.files:
                    raise _Unusable("no content digest (not written by this nksim)")
                tag, content = str(z["identity"]), str(z["content"])
                patient, replicate = str(z["patient"]), int(z["replicate"])
                arrays = {name: z[name] for name in _ARRAYS}
        except _Unusable:
            raise
        except KeyError as exc:
            raise _Unusable(f"not a kept simulation (no {exc} entry)") from None
        except Exception as exc:  # truncated, garbled (zip CRC), not an .npz
            raise _Unusable(f"unreadable ({type(exc).__name__})") from None
        if tag != self.digest:
            raise _Unusable("of another run")
        if path != self._file(patient, replicate):
            raise _Unusable("holds another simulation than its name says")
        if _content_digest(tag, patient, replicate, arrays) != content:
            raise _Unusable("its content does not match its SHA-256: altered or damaged")
        if self._expected is not None:
            for name, (shape, dtype) in self._expected.items():
                if arrays[name].shape != shape or arrays[name].dtype != dtype:
                    raise _Unusable(f"array {name} is {arrays[name].dtype}{list(arrays[name].shape)}, a simulation of "
                                    f"this run gives {dtype}{list(shape)}")
        effects = PatientEffects(**dict(zip(_EFFECT_FIELDS, (float(v) for v in arrays["effects"]))))
        return RawRun(patient, replicate, effects, arrays["rec"], arrays["cnt"], arrays["snaps"])

    def load(self, jobs: Iterable[tuple[str, int]]) -> dict[tuple[str, int], RawRun]:
        """The kept simulations among ``jobs`` ((patient id, replicate) pairs), read back whole and verified.

        Uses what :meth:`verify` has just read; otherwise verifies now, and a deleted file is
        named in a :class:`~nksim.errors.NksimWarning`.
        """
        if not self._meta.exists():
            return {}
        if self._verified is None:
            for line in self.verify():
                warnings.warn(f"nksim checkpoint: {line}", NksimWarning, stacklevel=2)
        kept, self._verified = self._verified or {}, None
        return {(pid, rep): kept[(pid, rep)] for pid, rep in jobs if (pid, rep) in kept}

    def count(self) -> int:
        """Number of simulations kept (files; not read back)."""
        return len(list(self.folder.glob("*.npz"))) if self._meta.exists() else 0

    def discard(self) -> None:
        """Delete the checkpoint folder (after the final output is written)."""
        shutil.rmtree(self.folder, ignore_errors=True)
