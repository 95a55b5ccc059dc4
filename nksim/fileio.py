"""Small file helpers shared by every reader and writer: TOML input with clear errors, atomic figures."""
from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from .errors import NksimInputError


def read_toml(path: str | Path, what: str = "file") -> dict[str, Any]:
    """Parse a TOML file; a missing, unreadable or invalid file is an NksimInputError naming it."""
    p = Path(path)
    if not p.is_file():
        raise NksimInputError(f"{what} not found", source=p)
    try:
        with open(p, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise NksimInputError(f"not valid TOML: {exc}", source=p) from None
    except OSError as exc:
        raise NksimInputError(f"cannot read: {exc}", source=p) from None


def save_figure(fig: Any, path: str | Path, dpi: int = 120) -> Path:
    """Save a matplotlib figure atomically (temporary file + rename) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
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


def check_output_folder(out: str | Path, names: Any, overwrite: bool) -> None:
    """Refuse an output folder that is a file, or that already holds any of ``names`` unless ``overwrite``."""
    from .errors import OutputExistsError

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NksimInputError("--out must be a folder (it names an existing file)", source=out)
    existing = [n for n in names if (out / n).exists()]
    if existing and not overwrite:
        raise OutputExistsError(f"output folder already holds results ({', '.join(existing)}); "
                                "choose another --out or pass --overwrite", source=out)
