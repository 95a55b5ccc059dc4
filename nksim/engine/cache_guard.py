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


def check(dispatcher, module_stem: str | tuple[str, ...], digest: str) -> bool:
    """Remove the ``<stem>.*.nbi/.nbc`` cache files of every stem in ``module_stem`` if built for another ``digest``.

    Every engine module whose cached functions freeze the layout must be named: a kernel
    recompiled after a layout change links the *cached* machine code of the functions it calls
    (``blood.py``'s among them), so removing the kernel's files alone would leave it reading
    the old slots through them.

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
        stems = (module_stem,) if isinstance(module_stem, str) else tuple(module_stem)
        for f in [f for stem in stems for f in (*folder.glob(f"{stem}.*.nbi"), *folder.glob(f"{stem}.*.nbc"))]:
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
    except Exception:  # numba internals changed: do not guess
        return None
    return kernel_in_cache_files(dispatcher)


def kernel_in_cache_files(dispatcher) -> bool | None:
    """Whether numba's cache index on disk holds ``dispatcher`` compiled for this numba version and CPU.

    Unlike :func:`kernel_cached`, a kernel compiled in this process but not saved counts as
    absent. False when caching is off; None when it cannot tell.
    """
    try:
        cache_file = getattr(getattr(dispatcher, "_cache", None), "_cache_file", None)
        if cache_file is None:
            return False  # caching disabled: every process compiles
        index = cache_file._load_index()  # {} when missing, stale (source changed) or another numba version
        magic = dispatcher.targetctx.codegen().magic_tuple()
        return any(isinstance(k, tuple) and len(k) > 1 and k[1] == magic for k in index)
    except Exception:  # numba internals changed: do not guess
        return None


def cache_location(dispatcher) -> tuple[str | None, str | None]:
    """Where numba really caches ``dispatcher``, and why ``NUMBA_CACHE_DIR`` is not used if it is set but unusable.

    Returns ``(folder, problem)``: ``folder`` is the cache folder of the locator numba chose when
    the function was decorated (``NUMBA_CACHE_DIR/<module folder>_<hash>`` when that folder can
    be created and written; else ``__pycache__`` beside the source, else numba's user-wide
    cache), None when the function is not cached at all; ``problem`` is None unless
    ``NUMBA_CACHE_DIR`` is set and numba fell back from it, and then says why (the error numba
    met creating or writing it).
    """
    import os

    from numba.core import config

    cache = getattr(dispatcher, "_cache", None)
    folder = getattr(cache, "_cache_path", None)
    user = config.CACHE_DIR
    if not user:
        return folder, None
    locator = getattr(getattr(cache, "_impl", None), "locator", None)
    try:
        from numba.core.caching import UserProvidedCacheLocator as _User
    except ImportError:  # pragma: no cover - numba < 0.58 names it with an underscore
        from numba.core.caching import _UserProvidedCacheLocator as _User  # type: ignore[attr-defined,no-redef]
    if isinstance(locator, _User):
        return folder, None
    py_func = getattr(dispatcher, "py_func", None)
    if py_func is None:
        return folder, "numba does not cache this function there"
    target = os.path.join(user, _User.get_suitable_cache_subpath(py_func.__code__.co_filename))
    try:  # what numba's locator does (UserProvidedCacheLocator.ensure_cache_path), to name its error
        os.makedirs(target, exist_ok=True)
        import tempfile

        tempfile.TemporaryFile(dir=target).close()
    except OSError as exc:
        return folder, f"{exc.filename}: {exc.strerror or exc}" if exc.filename else str(exc.strerror or exc)
    return folder, "numba could not create or write it when nksim was imported"
