"""The errors a person can act on, and the exit status of each (one table: `EXIT_CODES`).

Every `mtssad` command ends a failure with ONE stderr line that names the problem and the
fix, and one of these exit statuses (docs/reliability.md and `mtssad --help` show the table):

    0    success
    1    unexpected error (a bug): the traceback is printed; please report it
    2    bad input: a flag, the data set or data root, a config, the output directory, the device
    3    a file mtssad reads is damaged or foreign (results, scores, history, detector, checkpoint)
    4    disk full (or quota exceeded) while writing results, scores or a detector
    5    out of memory (CPU RAM or GPU memory)
    6    a sweep did not finish every trial: rerun it with --resume
    130  interrupted (Ctrl-C): finished work is kept; the message says how to resume

The classes also subclass the built-in error a Python caller would expect (ValueError for bad
input and damaged files, OSError for a full disk, MemoryError for memory), so `except ValueError`
keeps working. This module imports nothing heavy: `mtssad --help` reads it.
"""

from __future__ import annotations

import errno

EXIT_OK = 0
EXIT_BUG = 1
EXIT_USAGE = 2
EXIT_BAD_FILE = 3
EXIT_DISK_FULL = 4
EXIT_OUT_OF_MEMORY = 5
EXIT_INCOMPLETE = 6
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C

EXIT_CODES: dict[int, str] = {
    EXIT_OK: "success",
    EXIT_BUG: "unexpected error (a bug): the traceback is printed; please report it",
    EXIT_USAGE: "bad input: flag, data set/root, config, output directory, device",
    EXIT_BAD_FILE: "a results/scores/history/detector/checkpoint file is damaged or foreign",
    EXIT_DISK_FULL: "disk full or quota exceeded while writing",
    EXIT_OUT_OF_MEMORY: "out of memory (RAM or GPU)",
    EXIT_INCOMPLETE: "a sweep did not finish every trial: rerun it with --resume",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C): finished work is kept",
}

# errno values that mean "no room to write": no space left, quota exceeded
DISK_FULL_ERRNOS = frozenset(e for e in (getattr(errno, "ENOSPC", None), getattr(errno, "EDQUOT", None)) if e)


def exit_codes_text() -> str:
    """The table as lines for `mtssad --help`."""
    return "exit status:\n" + "\n".join(f"  {code:<4} {what}" for code, what in EXIT_CODES.items())


class MtssadError(Exception):
    """Base of the errors the CLI turns into one line and `exit_code`."""

    exit_code = EXIT_BUG


class UsageError(MtssadError, ValueError):
    """Bad input: a flag, argument, config or device that cannot work; nothing was started."""

    exit_code = EXIT_USAGE


class DeviceError(UsageError):
    """The requested device (cuda, cuda:N, mps) is not available on this machine."""


class OutputDirError(UsageError):
    """The output directory cannot be created or written."""


class CorruptFileError(MtssadError, ValueError):
    """A file mtssad reads is damaged, truncated or not what it should be; the message names it."""

    exit_code = EXIT_BAD_FILE


class DiskFullError(MtssadError, OSError):
    """No space left (or quota exceeded) while writing a file; the message names the file."""

    exit_code = EXIT_DISK_FULL


class OutOfMemoryError(MtssadError, MemoryError):
    """Training or scoring ran out of RAM or GPU memory; the message names the settings to lower."""

    exit_code = EXIT_OUT_OF_MEMORY


def is_disk_full(exc: BaseException) -> bool:
    """An OSError saying the disk (or the quota) is full, also when wrapped (raise ... from e)."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


_OOM_TEXTS = ("out of memory", "not enough memory", "can't allocate memory", "cannot allocate memory",
              "failed to allocate memory")


def is_out_of_memory(exc: BaseException) -> bool:
    """MemoryError, torch.OutOfMemoryError (CUDA/MPS) or a RuntimeError from torch's allocators."""
    if isinstance(exc, MemoryError):
        return True
    name = type(exc).__name__
    if name == "OutOfMemoryError":  # torch.OutOfMemoryError / torch.cuda.OutOfMemoryError (a RuntimeError)
        return True
    if isinstance(exc, RuntimeError):
        text = str(exc).lower()
        return any(t in text for t in _OOM_TEXTS)
    return False


__all__ = [
    "EXIT_BAD_FILE", "EXIT_BUG", "EXIT_CODES", "EXIT_DISK_FULL", "EXIT_INCOMPLETE", "EXIT_INTERRUPTED", "EXIT_OK",
    "EXIT_OUT_OF_MEMORY", "EXIT_USAGE", "CorruptFileError", "DeviceError", "DiskFullError", "MtssadError",
    "OutOfMemoryError", "OutputDirError", "UsageError", "exit_codes_text", "is_disk_full", "is_out_of_memory",
]
