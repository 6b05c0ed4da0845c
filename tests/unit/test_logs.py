"""``Throttled`` (``nextoffer/logs.py``): the first line at once, then at most one every
``seconds``, each saying how many it stood for; its lock keeps the count exact across
threads."""

from __future__ import annotations

import logging
import threading

import pytest

from nextoffer.logs import Throttled


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_an_outage_s_lines_are_one_every_ten_seconds_counting_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    throttled = Throttled(logging.getLogger("nextoffer.test"), clock=clock)
    with caplog.at_level(logging.ERROR, logger="nextoffer.test"):
        for n in range(1000):  # a thousand decisions in the first second
            clock.now = n / 1000
            throttled.error("decision %s not recorded: %s", f"d-{n}", "the database is away")
        clock.now = 10.0
        throttled.error("decision %s not recorded: %s", "d-x", "the database is away")
    assert [r.getMessage() for r in caplog.records] == [
        "decision d-0 not recorded: the database is away",
        "decision d-x not recorded: the database is away (and 999 more like it in the 10 s before)",
    ]
    assert all(r.levelno == logging.ERROR for r in caplog.records)


def test_lines_of_many_threads_are_counted_once_each(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    throttled = Throttled(logging.getLogger("nextoffer.test"), clock=clock)

    def many() -> None:
        for _ in range(500):
            throttled.error("failed")

    with caplog.at_level(logging.ERROR, logger="nextoffer.test"):
        threads = [threading.Thread(target=many) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        clock.now = 10.0
        throttled.error("failed")
    assert [r.getMessage() for r in caplog.records] == [
        "failed",
        "failed (and 1999 more like it in the 10 s before)",
    ]
