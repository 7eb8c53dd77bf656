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
from ..store import TierStore

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_INTEGRITY = 0, 1, 2, 3, 4


class Progress:
    """A dependency-free progress line on stderr (a bar on a terminal, a line per 10% otherwise)."""

    def __init__(self, total: int, label: str) -> None:
        self.total, self.label, self.done = total, label, 0
        self.t0 = time.perf_counter()
        self.tty = sys.stderr.isatty()
        self._next_report = 0.1

    def update(self, n: int) -> None:
        self.done += n
        frac = self.done / max(self.total, 1)
        rate = self.done / max(time.perf_counter() - self.t0, 1e-9)
        if self.tty:
            bar = "#" * int(30 * frac)
            sys.stderr.write(f"\r{self.label} [{bar:<30}] {self.done}/{self.total} {rate:,.0f}/s")
        elif frac >= self._next_report or self.done == self.total:
            sys.stderr.write(f"{self.label}: {self.done}/{self.total} ({100 * frac:.0f}%) {rate:,.0f}/s\n")
            self._next_report = frac + 0.1
        sys.stderr.flush()

    def close(self) -> float:
        secs = time.perf_counter() - self.t0
        if self.tty:
            sys.stderr.write("\n")
        return secs


def load(args: argparse.Namespace, **overrides: Any) -> Config:
    config = args.config or os.environ.get("TIERSTORE_CONFIG")
    if config is None and Path("tierstore.toml").exists():
        config = "tierstore.toml"
    if config is None:
        raise UsageError("no config: pass --config FILE, set TIERSTORE_CONFIG, or run `tierstore init` here")
    # a command-line run never starts the background policy thread: it does one job and exits
    return load_config(config, policy={"interval": 0}, **overrides)


def open_existing(args: argparse.Namespace, must_exist: bool = True, **overrides: Any) -> TierStore:
    """Open the configured store. Every command but ``init`` and ``ingest`` needs an existing
    store: a mistyped store.path is a ConfigError (exit 2), never a new empty store."""
    cfg = load(args, **overrides)
    if must_exist:
        paths.require_store(cfg.store.path, cfg.source)
    return TierStore(cfg)


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
