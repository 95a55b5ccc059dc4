"""Discard numba cache files compiled against another array layout or other samplers; tell whether the kernel is cached.

numba keys a cached kernel on its own source file (``kernel.py``) and freezes the global
index tuples of :mod:`nksim.engine.layout` into the machine code. The tuples are derived
from :mod:`nksim.quantities`, so a new parameter or output changes them without touching
``kernel.py``; numba would then load a kernel that reads the wrong slots. Likewise the
functions of :mod:`nksim.engine.samplers` are compiled into the kernel's cache entry, so an
edit of ``samplers.py`` alone would leave the old draws in the cached kernel. Before the first
call, :func:`check` compares ``nksim.engine.KERNEL_DIGEST`` (the layout digest and the
samplers' source digest) with the digest stored beside the cache and removes the kernel's
cache files when they differ.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

STAMP = "nksim-layout.digest"


def file_digest(path) -> str:
    """SHA-256 (16 hex digits) of a source file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


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


def kernel_cached(dispatcher) -> bool | None:
    """Whether calling ``dispatcher`` now runs without compiling it first (cheap; nothing is loaded).

    True when the kernel is already compiled or loaded in this process, or numba's JIT is off;
    True when numba's cache index beside ``kernel.py`` (or under ``NUMBA_CACHE_DIR``) holds an
    entry for this numba version, source file and CPU; False when it does not (a cold cache: the
    first call compiles, about 10-20 s) or caching is off; None when it cannot tell.
    """
    try:
        if not hasattr(dispatcher, "signatures"):
            return True  # NUMBA_DISABLE_JIT: a plain Python function
        if dispatcher.signatures:
            return True
        cache_file = getattr(getattr(dispatcher, "_cache", None), "_cache_file", None)
        if cache_file is None:
            return False  # caching disabled: every process compiles
        index = cache_file._load_index()  # {} when missing, stale (source changed) or another numba version
        magic = dispatcher.targetctx.codegen().magic_tuple()
        return any(isinstance(k, tuple) and len(k) > 1 and k[1] == magic for k in index)
    except Exception:  # numba internals changed: do not guess
        return None
