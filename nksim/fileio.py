"""Small file helpers shared by every reader and writer: TOML input with clear errors, atomic figures."""
from __future__ import annotations

import codecs
import io
import os
import tempfile
import tomllib
from pathlib import Path
from typing import Any

from .errors import NksimInputError


def _decode_problem(raw: bytes, exc: UnicodeDecodeError, offset: int) -> str:
    """Where and why ``raw`` is not UTF-8: byte position (from the start of the file), line, column, advice."""
    pos = exc.start
    line = raw.count(b"\n", 0, pos) + 1
    col = pos - (raw.rfind(b"\n", 0, pos) + 1) + 1
    bad = raw[pos:pos + 1].hex().upper()
    return (f"not UTF-8 text: byte 0x{bad} at byte position {pos + offset} (line {line}, column {col}) "
            "cannot be decoded; the file must be UTF-8 (UTF-8 with a byte-order mark is accepted): save it "
            "as UTF-8 in your editor (e.g. re-encode a Latin-1 / Windows-1252 file)")


def shown_path(path: str | Path, root: str | Path | None = None) -> str:
    """``path`` relative to ``root`` (default: the working directory) when it lies below it, else as given.

    For paths written into records and messages: a committed record then names files relative to its
    repository, whatever the checkout's location. Both are resolved first (symbolic links, ``..``).
    """
    p = Path(path)
    base = Path.cwd() if root is None else Path(root)
    try:
        return str(p.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)


def read_text(path: str | Path, what: str = "file") -> str:
    """The text of a UTF-8 file (a UTF-8 byte-order mark is dropped); every failure is an NksimInputError.

    The one reader of user text files (TOML, CSV): a missing or unreadable file, a file in
    another encoding (Latin-1, UTF-16, ...) each give a one-line error naming the file (and
    for an encoding error the byte position, line and column). Line endings are kept as they
    are (TOML and :mod:`csv` accept LF and CRLF).
    """
    p = Path(path)
    if not p.is_file():
        raise NksimInputError(f"{what} not found", source=p)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise NksimInputError(f"cannot read: {exc.strerror or exc}", source=p) from None
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise NksimInputError("the file is UTF-16 text (it starts with a UTF-16 byte-order mark); it must be "
                              "UTF-8: save it as UTF-8 in your editor", source=p)
    offset = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
    body = raw[offset:]
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NksimInputError(_decode_problem(body, exc, offset), source=p) from None


def open_text(path: str | Path, what: str = "file") -> io.StringIO:
    """:func:`read_text` as a file object for :mod:`csv` readers (newlines untranslated, as ``newline=""``)."""
    return io.StringIO(read_text(path, what), newline="")


#: Deepest nesting of arrays and tables accepted in an nksim TOML file (counting the file's top level;
#: the shipped files nest at most 4 levels): deeper nesting is a one-line error naming the key.
MAX_TOML_DEPTH = 32


def read_toml(path: str | Path, what: str = "file") -> dict[str, Any]:
    """Parse a TOML file; a missing, unreadable, non-UTF-8 or invalid file is an NksimInputError naming it.

    So is a file whose arrays or tables nest deeper than :data:`MAX_TOML_DEPTH` levels (a
    one-line error naming the key, not the reader's recursion error).
    """
    return loads_toml(read_text(path, what), Path(path))


def loads_toml(text: str, source: str | Path, key: str | None = None) -> dict[str, Any]:
    """Parse TOML ``text`` from ``source`` (``key``: where it came from inside it, e.g. a ``--set`` item).

    Every failure is one :class:`NksimInputError` naming ``source``: invalid TOML, and arrays or
    tables nested deeper than :data:`MAX_TOML_DEPTH` levels (:mod:`tomllib` itself fails with a
    recursion error a few hundred levels deep).
    """
    import re

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise NksimInputError(f"not valid TOML: {exc}", source=source, key=key) from None
    except RecursionError:
        run = re.search(r"[\[{](?:\s*[\[{]){" + str(MAX_TOML_DEPTH) + ",}", text)
        where = _deep_key(text, run.start()) if run else None
        near = f" (line {text.count(chr(10), 0, run.start()) + 1})" if run and where is None else ""
        raise NksimInputError(f"arrays or tables nested hundreds of levels deep{near}; nksim files nest at most "
                              f"{MAX_TOML_DEPTH} levels", source=source,
                              key=_join(key, where) if where else key) from None
    check_depth(data, source, key)
    return data


