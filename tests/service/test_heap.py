"""settle_heap: compiled snapshots leave the cyclic collector's sight, replaced ones are freed."""

from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nextoffer.repository.objects import PLACEMENT, SchemaRef
from nextoffer.root import NextOffer
from nextoffer.service import catalogs
from nextoffer.service.heap import BULK_GC_THRESHOLD, bulk_heap, settle_heap
from nextoffer.settings import Settings


@pytest.fixture
def thawed() -> Iterator[None]:
    yield
    gc.unfreeze()  # leave the test process as it found it


#: A placement's body: the smallest instance a snapshot is built from.
BANNER = {
    "xdm:name": "Banner",
    "xdm:channel": "https://ns.adobe.com/xdm/channel-types/web",
    "xdm:componentType": "https://ns.adobe.com/experience/offer-management/content-component-html",
}


def with_a_placement(no: NextOffer, org: str) -> tuple[Any, Any]:
    """(credentials, placement) of a new tenant whose library is one placement."""
    creds = no.bootstrap(org=org, sandbox="prod")
    schema = SchemaRef(PLACEMENT, None, "")
    return creds, no.repository.create(creds.principal, creds.container_id, schema, BANNER)


def rename(no: NextOffer, creds: Any, placement: Any, name: str) -> None:
    """Change the placement's name, then get the container's snapshot (a refresh)."""
    no.repository.replace(
        creds.principal,
        creds.container_id,
        placement.instance_id,
        None,
        {**BANNER, "xdm:name": name},
        if_match=None,
    )
    no.catalogs.get(creds.container_id)


class Cycle:
    def __init__(self) -> None:
        self.me = self


def test_settle_heap_frees_old_cycles_and_freezes_the_living(thawed: None) -> None:
    gc.freeze()
    garbage = Cycle()
    dead = weakref.ref(garbage)
    del garbage  # a cycle: only the collector frees it, and it is frozen right now
    assert dead() is not None
    living = Cycle()
    settle_heap()
    assert dead() is None
    assert gc.get_freeze_count() > 0
    assert not any(o is living for o in gc.get_objects())  # out of the collector's sight


def test_rebuilds_freeze_the_snapshot_and_leave_no_old_one_behind(
    tmp_path: Path, thawed: None
) -> None:
    no = NextOffer.open(Settings(db_url=f"sqlite:///{tmp_path / 'h.db'}", freeze_heap=True))
    try:
        creds, placement = with_a_placement(no, "HEAP@AdobeOrg")
        cache, schema = no.catalogs, SchemaRef(PLACEMENT, None, "")
        for n in range(400):  # a snapshot big enough that one left behind would show
            extra = {**BANNER, "xdm:name": f"Placement {n}"}
            no.repository.create(creds.principal, creds.container_id, schema, extra)
        settle_heap()
        before = gc.get_freeze_count()
        first = cache.get(creds.container_id)
        assert gc.get_freeze_count() > 0
        assert not any(o is first.catalog for o in gc.get_objects())
        del first
        counts = []
        for n in range(6):  # the same library, rebuilt: what stays frozen must not grow
            rename(no, creds, placement, f"Banner {n % 2}")
            counts.append((cache.get(creds.container_id).version, gc.get_freeze_count()))
        versions = [v for v, _ in counts]
        assert versions == sorted(set(versions))  # six rebuilds happened
        frozen = [c for _, c in counts]
        snapshot_size = frozen[0] - before  # about what one snapshot adds
        assert snapshot_size > 1000
        assert frozen[-1] - frozen[0] < snapshot_size / 2, (snapshot_size, frozen)
    finally:
        no.close()


def test_a_refresh_collects_the_whole_heap_only_once_the_frozen_objects_grew(
    tmp_path: Path, thawed: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    full: list[int] = []

    def counted() -> None:
        full.append(1)
        settle_heap()

    monkeypatch.setattr(catalogs, "settle_heap", counted)
    no = NextOffer.open(Settings(db_url=f"sqlite:///{tmp_path / 'g.db'}", freeze_heap=True))
    try:
        creds, placement = with_a_placement(no, "GROW@AdobeOrg")
        no.catalogs.get(creds.container_id)
        assert full == []  # a first build freezes what it made without a full collection

        def change(n: int) -> None:
            rename(no, creds, placement, f"Banner {n}")

        for n in range(5):  # a refresh freezes a few objects: far from a quarter more
            change(n)
        assert full == []
        monkeypatch.setattr(catalogs, "FROZEN_GROWTH", 1.0)  # any growth is enough now
        change(5)
        assert full == [1]
    finally:
        no.close()


def test_a_first_build_runs_with_rare_young_collections_and_a_refresh_does_not(
    tmp_path: Path, thawed: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []
    build = catalogs.build_catalog

    def watched(*args: object, **kwargs: object) -> object:
        seen.append(gc.get_threshold()[0])
        return build(*args, **kwargs)

    monkeypatch.setattr(catalogs, "build_catalog", watched)
    default = gc.get_threshold()
    no = NextOffer.open(Settings(db_url=f"sqlite:///{tmp_path / 'b.db'}", freeze_heap=True))
    try:
        creds, placement = with_a_placement(no, "BULK@AdobeOrg")
        first = no.catalogs.get(creds.container_id)
        assert gc.get_threshold() == default  # restored once it was built
        assert not any(o is first.catalog for o in gc.get_objects())  # and frozen
        rename(no, creds, placement, "Banner 2")
    finally:
        no.close()
    assert seen == [BULK_GC_THRESHOLD, default[0]]  # the first build, then the refresh


def test_bulk_blocks_on_two_threads_restore_the_thresholds_once_both_end(thawed: None) -> None:
    default = gc.get_threshold()
    inner_entered, outer_may_end = threading.Event(), threading.Event()
    during: list[int] = []

    def other() -> None:
        with bulk_heap():
            inner_entered.set()
            outer_may_end.wait(5)
            during.append(gc.get_threshold()[0])

    with bulk_heap():
        thread = threading.Thread(target=other)
        thread.start()
        assert inner_entered.wait(5)
    # This block ended first: the other thread's still holds the bulk thresholds.
    assert gc.get_threshold()[0] == BULK_GC_THRESHOLD
    outer_may_end.set()
    thread.join(5)
    assert during == [BULK_GC_THRESHOLD]
    assert gc.get_threshold() == default
