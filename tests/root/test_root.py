"""``NextOffer``, the composition root: the README's example runs as written, and what
``open`` opened is closed (sync and async), also when opening fails half-way."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from nextoffer import NextOffer, Settings
from nextoffer.errors import BadRequest
from nextoffer.storage.redis_counters import RedisCounters
from nextoffer.storage.sqlite_path import SqlitePath
from nextoffer.storage.store import Store
from support.backends import redis_url

README = Path(__file__).parents[2] / "README.md"


def readme_example() -> str:
    section = README.read_text(encoding="utf-8").split("## Using it from Python", 1)[1]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    assert found is not None, "README: no python block under 'Using it from Python'"
    return found.group(1)


def test_the_readme_example_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # its database is a relative path
    exec(compile(readme_example(), str(README), "exec"), {"__name__": "readme"})
    assert capsys.readouterr().out == "True\n"
    assert (tmp_path / "offers.db").exists()


def test_close_closes_everything_it_opened(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    closed: list[str] = []
    monkeypatch.setattr(RedisCounters, "close", lambda self: closed.append("redis"))
    monkeypatch.setattr(Store, "close", lambda self: closed.append("store"))
    settings = Settings(db_url=f"sqlite:///{tmp_path / 'n.db'}", redis_url=redis_url())
    with NextOffer.open(settings) as no:
        inner = no.path._path  # type: ignore[attr-defined]  # CountersElsewhere's
        assert isinstance(inner, SqlitePath)
    assert no.executor._shutdown  # type: ignore[attr-defined]
    assert inner._closed
    assert closed == ["redis", "store"]  # the last opened first
    no.close()  # a second close does nothing
    assert closed == ["redis", "store"]


def test_async_with_closes_too(tmp_path: Path) -> None:
    async def main() -> NextOffer:
        async with NextOffer.open(Settings(db_url=f"sqlite:///{tmp_path / 'n.db'}")) as no:
            tenant = await no.run(no.bootstrap, org="A@AdobeOrg", sandbox="prod")
            assert tenant.container_id
        return no

    no = asyncio.run(main())
    assert no.executor._shutdown  # type: ignore[attr-defined]


def test_a_failed_open_closes_what_it_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed: list[Store] = []
    close = Store.close

    def spying(self: Store) -> None:
        closed.append(self)
        close(self)

    monkeypatch.setattr(Store, "close", spying)
    settings = Settings(db_url=f"sqlite:///{tmp_path / 'n.db'}", redis_url="http://nowhere")
    with pytest.raises(BadRequest):
        NextOffer.open(settings)
    assert len(closed) == 1
