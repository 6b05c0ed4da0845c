"""A refresh's reads in one statement (``storage/library_read.py``) give what the
session's separate reads give, on SQLite and PostgreSQL; and a snapshot refreshed after
each of several kinds of change (an offer updated, created, deleted, its counting
restarted, a segment definition added) equals one built from scratch."""

from __future__ import annotations

from typing import Any

from nextoffer.ids import utcnow
from nextoffer.repository.objects import OM, PERSONALIZED_OFFER, PLACEMENT, RULE, SchemaRef
from nextoffer.root import NextOffer
from nextoffer.service import catalogs
from nextoffer.service.catalogs import CatalogCache
from nextoffer.settings import Settings
from nextoffer.storage.library_read import LibraryReader

HTML = OM + "content-component-html"
WEB = "https://ns.adobe.com/xdm/channel-types/web"


def offer(placement: str, rule: str, priority: int, start: str, end: str) -> dict[str, Any]:
    return {
        "xdm:name": f"offer {priority}",
        "xdm:status": "approved",
        "xdm:representations": [
            {
                "xdm:placement": placement,
                "xdm:components": [
                    {"@type": HTML, "dc:format": "text/html", "xdm:content": "<p>hi</p>"}
                ],
            }
        ],
        "xdm:rank": {"xdm:priority": priority},
        "xdm:selectionConstraint": {
            "xdm:startDate": start,
            "xdm:endDate": end,
            "xdm:eligibilityRule": rule,
        },
    }


def test_one_statement_reads_what_the_session_reads_and_refreshes_equal_builds(
    db_url: str,
) -> None:
    with NextOffer.open(Settings(db_url=db_url, freeze_heap=False, rule_cache="")) as no:
        creds = no.bootstrap(org="READ@AdobeOrg", sandbox="prod")
        principal, container = creds.principal, creds.container_id
        repo = no.repository
        placement = repo.create(
            principal,
            container,
            SchemaRef(PLACEMENT, None, ""),
            {"xdm:name": "Banner", "xdm:channel": WEB, "xdm:componentType": HTML},
        ).at_id
        condition = {"xdm:type": "PQL", "xdm:format": "pql/text", "xdm:value": "age > 20"}
        rule = repo.create(
            principal,
            container,
            SchemaRef(RULE, None, ""),
            {"xdm:name": "adults", "xdm:condition": condition},
        ).at_id
        ref = SchemaRef(PERSONALIZED_OFFER, None, "")
        window = ("2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z")
        made = [
            repo.create(principal, container, ref, offer(placement, rule, n, *window))
            for n in range(4)
        ]
        cache = CatalogCache(no.store, path=no.path, clock=utcnow, check_interval=0.0)
        reader = LibraryReader(no.store)
        try:
            first = cache.get(container)

            def compare(since: int) -> None:
                state = reader.changes(container, since)
                with no.store.session() as session:
                    version, written = session.changes_since(container, since)
                    epochs = session.cap_epochs(container)
                    segments = session.batch.segment_expressions(principal.org, principal.sandbox)
                assert (state.version, state.cap_epochs, state.segments) == (
                    version,
                    epochs,
                    segments,
                )
                assert sorted(state.written, key=str) == sorted(written, key=str)
                everything = reader.everything(container)
                assert everything.version == version
                assert sorted(a for a, *_ in everything.written) == sorted(
                    r.at_id for r in cache.image(container).instances
                )

            def refreshed_equals_scratch() -> None:
                cache.invalidate(container)  # waited for, as this process's own write
                fresh = cache.get(container)
                assert fresh.version == no.path.library_version(container)
                scratch = catalogs.build_snapshot(cache.image(container), built=fresh.built)
                assert dict(fresh.instances) == dict(scratch.instances)
                assert fresh.cap_epochs == scratch.cap_epochs
                assert sorted(fresh.catalog.segment_rules) == sorted(scratch.catalog.segment_rules)
                for at_id, built in scratch.catalog.offers.items():
                    mine = fresh.catalog.offers[at_id]
                    assert (mine.etag, mine.priority, mine.start, mine.end) == (
                        built.etag,
                        built.priority,
                        built.start,
                        built.end,
                    )
                assert sorted(fresh.catalog.offers) == sorted(scratch.catalog.offers)

            since = first.read_version
            compare(since)
            # An update that restarts counting (the new start is after the old end).
            later = offer(placement, rule, 9, "2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z")
            repo.replace(principal, container, made[0].instance_id, ref, later, if_match=None)
            compare(since)
            refreshed_equals_scratch()
            assert cache.get(container).cap_epochs == {made[0].at_id: 1}
            assert cache.get(container).read_version > since  # refreshed, not rebuilt
            repo.create(principal, container, ref, offer(placement, rule, 5, *window))
            repo.delete(principal, container, made[1].instance_id, if_match=None)
            compare(since)
            refreshed_equals_scratch()
            no.segments.create(
                principal,
                {
                    "name": "adults",
                    "expression": {"type": "PQL", "format": "pql/text", "value": "age > 18"},
                },
            )
            compare(since)
            compare(cache.get(container).read_version)
            refreshed_equals_scratch()
            assert list(cache.get(container).catalog.segment_rules)
            assert reader.changes("no-such-container", 0).version == 0
        finally:
            reader.close()
            cache.close()
