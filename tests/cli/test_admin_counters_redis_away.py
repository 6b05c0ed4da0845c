"""``nextoffer admin counters`` with a Redis that does not answer says so and exits 6
(docs/deploy.md, "When a command fails"), also when no container has counted in Redis yet:
it once answered "Redis holds every container's cap counters" and exit 0, from a Redis it
never reached (a mistyped URL), because with no container listed it asked Redis nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from nextoffer.cli import main
from support.servers import free_port


@pytest.mark.parametrize("extra", [[], ["--accept-loss"]], ids=["list", "accept-loss"])
def test_an_unreachable_redis_is_unavailable_not_holding_every_counter(
    tmp_path: Path, extra: list[str]
) -> None:
    db = f"sqlite:///{tmp_path / 'n.db'}"
    made = CliRunner().invoke(
        main, ["admin", "bootstrap", "--db", db, "--org", "A@AdobeOrg", "--sandbox", "prod"]
    )
    assert made.exit_code == 0, made.output
    nowhere = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there

    result = CliRunner().invoke(main, ["admin", "counters", "--db", db, "--redis", nowhere, *extra])

    assert result.exit_code == 6, result.output
    assert "the cap counter store (Redis) is unavailable" in result.output
    assert "holds every container" not in result.output
