"""Progress callbacks (tierstore.progress) on the long calls, and the CLI's progress display
(tierstore.cli.common.Progress). No servers: the store runs on the in-memory hot tier."""

from __future__ import annotations

import doctest
import io

import numpy as np
import pytest

import tierstore.progress
from tierstore import InvalidInputError
from tierstore.cli.common import Progress
from tierstore.progress import Ticker
from tierstore.testing import memory_store


def test_module_doctest():
    assert doctest.testmod(tierstore.progress).failed == 0


def test_ticker_calls_at_most_once_per_interval_and_once_at_the_end():
    seen = []
    t = Ticker(lambda d, n: seen.append((d, n)), total=100, every=3600)
    for _ in range(100):
        t.add(1)
    assert seen == [(1, 100)]  # the first report; the rest fall within the interval
    t.finish()
    t.finish()  # (once)
    assert seen == [(1, 100), (100, 100)]


def test_ticker_reports_every_call_without_an_interval_and_a_late_total():
    seen = []
    t = Ticker(lambda d, n: seen.append((d, n)), every=0)
    t.set(5)
    t.set(7, 20)
    t.finish()
    assert seen == [(5, None), (7, 20), (7, 20)]
    seen.clear()
    t = Ticker(lambda d, n: seen.append((d, n)), every=0)
    t.add(3)
    t.finish()
    assert seen[-1] == (3, 3)  # an unknown total is what was done


def test_ticker_without_callback_and_a_bad_callback():
    Ticker(None, total=3).finish()
    with pytest.raises(InvalidInputError, match="progress"):
        Ticker(42)


@pytest.fixture
def store(tmp_path):
    s = memory_store(tmp_path, dim=8, hot={"capacity": 300}, warm={"segment_size": 100, "compact_threshold": 0.1})
    rng = np.random.default_rng(0)
    s.upsert(list(range(250)), rng.standard_normal((250, 8)).astype(np.float32), tier="hot")
    s.upsert(list(range(250, 650)), rng.standard_normal((400, 8)).astype(np.float32), tier="warm")
    s.flush()
    yield s
    s.close()


def _check_calls(seen: list[tuple[int, int | None]], total: int) -> None:
    assert seen, "progress was never called"
    assert seen[-1] == (total, total)
    dones = [d for d, _ in seen]
    assert dones == sorted(dones)  # monotonic


def test_verify_reports_progress(store):
    seen = []
    rep = store.verify(progress=lambda d, n: seen.append((d, n)))
    assert rep["ok"], rep["problems"]
    c = store.catalog.counts()
    _check_calls(seen, c["warm"] + sum(c.values()) + c["hot"])  # files, the catalog walk, Redis


def test_compact_reports_rows_rewritten(store):
    store.delete(list(range(250, 300)))  # dead rows in the first warm segments
    seen = []
    out = store.compact(progress=lambda d, n: seen.append((d, n)))
    assert out["warm"]["segments"] >= 1
    _check_calls(seen, out["warm"]["rows_kept"] + out["warm"]["rows_dropped"])


def test_rebuild_hot_reports_vectors(store):
    seen = []
    assert store.rebuild_hot(progress=lambda d, n: seen.append((d, n))) == 250
    _check_calls(seen, 250)  # (the in-memory tier reports only at its end: (0, 250) then (250, 250))
    assert seen[0] == (0, 250)


def test_rebuild_hot_waits_while_the_catalog_stands_in_for_redis(store, monkeypatch):
    """(An embedded Redis loading its data at open: what a CLI run meets on a large store.)"""
    from tierstore.testing import MemoryHotTier

    reasons = iter(["Redis is loading its data"] * 3)
    monkeypatch.setattr(MemoryHotTier, "standby_reason", property(lambda self: next(reasons, None)))
    seen = []
    assert store.rebuild_hot(progress=lambda d, n: seen.append((d, n))) == 250
    assert seen[0] == (0, 250) and seen[-1] == (250, 250)
    assert next(reasons, None) is None  # it asked until the stand-in was gone


@pytest.mark.parametrize("call", ["verify", "compact", "rebuild_hot"])
def test_a_bad_progress_argument_is_rejected_before_any_work(store, call):
    gen = store.catalog.generation()
    with pytest.raises(InvalidInputError, match="progress"):
        getattr(store, call)(progress="yes")
    assert store.catalog.generation() == gen


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_cli_progress_on_a_terminal_draws_a_bar_with_rate_and_eta():
    out = Tty()
    bar = Progress(1000, "ingest x", stream=out)
    bar.update(250)
    text = out.getvalue()
    assert text.startswith("\ringest x [") and "250/1,000" in text and "25%" in text and "/s" in text
    assert "ETA" in text
    bar.update(750)
    bar.close()
    last = out.getvalue().split("\r")[-1]
    assert "1,000/1,000" in last and "100%" in last and " in " in last and last.endswith("\n")


def test_cli_progress_without_a_terminal_prints_a_line_per_ten_percent():
    out = io.StringIO()
    bar = Progress(100, "export", stream=out)
    for _ in range(100):
        bar.update(1)
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 10 and lines[0].startswith("export: 10/100 (10%)") and "100/100 (100%)" in lines[-1]


def test_cli_progress_as_a_callback_with_an_unknown_total():
    out = io.StringIO()
    bar = Progress(None, "verify", stream=out)
    bar.callback(5, None)
    bar.close()
    assert out.getvalue().startswith("verify: 5 ") and out.getvalue().endswith("\n")
    out = Tty()
    bar = Progress(None, "rebuild-hot", stream=out)
    bar.callback(40, 80)
    bar.callback(80, 80)
    bar.close()
    assert "80/80" in out.getvalue().split("\r")[-1]
    out = Tty()
    Progress(10, "wait", stream=out).callback(0, 10)  # no rate yet: no made-up ETA
    assert "ETA --" in out.getvalue()
