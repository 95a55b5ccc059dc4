"""Discard numba cache files compiled against another array layout.

numba keys a cached kernel on its own source file (``kernel.py``) and freezes the global
index tuples of :mod:`nksim.engine.layout` into the machine code. The tuples are derived
from :mod:`nksim.quantities`, so a new parameter or output changes them without touching
``kernel.py``; numba would then load a kernel that reads the wrong slots. Before the first
call, :func:`check` compares :data:`~nksim.engine.layout.LAYOUT_DIGEST` with the digest
stored beside the cache and removes the kernel's cache files when they differ.
"""
from __future__ import annotations

from pathlib import Path

STAMP = "nksim-layout.digest"


def check(dispatcher, module_stem: str, digest: str) -> bool:
    """Remove ``module_stem.*.nbi/.nbc`` cache files if they were built for another ``digest``.

    Returns True when files were removed. Does nothing if caching is off or the cache folder
    cannot be written (numba then compiles in memory).
    """
    cache = getattr(dispatcher, "_cache", None)
    folder = getattr(cache, "_cache_path", None)
    if not folder:
        return False
    folder = Path(folder)
    stamp = folder / STAMP
    try:
        if stamp.is_file() and stamp.read_text().strip() == digest:
            return False
        removed = False
        for f in list(folder.glob(f"{module_stem}.*.nbi")) + list(folder.glob(f"{module_stem}.*.nbc")):
            f.unlink(missing_ok=True)
            removed = True
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{STAMP}.tmp"
        tmp.write_text(digest + "\n")
        tmp.replace(stamp)
        return removed
    except OSError:
        return False