_DEEP = "\x00nksim: nested too deeply"


def _join(key: str | None, inner: str) -> str:
    return f"{key}.{inner}" if key and not inner.startswith("[") else f"{key or ''}{inner}"


def _deep_key(text: str, start: int) -> str | None:
    """The key of the deeply nested value starting at ``text[start]`` (for the message), or None.

    The value (brackets balanced from ``start``) is replaced by a marker string and the text
    parsed again; the marker's key path is the answer. None when that does not work out.
    """
    depth, quote, i = 0, "", start
    for i in range(start, len(text)):
        c = text[i]
        if quote:
            if c == quote and text[i - 1] != "\\":
                quote = ""
        elif c in "\"'":
            quote = c
        elif c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
            if depth == 0:
                break
    if depth:
        return None
    try:
        doc: Any = tomllib.loads(text[:start] + '"\\u0000nksim: nested too deeply"' + text[i + 1:])
    except (tomllib.TOMLDecodeError, RecursionError):
        return None
    stack: list[tuple[Any, str]] = [(doc, "")]
    while stack:
        v, where = stack.pop()
        if v == _DEEP:
            return where or None
        if isinstance(v, dict):
            stack.extend((x, f"{where}.{k}" if where else str(k)) for k, x in v.items())
        elif isinstance(v, list):
            stack.extend((x, f"{where}[{n}]") for n, x in enumerate(v))
    return None


def check_depth(value: Any, source: str | Path, key: str | None = None, limit: int = MAX_TOML_DEPTH) -> None:
    """Refuse (NksimInputError naming ``source`` and the key) arrays or tables nested more than ``limit`` levels.

    Iterative, so any depth is checked without recursion. ``value`` is a parsed TOML document
    (or a value of one, at ``key``); its own level counts as 1.
    """
    stack: list[tuple[Any, str, int]] = [(value, key or "", 1)]
    while stack:
        v, where, depth = stack.pop()
        if isinstance(v, dict):
            items: Any = ((f"{where}.{k}" if where else str(k), x) for k, x in v.items())
        elif isinstance(v, list):
            items = ((f"{where}[{i}]", x) for i, x in enumerate(v))
        else:
            continue
        if depth > limit:
            # the key down to the last table key and one index after it; deeper indices as [...]
            head, _, tail = where.rpartition(".")
            cut = tail.find("[", tail.find("[") + 1)
            shown = (f"{head}." if head else "") + (tail if cut < 0 else tail[:cut] + "[...]")
            raise NksimInputError(f"arrays or tables nested more than {limit} levels deep; nksim files nest at most "
                                  f"{limit} levels", source=source, key=shown or None)
        stack.extend((x, w, depth + 1) for w, x in items)


def _layout_once(fig: Any, dpi: float) -> None:
    """Run a figure's constrained layout now, as ``savefig`` would, and switch the engine off.

    With a layout engine, ``savefig`` draws the whole figure twice: once without rendering,
    whose first step runs the layout at the output resolution, then for the file. Running the
    engine here with the same renderer (Agg at ``dpi``) on the same undrawn figure gives the same
    positions, so the file is byte-identical (``tests/test_trial_figure.py``) while the artists
    are drawn once (0.1-0.15 s of CPU less for the ``nksim run`` figure). Anything else (another
    canvas or engine, axes with a fixed aspect or a locator, ``savefig.bbox = "tight"``) is
    left to ``savefig``.
    """
    import matplotlib as mpl
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.layout_engine import ConstrainedLayoutEngine

    engine = fig.get_layout_engine()
    if (type(engine) is not ConstrainedLayoutEngine or not isinstance(fig.canvas, FigureCanvasAgg) or not fig.axes
            or mpl.rcParams["savefig.bbox"] == "tight"
            or any(ax.get_axes_locator() is not None or ax.get_aspect() != "auto" for ax in fig.axes)):
        return
    figure_dpi = fig.dpi
    fig.dpi = dpi  # savefig lays out and draws at the output resolution
    try:
        for ax in fig.axes:  # what Figure.draw does before the layout (Figure._get_draw_artists)
            ax.apply_aspect()
        engine.execute(fig)
    except ValueError:  # Figure.draw ignores it too; let savefig do as it always does
        return
    finally:
        fig.dpi = figure_dpi
    fig.set_layout_engine("none")


