"""Error types raised on bad input, and the category of nksim's warnings.

Every error about user input names the file, the key and what is allowed, so
that a user can fix a TOML file without reading the source.
"""
from __future__ import annotations

from pathlib import Path


class NksimInputError(ValueError):
    """Invalid user input (parameter set, protocol, CLI option, output path).

    Parameters
    ----------
    message:
        What is wrong and what is allowed.
    source:
        File (or other origin, e.g. ``"<dict>"``) the bad value came from.
    key:
        Dotted key path inside ``source``.
    """

    def __init__(self, message: str, *, source: str | Path | None = None, key: str | None = None):
        self.source = str(source) if source is not None else None
        self.key = key
        where = []
        if self.source:
            where.append(self.source)
        if key:
            where.append(f"key '{key}'")
        prefix = ": ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class OutputExistsError(NksimInputError, FileExistsError):
    """The output location already holds results and overwriting was not requested."""


class NksimWriteError(OSError):
    """An output could not be written (disk full, no permission, ...) after the results were computed.

    The message names the path, the reason and where the computed results were kept (if they
    could be); the command line prints it as one line and exits with status 1.
    """


class NksimWarning(UserWarning):
    """The category of every warning nksim emits.

    Filter nksim's own warnings by this class, e.g.
    ``warnings.simplefilter("error", nksim.NksimWarning)`` (the test suite does so through
    ``filterwarnings`` in ``pyproject.toml``). A subclass of :class:`UserWarning`, so
    existing ``UserWarning`` filters still apply.
    """


class OutsidePriorWarning(NksimWarning):
    """A parameter value lies outside the ``prior = [lo, hi]`` range declared for it.

    Not an error: the hard ranges of :mod:`nksim.quantities` are the errors; a prior is the
    range calibration explores, and a value outside it is allowed but seldom intended. The
    message names the file (or override), the key, the value and the prior range.
    """


class DeprecatedKeyWarning(NksimWarning):
    """A deprecated model-file key (an alias of newer keys) or a retired one was read.

    The message names the file (or override), the key and what replaces it
    (:data:`nksim.quantities.PARAMETER_ALIASES`, :data:`nksim.quantities.RETIRED_PARAMETERS`).
    """


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a command; :attr:`kept` says what was kept.

    A :class:`KeyboardInterrupt`, so that every ``except KeyboardInterrupt`` clean-up applies.
    The command line prints ``nksim COMMAND: interrupted[ by SIGTERM]; KEPT`` on one line and
    exits with status 130.
    """

    def __init__(self, kept: str = "nothing written"):
        super().__init__(kept)
        self.kept = kept


class SimulationHalted(KeyboardInterrupt):
    """A simulation was stopped before its end by an interruption (its kernel's halt flag was set).

    Raised instead of returning its incomplete arrays: a halted simulation is never a result
    and is never kept. A :class:`KeyboardInterrupt`, so that it is handled as the interruption it is.
    """


class Terminated(KeyboardInterrupt):
    """Raised by the command line's SIGTERM handler: a termination request, handled like Ctrl-C."""
