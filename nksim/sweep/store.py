"""The sweep's Zarr (v3) store: create, validate, append batches, resume, read.

Layout (one Zarr array per variable, readable with ``xarray.open_zarr(path)``; Zarr v3
``dimension_names`` give the dims)::

    <store>/zarr.json                 group attributes: CF-1.8, nksim version, code and plan digests,
                                      the spec, the model parameters (JSON)
    scenario, draw, patient, replicate, time, assessment, batch     dimension coordinates
    label, regimen, nk_product, gap, interval, dose_split, n_infusions, first_dose_pct, total_dose,
    start_day, events, <swept parameter keys>                        (scenario) coordinates
    cytokine                          (scenario) coordinate, only where some scenario has a cytokine
    cytokine_course                   (scenario) coordinate, only where some scenario restarts it per infusion
    draw_values (draw, draw_parameter)                               drawn parameter values
    donor_chimerism_nk ... il15     float32 (scenario, draw, patient, replicate, time)
    response                        int8    (scenario, draw, patient, replicate, assessment)
    time_to_progression, pd_threshold_pct, <patient effects>   float64 (scenario, draw, patient, replicate)
    batch_done                      uint8   (batch), 1 = batch written
    batch_checksum                  uint64  (batch, result_variable): checksum of each result chunk file
                                    of the batch (first 64 bits of its SHA-256; 0 = none recorded)
    batch_done/.nksim-writer.lock   the writer's lock file (not data; holds pid and host of the writer)

``time`` is days since the first NK infusion, one axis for all scenarios (``time_start`` =
earliest first day of any scenario); a scenario that starts later has NaN before its start.

Safety rules:

* one batch = one chunk of every result array, so batches never share a chunk; each chunk
  file is written atomically (zarr's LocalStore writes a temporary file and renames it) and
  ``batch_done[b]`` is set only after all of batch ``b``'s chunks are written: killing the
  writer at any moment loses at most the batches not yet flagged, and re-running recomputes
  exactly those, giving the same bytes as an uninterrupted run;
* integrity: ``batch_checksum[b]`` is written after batch ``b``'s chunks (from the files read
  back) and before ``batch_done[b]``; the group attribute ``static_sha256`` holds the SHA-256 of
  every file written at creation (array metadata, coordinates). :meth:`SweepStore.verify`
  checks every file of every done batch (present, same checksum) and every static file;
  ``summarize``, export and resume call it before reading, and a damaged store raises
  :class:`StoreDamagedError` naming the store, variable, scenario and batch -- missing chunks are
  never read as fill values (NaN would mean "censored"). ``nksim sweep --repair`` (``run_sweep(...,
  repair=True)``) flags the damaged batches as not done, and the run recomputes exactly them;
* one writer: a sweep holds an exclusive ``flock`` on ``batch_done/.nksim-writer.lock`` while it
  writes (released by the kernel when the process ends, so never stale); a second writer is
  refused with the holder's pid and host. Readers take no lock;
* a new store is built in a temporary folder and renamed into place, so a half-created store
  never exists under the requested name;
* an existing store is resumed only if it was written by the same plan digest, store format,
  nksim version and result code; anything else (another spec, another version, a folder that is
  not an nksim sweep store, unreadable metadata) is refused before any simulation and left
  untouched.

The store holds no timestamps or paths, so the same plan gives bitwise-identical files
whatever the number of workers, the order of completion or interruptions.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._optional import require
from .._version import __version__
from ..errors import NksimInputError, OutputExistsError
from ..io import zarr as zio
from ..io.lock import WriterLock
from ..observables import RESPONSE_CODES, RESPONSE_FILL
from ..patients import EFFECT_META
from ..quantities import all_variables
from .execute import SCALARS
from .plan import STORE_FORMAT, Plan, code_digest, population_text

zarr = require("zarr", "sweep", "nksim.sweep")
ZstdCodec = require("zarr.codecs", "sweep", "nksim.sweep").ZstdCodec

SIM_DIMS = ("scenario", "draw", "patient", "replicate")
_COMPRESSORS = (ZstdCodec(level=3),)
_CONFIG = {"write_empty_chunks": True}

_VARIABLES = all_variables()

#: Lock file of the writer, relative to the store (inside the ``batch_done`` array folder, where
#: Zarr does not look for members).
LOCK_FILE = f"batch_done/{zio.LOCK_FILE_NAME}"
CHECKSUMS = "batch_checksum"
_LOCK_HINT = ("only one `nksim sweep` may write a store at a time: wait until it ends (or stop it), "
              "then run the same command again")


class StoreDamagedError(NksimInputError):
    """A sweep store failed verification; ``damage`` lists what, ``batches`` the batches to recompute."""

    def __init__(self, message: str, *, source: str | Path, damage: list[Damage] | None = None):
        super().__init__(message, source=source)
        self.damage = list(damage or [])
        self.batches = sorted({d.batch for d in self.damage if d.batch is not None})


@dataclass(frozen=True)
class Damage:
    """One damaged file of a store: ``batch``/``scenario`` None for a file written at creation."""

    variable: str
    file: str  # relative to the store
    problem: str
    batch: int | None = None
    scenario: int | None = None

    def describe(self) -> str:
        """'variable 'x' of scenario 3 (batch 6): chunk file x/c/3/0/0/0 is missing'."""
        where = f" of scenario {self.scenario} (batch {self.batch})" if self.batch is not None else ""
        return f"variable '{self.variable}'{where}: file {self.file} {self.problem}"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _var_meta(name: str) -> tuple[str, str]:
    if name in _VARIABLES:
        return _VARIABLES[name].units, _VARIABLES[name].long_name
    if name in EFFECT_META:
        return EFFECT_META[name]
    if name == "time_to_progression":
        return "day", ("first day, on or after the first assessment, with marrow blasts at the PD threshold "
                       "(NaN: censored at end_day)")
    if name == "pd_threshold_pct":
        return "percent", "marrow blast percentage defining progression for this patient"
    raise KeyError(name)


def _draws_text(source: str | dict) -> str:
    """The plan's draw source as text: a posterior is named with its file digest."""
    if isinstance(source, dict):
        return f"posterior {source['posterior']} (sha256 {source['sha256']})"
    return str(source)


