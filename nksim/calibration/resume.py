"""The kept ABC history of an interrupted ``nksim calibrate`` (``--out/.partial``) and ``--resume``.

While a calibration runs, its pyabc history (``abc.db``, SQLite: a generation is committed
whole once it is finished) lives in ``<out>/.partial`` with ``calibration.json`` (a hash of
everything that determines the run: the config, the model values, the data files, the nksim
version and result code) and, per finished generation, the state of NumPy's global generator
(``rng-<t>.npz``, see :func:`nksim.calibration.abc.run_abc`). An interrupted or killed run
leaves it there; ``nksim calibrate ... --resume`` continues it (a single-core run then ends
with the history an uninterrupted run writes; a Dask run is statistically equivalent only, as
it always is). When the calibration has finished, ``abc.db`` moves into ``<out>`` and the
folder is deleted.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

from ..checkpoint import _code_digest, _plain
from ..errors import NksimInputError
from .config import CalibrationConfig

#: Folder of ``--out`` holding the ABC history of a calibration until it has finished.
PARTIAL = ".partial"


def _file_digest(path: Path | None) -> str | None:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest() if path is not None else None


def calibration_identity(config: CalibrationConfig) -> dict[str, Any]:
    """What determines a calibration's numbers, as plain data."""
    cfg = _plain(config)
    cfg.pop("origin", None)
    return {"config": cfg, "model_values": config.base_parameters().values(),
            "data": {k: _file_digest(getattr(config, k)) for k in ("outcomes", "targets", "series")},
            "code": _code_digest(), "calibration_code": _calibration_code_digest()}


def _calibration_code_digest() -> str:
    h = hashlib.sha256()
    for f in sorted(Path(__file__).resolve().parent.glob("*.py")):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


class AbcCheckpoint:
    """The ``.partial`` folder of one calibration's ``--out`` (see the module docstring)."""

    def __init__(self, out: str | Path, config: CalibrationConfig):
        self.folder = Path(out) / PARTIAL
        self.db = self.folder / "abc.db"
        self.identity = calibration_identity(config)
        self.digest = hashlib.sha256(json.dumps(self.identity, sort_keys=True).encode()).hexdigest()
        #: What :meth:`prepare` discarded with ``overwrite`` (one line), or None.
        self.discarded: str | None = None

    @property
    def _meta(self) -> Path:
        return self.folder / "calibration.json"

    def generations(self) -> int:
        """Finished generations stored in the kept history (0 if there is none).

        An unreadable history is an NksimInputError naming it (``--overwrite`` discards it).
        """
        try:
            return self._generations()
        except sqlite3.Error as exc:
            raise NksimInputError(f"cannot read the kept ABC history ({exc}); delete the folder or pass --overwrite "
                                  "to start afresh", source=self.db) from None

    def _generations(self) -> int:
        if not self.db.is_file():
            return 0
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            row = con.execute("SELECT MAX(t) FROM populations").fetchone()
        finally:
            con.close()
        return 0 if row is None or row[0] is None else int(row[0]) + 1

    def _record(self) -> tuple[bool, str | None]:
        """(whether ``calibration.json`` names this run, why it cannot be read: None when it can)."""
        try:
            stored = json.loads(self._meta.read_text(encoding="utf-8"))
            digest = stored.get("digest")
        except FileNotFoundError:
            return False, "it is missing"
        except (OSError, ValueError, AttributeError) as exc:
            return False, f"it is damaged or unreadable: {type(exc).__name__}: {exc}".rstrip(": ")
        if not isinstance(digest, str):
            return False, "it is damaged: it holds no run digest"
        return digest == self.digest, None

    def _damage(self) -> str | None:
        """Why the kept history cannot be read at all (a damaged ``abc.db``), or None."""
        try:
            self._generations()
        except sqlite3.Error as exc:
            return f"{self.db.name}: {exc}"
        return None

    def prepare(self, *, resume: bool, overwrite: bool) -> int:
        """Check the kept history before calibrating; returns the generations to continue from (0: a new run).

        Refused (NksimInputError naming the folder): ``resume`` with nothing to resume, with
        the history of other inputs or with a damaged or missing record (``calibration.json``);
        a kept history without ``resume`` (unless ``overwrite``, which discards it, damaged or
        not: :attr:`discarded` then says what was discarded). A history without a finished
        generation is discarded.
        """
        self.discarded = None
        if overwrite and not resume:
            if self.folder.exists():
                damage = self._damage()
                n = 0 if damage else self.generations()
                self.discard()
                if damage:
                    self.discarded = f"discarded the damaged ABC history kept in {self.folder} (--overwrite): {damage}"
                elif n:
                    self.discarded = (f"discarded the ABC history of an interrupted calibration ({n} finished "
                                      f"generations) kept in {self.folder} (--overwrite)")
            return 0
        n = self.generations()
        if n == 0:
            self.discard()
            if resume:
                raise NksimInputError("nothing to resume: no finished ABC generation is kept here; run without "
                                      "--resume", source=self.folder, key="--resume")
            return 0
        same, problem = self._record()
        if problem:
            raise NksimInputError(
                f"holds the ABC history of an interrupted calibration ({n} finished generations), but its record "
                f"{self._meta.name} ({self._meta}) cannot be used ({problem}): the history cannot be matched to a "
                "config, so it is never continued; pass --overwrite (without --resume) to discard it and start afresh",
                source=self.folder, key="--resume" if resume else "checkpoint")
        if resume:
            if not same:
                raise NksimInputError(f"the kept ABC history ({n} generations) belongs to another calibration (other "
                                      "config, model, data or nksim code); it is never continued with this one: "
                                      "run without --resume and with --overwrite to start afresh",
                                      source=self.folder, key="--resume")
            return n
        whose = "this" if same else "another"
        raise NksimInputError(f"holds the ABC history of an interrupted calibration ({n} finished generations, "
                              f"{whose} config): continue it with --resume, or pass --overwrite to start afresh",
                              source=self.folder, key="checkpoint")

    def start(self) -> None:
        """Create the folder and record the run's identity (a new run)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        blob = json.dumps({"digest": self.digest, "identity": self.identity}, sort_keys=True, indent=1)
        tmp = self._meta.with_name(f".{self._meta.name}.tmp")
        tmp.write_text(blob, encoding="utf-8")
        tmp.replace(self._meta)

    def discard(self) -> None:
        """Delete the folder."""
        shutil.rmtree(self.folder, ignore_errors=True)
