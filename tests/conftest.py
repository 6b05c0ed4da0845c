"""For every test group: the ``db_url`` fixture (a test that takes it runs on SQLite and on
PostgreSQL), and a closing line saying which database backends the run exercised.

At the end of a run pytest prints, per backend, how many tests ran on it and how they
ended, for instance::

    backends: sqlite ✓ (1204 tests), postgresql ✓ (1190 tests), redis ✓ (31 tests)

A test counts for PostgreSQL or Redis when it asks ``support/backends.py`` for that
server's URL (it then runs, is skipped for want of a server, or fails under ``CI=true``);
it counts for SQLite when one of its parameters is ``"sqlite"`` (the ``db_url`` fixtures
that run a test on both backends). A server asked for by a fixture wider than one test
counts for the first test only. Nothing is printed when no selected test used a backend.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

import support.backends as backends

_NAMES = {"PostgreSQL": "postgresql", "Redis": "redis"}
_ORDER = ("sqlite", "postgresql", "redis")
_RANK = {"passed": 0, "skipped": 1, "failed": 2}

_outcome: dict[str, str] = {}  # the running test's worst phase so far
_counts: defaultdict[str, Counter[str]] = defaultdict(Counter)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    backends.asked.clear()
    _outcome.clear()
    yield
    outcome = _outcome.get(item.nodeid)
    if outcome is None:  # not run (e.g. -x stopped the session)
        return
    used = {_NAMES[what] for what in backends.asked}
    callspec = getattr(item, "callspec", None)
    if callspec is not None and any(
        isinstance(value, str) and value == "sqlite" for value in callspec.params.values()
    ):
        used.add("sqlite")
    for backend in used:
        _counts[backend][outcome] += 1


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.failed:
        phase = "failed"
    elif report.skipped:
        phase = "passed" if hasattr(report, "wasxfail") else "skipped"  # xfail as expected
    else:
        phase = "passed"
    previous = _outcome.get(report.nodeid, "passed")
    _outcome[report.nodeid] = max(previous, phase, key=_RANK.__getitem__)


def _describe(backend: str, counts: Counter[str]) -> str:
    total = sum(counts.values())
    tests = f"{total} test" + ("" if total == 1 else "s")
    if counts["failed"]:
        mark = "✗"
    elif counts["skipped"] == total:
        mark = "skipped"
    elif counts["skipped"]:
        mark = "partly skipped"
    else:
        return f"{backend} ✓ ({tests})"
    detail = ", ".join(f"{counts[k]} {k}" for k in ("passed", "failed", "skipped") if counts[k])
    return f"{backend} {mark} ({tests}: {detail})"


@pytest.hookimpl(wrapper=True, tryfirst=True)  # outermost: after the short test summary
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> Iterator[None]:
    yield
    ran = [b for b in _ORDER if _counts.get(b)]
    if not ran:
        return
    every = sum((_counts[b] for b in ran), Counter())
    colour = "red" if every["failed"] else "yellow" if every["skipped"] else "green"
    line = "backends: " + ", ".join(_describe(b, _counts[b]) for b in ran)
    terminalreporter.write_line(line, **{colour: True})


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A test that takes it runs on both backends: a migrated SQLite file of its own, an
    emptied PostgreSQL database (skipped, saying why, when no server was started: see
    support/backends.py)."""
    if request.param == "sqlite":
        yield backends.migrated_sqlite(tmp_path)
        return
    yield backends.emptied_database()
