"""Progress callbacks for long calls: ``rebuild_hot``, ``compact``, ``verify`` and the CLI's
ingest, export and migrate.

A callback is ``progress(done: int, total: int | None)`` (``total`` is ``None`` while the amount
of work is not known yet). The long loops report through a :class:`Ticker`, which calls the
callback at most every ``every`` seconds (0.2 by default) and exactly once more at the end with
the final counts: the loop may report after every batch without a slow callback (a terminal
write, a network push) slowing the work, and the caller always learns where it finished.

>>> seen = []
>>> t = Ticker(lambda d, n: seen.append((d, n)), total=3)
>>> for _ in range(3):
...     t.add(1)
>>> t.finish()
>>> seen[0], seen[-1]
((1, 3), (3, 3))
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from .errors import InvalidInputError

ProgressFn = Callable[[int, "int | None"], None]
EVERY = 0.2  # seconds between two calls of a callback (the last call is always made)
T = TypeVar("T")


def check(progress: object) -> ProgressFn | None:
    """``progress`` itself if it is ``None`` or callable; else :class:`InvalidInputError` naming
    the argument (raised before the call does any work)."""
    if progress is not None and not callable(progress):
        raise InvalidInputError(f"progress: {progress!r} is not allowed: pass a callable progress(done, total) "
                                "or None")
    return progress


class Ticker:
    """Throttles a progress callback (``None``: every method is a no-op)."""

    def __init__(self, callback: ProgressFn | None, total: int | None = None, every: float = EVERY) -> None:
        self.callback = check(callback)
        self.total = total
        self.done = 0
        self.every = every
        self._last = float("-inf")
        self._finished = False

    def set(self, done: int, total: int | None = None) -> None:
        """The work done so far (and the total, when it became known or changed)."""
        self.done = done
        if total is not None:
            self.total = total
        if self.callback is None:
            return
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            self.callback(self.done, self.total)

    def add(self, n: int) -> None:
        self.set(self.done + n)

    def finish(self, done: int | None = None) -> None:
        """The final call (once; later calls do nothing). Without a known total the total is
        what was done."""
        if self._finished:
            return
        self._finished = True
        if done is not None:
            self.done = done
        if self.total is None:
            self.total = self.done
        if self.callback is not None:
            self.callback(self.done, self.total)


def chunks(items: Iterable[T], size: int, progress: ProgressFn | None = None,
           total: int | None = None) -> Iterator[list[T]]:
    """``items`` in lists of ``size`` (the last may be shorter); each list counts as done for
    ``progress`` once the caller has handled it and asks for the next, and the end is reported
    once the items run out.

    >>> seen = []
    >>> [len(c) for c in chunks(range(5), 2, lambda d, n: seen.append((d, n)), total=5)], seen[-1]
    ([2, 2, 1], (5, 5))
    """
    tick = Ticker(progress, total)
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            tick.add(len(batch))
            batch = []
    if batch:
        yield batch
        tick.add(len(batch))
    tick.finish()


__all__ = ["EVERY", "ProgressFn", "Ticker", "check", "chunks"]
