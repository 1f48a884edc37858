"""Messages through `logging` (the `mtssad` logger hierarchy) and progress bars that stay out of log files.

Modules log with `logging.getLogger(__name__)`; the CLI calls `configure(level)` once per command:
INFO and above go to stderr as plain lines (warnings prefixed "warning:"); with DEBUG every line
carries time, level and logger. `print` stays for the result a command exists to print.

Progress bars (`progress_bar`) are drawn only on a terminal: when stderr is a file or a pipe
(a log, CI, a Ray worker) they are off, so logs never fill with carriage-return frames.
"""

from __future__ import annotations

import logging
import sys

LOGGER = "mtssad"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

_bars = {"enabled": False}  # set by configure(): bars for scoring and data loading (fit bars follow the config)


class _ConsoleHandler(logging.StreamHandler):
    """A stderr handler that looks sys.stderr up at each message (pytest's capture, redirections) and
    writes through tqdm when bars may be on screen (so a message never tears a bar)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ assigns it; the property always answers sys.stderr
        pass

    def emit(self, record):
        tqdm = sys.modules.get("tqdm")
        if tqdm is None or not _bars["enabled"]:
            return super().emit(record)
        try:
            tqdm.tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 -- logging must never raise
            self.handleError(record)


class _Formatter(logging.Formatter):
    def __init__(self, detailed: bool):
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s" if detailed else "%(message)s")
        self.detailed = detailed

    def format(self, record):
        text = super().format(record)
        if not self.detailed and record.levelno >= logging.WARNING:
            text = f"{record.levelname.lower()}: {text}"
        return text


def level_number(level: str | int) -> int:
    if isinstance(level, int):
        return level
    name = str(level).upper()
    if name not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}; got {level!r}")
    return getattr(logging, name)


def configure(level: str | int = "INFO") -> logging.Logger:
    """Send the `mtssad` loggers' messages at `level` and above to stderr (idempotent: one handler)."""
    number = level_number(level)
    log = logging.getLogger(LOGGER)
    for h in [h for h in log.handlers if isinstance(h, _ConsoleHandler)]:
        log.removeHandler(h)
    handler = _ConsoleHandler()
    handler.setFormatter(_Formatter(detailed=number <= logging.DEBUG))
    handler.setLevel(number)  # also when the logger is opened wider for a log file (sweep.log)
    log.addHandler(handler)
    log.setLevel(number)
    _bars["enabled"] = number <= logging.INFO and _is_terminal()
    return log


def _is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def bars_enabled() -> bool:
    """Whether the CLI asked for progress bars and stderr is a terminal."""
    return _bars["enabled"] and _is_terminal()


def progress_bar(*, total: int, desc: str, unit: str = "img", enabled: bool | None = None, **kw):
    """A tqdm bar, drawn only on a terminal. enabled=None follows `configure` (bars at INFO on a TTY)."""
    from tqdm.auto import tqdm

    on = bars_enabled() if enabled is None else (enabled and _is_terminal())
    return tqdm(total=total, desc=desc, unit=unit, disable=not on, leave=False, **kw)


__all__ = ["LEVELS", "LOGGER", "bars_enabled", "configure", "level_number", "progress_bar"]
