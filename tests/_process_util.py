"""Helpers for tests that run nksim in a real child process and signal it (Ctrl-C, SIGTERM)."""
from __future__ import annotations

import signal
import threading


def sigint_as_in_a_terminal() -> None:
    """In the child (``preexec_fn``): SIGINT raises KeyboardInterrupt even if the tests run in the background."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def stderr_reader(proc) -> list[bytes]:
    """Collect ``proc``'s stderr in a thread as it comes (so a full pipe never blocks the child)."""
    chunks: list[bytes] = []
    threading.Thread(target=lambda: chunks.extend(iter(lambda: proc.stderr.read1(4096), b"")), daemon=True).start()
    return chunks


def message_lines(err: str) -> list[str]:
    """The lines of ``err`` except progress bars, pyabc's progress lines and the compile notice."""
    return [ln for ln in err.replace("\r", "\n").splitlines()
            if ln.strip() and "%|" not in ln and "| " not in ln and not ln.startswith("nksim: compiling")]