def save_figure(fig: Any, path: str | Path, dpi: int = 120) -> Path:
    """Save a matplotlib figure atomically (temporary file + rename) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        if path.suffix.lower() == ".png":
            _layout_once(fig, dpi)
        fig.savefig(tmp, dpi=dpi)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
        plt.close(fig)
    return path


def check_keys(table: Any, allowed: Any, *, source: str | Path, prefix: str = "", what: str = "keys") -> None:
    """Refuse a key of a TOML table that is not in ``allowed``, naming the file, the key and the allowed ones."""
    for k in table:
        if k not in allowed:
            raise NksimInputError(f"unknown key '{k}'; allowed {what}: {sorted(allowed)}", source=source,
                                  key=f"{prefix}.{k}" if prefix else k)


def check_output_folder(out: str | Path, names: Any, overwrite: bool, *, probe: bool = True) -> None:
    """Refuse an output folder that is a file, holds any of ``names`` (unless ``overwrite``) or cannot be written.

    With ``probe`` (the default) the folder is also checked with :func:`check_writable`:
    commands call this before any computing, so that a bad ``--out`` never costs a run.
    """
    from .errors import OutputExistsError

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NksimInputError("--out must be a folder (it names an existing file)", source=out)
    existing = [n for n in names if (out / n).exists()]
    if existing and not overwrite:
        raise OutputExistsError(f"output folder already holds results ({', '.join(existing)}); "
                                "choose another --out or pass --overwrite", source=out)
    if probe:
        check_writable(out)


#: A folder with less free space than this is refused before computing (the disk is full).
MIN_FREE_BYTES = 1 << 20


def check_writable(folder: str | Path) -> None:
    """Refuse (NksimInputError naming ``folder``) a folder that cannot be created or written.

    Probes the folder itself if it exists, else its nearest existing parent (the folder is
    created only when the results are written): a probe file is created, written (64 KiB) and
    deleted, and a disk with less than :data:`MIN_FREE_BYTES` free is refused. Nothing is left
    behind.
    """
    folder = Path(folder)
    base = folder
    while not base.exists():
        if base.parent == base:
            break
        base = base.parent
    if not base.is_dir():
        if base == folder:
            raise NksimInputError("--out must be a folder (it names an existing file)", source=folder)
        raise NksimInputError(f"cannot create the folder: {base} is a file", source=folder)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".nksim-write-probe-", dir=base)
    except OSError as exc:
        raise NksimInputError(f"cannot write into {base} ({exc.strerror or exc}); choose another --out",
                              source=folder) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(bytes(1 << 16))
    except OSError as exc:
        raise NksimInputError(f"cannot write into {base} ({exc.strerror or exc}); choose another --out or free "
                              "some space", source=folder) from None
    finally:
        Path(tmp).unlink(missing_ok=True)
    try:
        import shutil

        free = shutil.disk_usage(base).free
    except OSError:  # pragma: no cover - a file system without statvfs
        return
    if free < MIN_FREE_BYTES:
        raise NksimInputError(f"the disk holding {base} is full ({free} bytes free); free some space or choose "
                              "another --out", source=folder)


def write_atomic(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file beside it, then rename); returns the path.

    A process killed at any moment leaves either the old file or the new one, never a part.
    """
    import os
    import tempfile

    path = Path(path)
    blob = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
