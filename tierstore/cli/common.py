"""What every command shares: exit codes, the progress line, loading the config, opening the
store, the usage error and printing a result."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from .. import paths
from ..config import Config, load_config
from ..errors import StoreLockedError
from ..store import TierStore

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_INTEGRITY = 0, 1, 2, 3, 4


class Progress:
    """A dependency-free progress display on stderr: on a terminal a bar redrawn in place with the
    count, the rate and the time left (or, without a known total, the count and the rate); else
    a plain line at each 10% (or every 10 s without a total), so a log stays readable.

    Feed it increments (:meth:`update`, the CLI's own loops) or absolute counts
    (:meth:`callback`, the ``progress(done, total)`` of ``rebuild_hot``/``compact``/``verify``).
    Redraws at most every 0.2 s; :meth:`close` draws the final state and ends the line."""

    WIDTH = 30

    def __init__(self, total: int | None, label: str, stream: Any = None) -> None:
        self.total, self.label, self.done = total, label, 0
        self.stream = stream if stream is not None else sys.stderr
        self.t0 = time.perf_counter()
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._drawn = float("-inf")  # when the bar was last drawn
        self._next_frac = 0.1  # plain lines: the next fraction to report
        self._next_time = self.t0 + 10.0  # plain lines without a total: the next time to report
        self._closed = False

    def update(self, n: int) -> None:
        """``n`` more units done."""
        self._show(self.done + n, self.total)

    def callback(self, done: int, total: int | None) -> None:
        """A ``progress(done, total)`` callback for the store's long calls."""
        self._show(done, total)

    def _show(self, done: int, total: int | None, final: bool = False) -> None:
        self.done = done
        if total is not None:
            self.total = total
        now = time.perf_counter()
        if self.tty:
            if final or now - self._drawn >= 0.2:
                self._drawn = now
                self.stream.write("\r" + self.line(now) + "\x1b[K")
                self.stream.flush()
            return
        if self.total:
            due = done / self.total >= self._next_frac or (final and done != self._reported)
        else:
            due = now >= self._next_time or (final and done != self._reported)
        if due:
            self.stream.write(self.line(now) + "\n")
            self.stream.flush()
            self._reported = done
            if self.total:
                self._next_frac = (int(10 * done / self.total) + 1) / 10
            self._next_time = now + 10.0

    _reported = -1

    def line(self, now: float | None = None) -> str:
        """The progress as one line of text: label, bar, count, rate, time left."""
        secs = max((now if now is not None else time.perf_counter()) - self.t0, 1e-9)
        rate = self.done / secs
        if not self.total:
            return f"{self.label}: {self.done:,} {_rate(rate)} {_duration(secs)}"
        frac = min(self.done / self.total, 1.0)
        bar = "#" * int(self.WIDTH * frac)
        if self.done >= self.total:
            eta = f"in {_duration(secs)}"
        else:  # (nothing done yet, e.g. waiting for Redis to load: no rate to tell from)
            eta = f"ETA {_duration((self.total - self.done) / rate)}" if rate > 0 else "ETA --"
        if self.tty:
            return (f"{self.label} [{bar:<{self.WIDTH}}] {self.done:,}/{self.total:,} {100 * frac:3.0f}% "
                    f"{_rate(rate)} {eta}")
        return f"{self.label}: {self.done:,}/{self.total:,} ({100 * frac:.0f}%) {_rate(rate)} {eta}"

    def close(self) -> float:
        """Draw the final state (once) and end the bar's line; returns the seconds elapsed."""
        secs = time.perf_counter() - self.t0
        if not self._closed:
            self._closed = True
            if self.done or self.total:
                self._show(self.done, self.total, final=True)
            if self.tty:
                self.stream.write("\n")
                self.stream.flush()
        return secs


def _rate(per_s: float) -> str:
    return f"{per_s:,.0f}/s" if per_s >= 10 else f"{per_s:,.1f}/s"


def _duration(secs: float) -> str:
    secs = int(round(secs))
    if secs < 60:
        return f"{secs}s"
    if secs < 3600:
        return f"{secs // 60}m{secs % 60:02d}s"
    return f"{secs // 3600}h{secs % 3600 // 60:02d}m"


def load(args: argparse.Namespace, **overrides: Any) -> Config:
    config = args.config or os.environ.get("TIERSTORE_CONFIG")
    if config is None and Path("tierstore.toml").exists():
        config = "tierstore.toml"
    if config is None:
        raise UsageError("no config: pass --config FILE, set TIERSTORE_CONFIG, or run `tierstore init` here")
    # a command-line run never starts the background policy thread: it does one job and exits
    return load_config(config, policy={"interval": 0}, **overrides)


def open_existing(args: argparse.Namespace, must_exist: bool = True, reads_only: bool = False,
                  **overrides: Any) -> TierStore:
    """Open the configured store. Every command but ``init`` and ``ingest`` needs an existing
    store: a mistyped store.path is a ConfigError (exit 2), never a new empty store.

    ``--read-only`` (``args.read_only``) opens it as a read-only process, beside a service that
    holds it for writing. ``reads_only``: this run of the command only reads, so a store locked by
    a writer gets the hint to add ``--read-only`` rather than to stop the writer."""
    cfg = load(args, **overrides)
    if must_exist:
        paths.require_store(cfg.store.path, cfg.source)
    read_only = bool(getattr(args, "read_only", False))
    try:
        return TierStore(cfg, read_only=read_only)
    except StoreLockedError as exc:
        if reads_only and not read_only:
            exc.args = (f"{exc}. This command only reads: add --read-only to run it alongside the writer",)
        raise


class UsageError(Exception):
    """Bad usage of the command line (exit 2): the message says what to pass instead."""


def emit(obj: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(obj, indent=2, default=str))
    else:
        _print_tree(obj)


def _print_tree(obj: Any, indent: int = 0) -> None:
    for key, value in obj.items():
        if isinstance(value, dict):
            print(" " * indent + f"{key}:")
            _print_tree(value, indent + 2)
        else:
            print(" " * indent + f"{key}: {value}")