class SweepStore:
    """An open nksim sweep store (use :meth:`open_for_run` or :meth:`open_existing`)."""

    def __init__(self, path: Path, group: zarr.Group):
        self.path = path
        self.group = group
        self.attrs = dict(group.attrs)
        self.plan = Plan.from_json(self.attrs["plan"])
        self._arrays: dict[str, Any] = {}
        self._lock: WriterLock | None = None

    # --- opening ------------------------------------------------------------------------
    @staticmethod
    def _read_group(path: Path, mode: str) -> zarr.Group:
        node = zio.open_group(path, mode, what="nksim sweep store")
        attrs = dict(node.attrs)
        if "nksim_sweep_format" not in attrs or "plan" not in attrs:
            raise NksimInputError("is a Zarr store but not an nksim sweep store (no 'nksim_sweep_format' attribute); "
                                  "refusing to touch it", source=path)
        if attrs["nksim_sweep_format"] != STORE_FORMAT:
            raise NksimInputError(f"sweep store format {attrs['nksim_sweep_format']!r} is not the format "
                                  f"{STORE_FORMAT} of nksim {__version__}", source=path)
        return node

    @classmethod
    def open_existing(cls, path: str | Path, *, writable: bool = False) -> SweepStore:
        """Open an existing sweep store (read-only by default) after checking it is one."""
        path = Path(path)
        if not path.exists():
            raise NksimInputError("no such sweep store", source=path)
        group = cls._read_group(path, "r+" if writable else "r")
        store = cls(path, group)
        missing = [n for n in store.result_names() + ["batch_done", CHECKSUMS] if n not in group]
        if missing:
            raise NksimInputError(f"sweep store is incomplete or corrupt: arrays {missing} are missing", source=path)
        return store

    @classmethod
    def open_for_run(cls, path: str | Path, plan: Plan, spec_raw: dict[str, Any] | None = None) -> SweepStore:
        """Create the store for ``plan``, or reopen it to resume if it was written by the same plan.

        Refuses (NksimInputError / OutputExistsError), without modifying anything, a path that
        holds anything else. ``spec_raw`` (the parsed spec file) is recorded in a new store.
        The returned store holds the writer lock (:meth:`lock`; release it with :meth:`unlock`):
        another writer on the same store is refused with :class:`~nksim.io.lock.StoreLockedError`.
        The store is not verified here (:meth:`verify`).
        """
        path = Path(path)
        for _ in range(2):
            if path.exists() and not (path.is_dir() and not any(path.iterdir())):
                store = cls.open_existing(path, writable=True)
                store.lock()
                try:
                    store.check_compatible(plan)
                except BaseException:
                    store.unlock()
                    raise
                return store
            try:
                return cls.create(path, plan, spec_raw)
            except OSError:
                # another writer renamed its new store into place first: open that one (and meet its lock)
                if not (path.is_dir() and any(path.iterdir())):
                    raise
        raise OutputExistsError("appeared and changed while opening it; run again", source=path)  # pragma: no cover

    # --- the writer lock ----------------------------------------------------------------
    def _writer_lock(self) -> WriterLock:
        if self._lock is None:
            self._lock = WriterLock(self.path / LOCK_FILE, what=self.path, hint=_LOCK_HINT)
        return self._lock

    def lock(self) -> None:
        """Take the store's exclusive writer lock, or raise StoreLockedError naming the holder."""
        self._writer_lock().acquire()

    def unlock(self) -> None:
        """Release the writer lock (if held)."""
        if self._lock is not None:
            self._lock.release()

    def check_compatible(self, plan: Plan) -> None:
        """Refuse to resume with another nksim version, other result code or another plan."""
        a = self.attrs
        if a.get("nksim_version") != __version__:
            raise OutputExistsError(
                f"this sweep store was written by nksim {a.get('nksim_version')}, this is nksim {__version__}; "
                "results of different versions are never mixed: use another --out (the store is left as it is)",
                source=self.path)
        if a.get("code_digest") != code_digest():
            raise OutputExistsError(
                f"this sweep store was written by different nksim result code (code digest {a.get('code_digest')}, "
                f"now {code_digest()}); results are never mixed: use another --out (the store is left as it is)",
                source=self.path)
        if a.get("plan_digest") != plan.digest:
            raise OutputExistsError(
                f"this sweep store belongs to another sweep (spec '{a.get('sweep_name')}', plan digest "
                f"{a.get('plan_digest')}); this spec ('{plan['name']}') resolves to plan digest {plan.digest}. "
                "Results of different specs are never mixed: use another --out (the store is left as it is)",
                source=self.path)

    @classmethod
    def create(cls, path: Path, plan: Plan, spec_raw: dict[str, Any] | None = None) -> SweepStore:
        """Create a new, empty store for ``plan`` (built aside, then renamed into place), holding its writer lock."""
        path = Path(path)
        lock: list[WriterLock] = []

        def build(tmp: Path) -> None:
            _initialise(tmp, plan, spec_raw)
            # taken in the temporary folder: renamed with it, still held
            lock.append(WriterLock(tmp / LOCK_FILE, what=path, hint=_LOCK_HINT).acquire())

        try:
            path = zio.build_aside(path, build)
            store = cls(path, zio.open_group(path, "r+", what="nksim sweep store"))
        except BaseException:
            for lk in lock:
                lk.release()
            raise
        lock[0].moved(path / LOCK_FILE, path)
        store._lock = lock[0]
        return store

    # --- contents -----------------------------------------------------------------------
    def result_names(self) -> list[str]:
        """Names of the result arrays: the stored time series, ``response`` and the per-simulation scalars."""
        return list(self.plan["time_series"]) + ["response", *SCALARS]

    def array(self, name: str):
        """The Zarr array ``name`` of the store (opened once, then cached).

        Opened with ``write_empty_chunks``: Zarr's runtime configuration is not stored, and by
        default it skips a chunk equal to the fill value (e.g. all NaN = all censored), which
        could then not be told from a deleted one.
        """
        if name not in self._arrays:
            self._arrays[name] = self.group[name].with_config(_CONFIG)
        return self._arrays[name]

    def done(self) -> np.ndarray:
        """Boolean mask over batches: True where the batch is written."""
        return self.array("batch_done")[:].astype(bool)

    def pending(self) -> np.ndarray:
        """Indices of the batches still to run, in order."""
        return np.flatnonzero(~self.done())

    def scenarios_complete(self) -> np.ndarray:
        """Boolean mask over scenarios: True where every batch of the scenario is written."""
        return self.done().reshape(self.plan.n_scenarios, self.plan.batches_per_scenario).all(axis=1)

    def chunk_coords(self, name: str, b: int) -> tuple[int, ...]:
        """Chunk coordinates of batch ``b`` in result array ``name`` (one chunk per batch)."""
        s, d, ps, rs = self.plan.batch(b)
        pb, rb = self.plan.batch_shape
        return (s, d, ps.start // pb, rs.start // rb) + (0,) * (self.array(name).ndim - 4)

    def chunk_file(self, name: str, b: int) -> Path:
        """The file holding batch ``b``'s chunk of result array ``name``."""
        return zio.chunk_file(self.array(name), self.path, self.chunk_coords(name, b))

    def checksum_names(self) -> list[str]:
        """The result variables, in the column order of ``batch_checksum``."""
        return list(self.array(CHECKSUMS).attrs["variables"])

    def write_batch(self, result: dict[str, Any]) -> None:
        """Write a :func:`~nksim.sweep.execute.run_batch` result, record its checksums, then flag the batch as done."""
        if result["plan"] != self.plan.digest:
            raise RuntimeError(f"batch result for plan {result['plan']} cannot go into store of plan "
                               f"{self.plan.digest}")
        if result["code"] != self.attrs["code_digest"]:
            raise RuntimeError(
                f"a worker runs different nksim code (code digest {result['code']}, "
                f"store {self.attrs['code_digest']}); install the same nksim version on every worker")
        b = result["batch"]
        s, d, ps, rs = self.plan.batch(b)
        for name, data in result["arrays"].items():
            self.array(name)[s, d, ps, rs] = data
        # checksums of the files as written (read back), then the flag: a kill in between leaves the batch pending
        sums = np.array([zio.file_checksum(self.chunk_file(name, b).read_bytes()) for name in self.checksum_names()],
                        dtype=np.uint64)
        self.array(CHECKSUMS)[b, :] = sums
        self.array("batch_done")[b] = 1

    # --- integrity ----------------------------------------------------------------------
    def _read_rows(self, name: str) -> tuple[np.ndarray | None, dict[int, str]]:
        """All of array ``name`` (first axis = batch), or, if a chunk cannot be decoded, the rows that can.

        Returns (values or None, {batch: problem}) -- values is None when a row was unreadable;
        then only the rows listed as readable are meaningful (unreadable ones are 0).
        """
        arr = self.array(name)
        try:
            return np.asarray(arr[...]), {}
        except Exception:  # a damaged chunk: find which, row by row
            pass
        values = np.zeros(arr.shape, dtype=arr.dtype)
        bad: dict[int, str] = {}
        for b in range(arr.shape[0]):
            try:
                values[b] = arr[b]
            except Exception as exc:
                bad[b] = f"cannot be decoded ({type(exc).__name__}: {exc})"
        return values, bad

    def verify(self) -> tuple[np.ndarray, list[Damage]]:
        """Check the store's files: every static file and every chunk of every done batch.

        Returns (done mask over batches as verified, list of :class:`Damage`; empty = intact).
        Reads ``batch_done`` before the checksums, so a writer working at the same time is fine.
        """
        damage: list[Damage] = []
        for rel, digest in sorted(dict(self.attrs.get("static_sha256", {})).items()):
            f = self.path / rel
            problem = ("is missing" if not f.is_file() else
                       "does not match its checksum (changed or truncated)" if _sha256(f) != digest else "")
            if problem:
                damage.append(Damage(rel.split("/")[0], rel, problem))
        done_raw, bad_done = self._read_rows("batch_done")
        done = done_raw.astype(bool)
        per_scenario = self.plan.batches_per_scenario
        for b, problem in bad_done.items():
            f = zio.chunk_file(self.array("batch_done"), self.path, (b,)).relative_to(self.path)
            damage.append(Damage("batch_done", f.as_posix(), problem, b, b // per_scenario))
        sums, bad_sums = self._read_rows(CHECKSUMS)
        names = self.checksum_names()
        for b in np.flatnonzero(done):
            b = int(b)
            scen = b // per_scenario
            if b in bad_sums:
                f = zio.chunk_file(self.array(CHECKSUMS), self.path, (b, 0)).relative_to(self.path)
                damage.append(Damage(CHECKSUMS, f.as_posix(), bad_sums[b], b, scen))
                continue
            for j, name in enumerate(names):
                f = self.chunk_file(name, b)
                rel = f.relative_to(self.path).as_posix()
                if not f.is_file():
                    damage.append(Damage(name, rel, "is missing", b, scen))
                elif int(sums[b, j]) == 0:
                    damage.append(Damage(name, rel, "has no recorded checksum", b, scen))
                elif zio.file_checksum(f.read_bytes()) != int(sums[b, j]):
                    damage.append(Damage(name, rel, "does not match its checksum (changed or truncated)", b, scen))
        return done & ~np.isin(np.arange(done.size), list(bad_done)), damage

    def damage_error(self, damage: list[Damage], *, repairable: bool = True) -> StoreDamagedError:
        """One-line error naming the damage and how to recover."""
        first = damage[0].describe()
        batches = sorted({d.batch for d in damage if d.batch is not None})
        static = [d for d in damage if d.batch is None]
        more = f" (and {len(damage) - 1} more damaged files)" if len(damage) > 1 else ""
        if static:
            how = ("files written when the store was created are damaged and cannot be recomputed in place: "
                   "run the sweep again into a new --out")
        else:
            scen = sorted({d.scenario for d in damage if d.scenario is not None})
            how = (f"damaged batch{'es' if len(batches) > 1 else ''} {_ranges(batches)} "
                   f"(scenario{'s' if len(scen) > 1 else ''} {_ranges(scen)}); "
                   + (f"recompute exactly them with `nksim sweep <spec of '{self.plan['name']}'> --out {self.path} "
                      "--repair`" if repairable else "they will be recomputed"))
        return StoreDamagedError(f"damaged sweep store, nothing was read from it: {first}{more}; {how}",
                                 source=self.path, damage=damage)

    def check(self) -> np.ndarray:
        """:meth:`verify`, raising :class:`StoreDamagedError` on any damage; returns the verified done mask."""
        done, damage = self.verify()
        if damage:
            raise self.damage_error(damage)
        return done

    def mark_pending(self, batches) -> None:
        """Flag ``batches`` as not done (and clear their checksums), so that the next run recomputes them.

        Needs the writer lock.
        """
        if self._lock is None or not self._lock.held:
            raise RuntimeError("mark_pending needs the writer lock (SweepStore.lock())")
        zeros = np.zeros(len(self.checksum_names()), dtype=np.uint64)
        for b in sorted({int(b) for b in batches}):
            self.array("batch_done")[b] = 0  # first: the batch is pending from here on
            self.array(CHECKSUMS)[b, :] = zeros

    def _read_error(self, name: str, where: str, exc: Exception) -> StoreDamagedError:
        return StoreDamagedError(
            f"damaged sweep store: variable '{name}' {where} cannot be read ({type(exc).__name__}: {exc}); "
            "run `nksim summarize` on it to name the damaged batches", source=self.path)

    def read(self, name: str, scenario: int | slice = slice(None)) -> np.ndarray:
        """Raw values of a result array for one scenario (or a slice of scenarios)."""
        try:
            return self.array(name)[scenario]
        except (IndexError, TypeError, KeyError):  # a wrong index or name: the caller's error, not damage
            raise
        except Exception as exc:  # a damaged chunk (codec errors have many types)
            raise self._read_error(name, f"of scenario {scenario}", exc) from None

    def coord(self, name: str) -> np.ndarray:
        """All values of the coordinate array ``name``."""
        try:
            return self.array(name)[:]
        except KeyError:
            raise
        except Exception as exc:  # a damaged chunk
            raise self._read_error(name, "(coordinate)", exc) from None


def _ranges(values: list[int]) -> str:
    """[1, 2, 3, 7] -> '1-3, 7'."""
    out: list[str] = []
    for v in values:
        if out and out[-1].split("-")[-1] == str(v - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{v}"
        else:
            out.append(str(v))
    return ", ".join(out)


def _initialise(path: Path, plan: Plan, spec_raw: dict[str, Any] | None = None) -> None:
    """Write metadata and coordinates of an empty store at ``path``."""
    c = plan.content
    S, D, P, R, T = plan.n_scenarios, plan.n_draws, len(plan.patients), plan.replicates, plan.n_time
    A = len(c["assessment_days"])
    pb, rb = plan.batch_shape
    swept_params = [k for k in c["swept"] if "." in k]
    g = zio.create_group(path)
    # cytokine only where a scenario has one: stores of sweeps without cytokine keep their layout
    cytokine = any("cytokine" in sc["schedule"] for sc in c["scenarios"])
    course = any("cytokine_course" in sc["schedule"] for sc in c["scenarios"])  # likewise
    scen_coords = ["label", "regimen", "nk_product", *(["cytokine"] if cytokine else []),
                   *(["cytokine_course"] if course else []), "gap", "interval",
                   "dose_split", "n_infusions", "first_dose_pct", "total_dose", "start_day", *swept_params]
    g.attrs.update({
        "Conventions": "CF-1.8",
        "title": f"nksim schedule sweep '{c['name']}'",
        "source": f"nksim {__version__} (numba spatial agent-based model)",
        "comment": (f"parameter set '{c['model']['name']}': {c['model']['status']}. time is days since the first NK "
                    "infusion on one axis for all scenarios; values before a scenario's first simulated day are NaN"),
        "nksim_sweep_format": STORE_FORMAT,
        "nksim_version": __version__,
        "code_digest": code_digest(),
        "plan_digest": plan.digest,
        "sweep_name": c["name"],
        "seed": c["seed"],
        "parameter_set": c["model"]["name"],
        "parameter_status": c["model"]["status"],
        "draws_from": _draws_text(c["draws_from"]),
        "population": population_text(plan.population),
        "landmark_day": c["landmark_day"],
        "spec": json.dumps(spec_raw if spec_raw is not None else {}, sort_keys=True, default=str),
        "plan": plan.to_json(),
    })

    def arr(name, shape, dtype, dims, chunks=None, fill=None, attrs=None, values=None):
        return zio.create_array(g, name, shape, dtype, dims, chunks=chunks, fill=fill, attrs=attrs, values=values,
                                compressors=_COMPRESSORS, config=_CONFIG)

    sched = [sc["schedule"] for sc in c["scenarios"]]
    arr("scenario", (S,), "int64", ("scenario",), values=np.arange(S), attrs={"long_name": "scenario index"})
    arr("draw", (D,), "int64", ("draw",), values=np.arange(D),
        attrs={"long_name": f"parameter draw ({_draws_text(c['draws_from'])})"})
    arr("patient", (P,), str, ("patient",), values=np.array(plan.patients), attrs={"long_name": "virtual patient id"})
    arr("replicate", (R,), "int64", ("replicate",), values=np.arange(R),
        attrs={"long_name": "replicate (independent stochastic history)", "units": "1"})
    arr("time", (T,), "float64", ("time",), values=plan.time_start + np.arange(T, dtype=float),
        attrs={"units": "day", "long_name": "time since the first NK infusion (common axis, NaN before a "
               "scenario's first simulated day)"})
    arr("assessment", (A,), "float64", ("assessment",), values=np.array(c["assessment_days"], dtype=float),
        attrs={"units": "day", "long_name": "response assessment day (since first NK infusion)"
               if plan.clock == "infusion" else "response assessment day (since the start of lymphodepletion; sweep "
               "clock 'lymphodepletion': each scenario's protocol day is this minus its clock_offset)"})
    arr("label", (S,), str, ("scenario",), values=np.array([sc["label"] for sc in c["scenarios"]]),
        attrs={"long_name": "scenario label (swept factor values)"})
    arr("regimen", (S,), str, ("scenario",), values=np.array([s["regimen"] for s in sched]),
        attrs={"long_name": "lymphodepleting regimen"})
    arr("nk_product", (S,), str, ("scenario",), values=np.array([s["nk_product"] for s in sched]),
        attrs={"long_name": "NK product infused (fresh or ex vivo expanded)"})
    if cytokine:
        arr("cytokine", (S,), str, ("scenario",), values=np.array([s.get("cytokine", "none") for s in sched]),
            attrs={"long_name": "cytokine support after the infusions (none, il2, rhil15_iv, rhil15_sc, n803)"})
    if course:
        arr("cytokine_course", (S,), str, ("scenario",),
            values=np.array([s.get("cytokine_course", "first") for s in sched]),
            attrs={"long_name": "cytokine course: from the first infusion (first) or restarted at each (each)"})
    arr("dose_split", (S,), str, ("scenario",), values=np.array([s["dose_split_label"] for s in sched]),
        attrs={"units": "percent", "long_name": "share of the total dose per infusion"})
    for name, units, long_name in [
        ("gap", "day", "days from the last lymphodepleting dose to the first infusion"),
        ("interval", "day", "days between consecutive infusions"),
        ("first_dose_pct", "percent", "share of the total dose in the first infusion"),
        ("total_dose", "kg-1", "NK cells per kg body weight over all infusions"),
    ]:
        arr(name, (S,), "float64", ("scenario",), values=np.array([s[name] for s in sched], dtype=float),
            attrs={"units": units, "long_name": long_name})
    arr("n_infusions", (S,), "int64", ("scenario",), values=np.array([s["n_infusions"] for s in sched]),
        attrs={"units": "1", "long_name": "number of infusions given"})
    arr("start_day", (S,), "float64", ("scenario",),
        values=np.array([sc["protocol"]["protocol"]["start_day"] for sc in c["scenarios"]], dtype=float),
        attrs={"units": "day", "long_name": "first simulated day (first lymphodepleting dose)"})
    arr("events", (S,), str, ("scenario",),
        values=np.array([json.dumps([[e["day"], e["kind"], e["dose"], e["unit"]] for e in sc["protocol"]["events"]])
                         for sc in c["scenarios"]]),
        attrs={"long_name": "dated events of the scenario, JSON [day, kind, dose, unit]"})
    for k in swept_params:
        unit = c["model"]["parameters"][k][1]
        arr(k, (S,), "float64", ("scenario",), fill=np.nan,
            values=np.array([sc["parameters"].get(k, np.nan) for sc in c["scenarios"]], dtype=float),
            attrs={"units": unit, "long_name": f"swept model parameter {k} (NaN: model/draw value)"})
    draw_keys = sorted({k for d in c["draws"] for k in d})
    if draw_keys:
        arr("draw_parameter", (len(draw_keys),), str, ("draw_parameter",), values=np.array(draw_keys),
            attrs={"long_name": "drawn model parameter"})
        arr("draw_values", (D, len(draw_keys)), "float64", ("draw", "draw_parameter"), fill=np.nan,
            values=np.array([[d.get(k, np.nan) for k in draw_keys] for d in c["draws"]], dtype=float),
            attrs={"long_name": "parameter values of each draw (schema units)"})
    coords = " ".join(scen_coords)
    for name in plan["time_series"]:
        units, long_name = _var_meta(name)
        arr(name, (S, D, P, R, T), "float32", (*SIM_DIMS, "time"), chunks=(1, 1, pb, rb, T), fill=np.nan,
            attrs={"units": units, "long_name": long_name, "coordinates": coords})
    arr("response", (S, D, P, R, A), "int8", (*SIM_DIMS, "assessment"), chunks=(1, 1, pb, rb, A), fill=RESPONSE_FILL,
        attrs={"units": "1", "long_name": "response at assessment (from marrow blasts vs baseline)",
               "flag_values": list(RESPONSE_CODES.values()), "flag_meanings": " ".join(RESPONSE_CODES),
               "comment": "-1: not assessed / batch not run", "coordinates": coords})
    for name in SCALARS:
        units, long_name = _var_meta(name)
        arr(name, (S, D, P, R), "float64", SIM_DIMS, chunks=(1, 1, pb, rb), fill=np.nan,
            attrs={"units": units, "long_name": long_name, "coordinates": coords})
    arr("batch_done", (plan.n_batches,), "uint8", ("batch",), chunks=(1,), fill=0,
        attrs={"long_name": "1 when every result chunk of the batch is written", "units": "1"})
    results = [*plan["time_series"], "response", *SCALARS]
    arr(CHECKSUMS, (plan.n_batches, len(results)), "uint64", ("batch", "result_variable"), chunks=(1, len(results)),
        fill=0, attrs={"long_name": "checksum of the batch's chunk file of each result variable (first 64 bits of "
                       "its SHA-256; 0: none recorded)", "units": "1", "variables": results})
    # every file written so far (array metadata, coordinates) never changes: record its SHA-256
    g.attrs["static_sha256"] = {p.relative_to(path).as_posix(): _sha256(p) for p in sorted(Path(path).rglob("*"))
                                if p.is_file() and p != Path(path) / "zarr.json"}

