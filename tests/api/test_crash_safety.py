"""A short crash test (``scripts/crash-test`` runs more rounds): concurrent creates, patches
and events, SIGKILL mid-burst, restart; every acknowledged write is there, and SQLite's
integrity check passes."""

from __future__ import annotations

import pytest

from support import crashburst


@pytest.mark.slow
def test_every_acknowledged_write_survives_sigkill(tmp_path):
    results = crashburst.run(tmp_path, rounds=2, clients=6, kill_after=1.5)
    for result in results:
        assert result.ok, result
        assert result.integrity == "ok"
    # The rounds really wrote before the kill (otherwise the test proves nothing).
    assert sum(r.acked_creates for r in results) >= 5
    assert sum(r.acked_events for r in results) >= 5
    assert sum(r.acked_patches for r in results) >= 1
