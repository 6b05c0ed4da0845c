"""An updated instance is indexed as if it had just been written: on SQLite the update
replaces only the rows that changed (``search_index.reindex_instance``), on PostgreSQL all
of them; either way its rows, its FTS5 terms and what every search finds are those of
the new body, never the old one's."""

from __future__ import annotations

from typing import Any

from nextoffer.repository.objects import OM, PERSONALIZED_OFFER, PLACEMENT, TAG, SchemaRef
from nextoffer.repository.query import parse_query
from nextoffer.root import NextOffer
from nextoffer.settings import Settings
from nextoffer.storage.search_index import ROW_BITS, flatten

HTML = OM + "content-component-html"
WEB = "https://ns.adobe.com/xdm/channel-types/web"


def offer(placement: str, name: str, priority: int, tags: list[str], **more: Any) -> dict[str, Any]:
    return {
        "xdm:name": name,
        "xdm:status": "draft",
        "xdm:representations": [
            {
                "xdm:placement": placement,
                "xdm:components": [
                    {"@type": HTML, "dc:format": "text/html", "xdm:content": "<p>hi</p>"}
                ],
            }
        ],
        "xdm:rank": {"xdm:priority": priority},
        "xdm:tags": tags,
        "xdm:selectionConstraint": {
            "xdm:startDate": "2026-01-01T00:00:00Z",
            "xdm:endDate": "2027-01-01T00:00:00Z",
        },
        **more,
    }


def test_an_update_leaves_the_index_of_the_new_body(db_url: str) -> None:
    with NextOffer.open(Settings(db_url=db_url, freeze_heap=False)) as no:
        creds = no.bootstrap(org="REINDEX@AdobeOrg", sandbox="prod")
        principal, container = creds.principal, creds.container_id
        placement = no.repository.create(
            principal,
            container,
            SchemaRef(PLACEMENT, None, ""),
            {"xdm:name": "Banner", "xdm:channel": WEB, "xdm:componentType": HTML},
        ).at_id
        a, b, c = (
            no.repository.create(
                principal, container, SchemaRef(TAG, None, ""), {"xdm:name": name}
            ).at_id
            for name in ("a", "b", "c")
        )
        ref = SchemaRef(PERSONALIZED_OFFER, None, "")
        made = no.repository.create(
            principal, container, ref, offer(placement, "gold savings", 1, [a, b])
        )
        bodies = [
            offer(placement, "gold savings", 7, [a, b]),  # one number
            offer(placement, "platinum travel", 7, [a, b]),  # one string
            offer(placement, "platinum travel", 7, [b, c, c]),  # array, a value twice
            offer(placement, "mortgage", 2, [], **{"xdm:characteristics": {"k": "café"}}),
            offer(placement, "gold savings", 1, [a, b]),  # back where it began
        ]
        for body in bodies:
            record = no.repository.replace(
                principal, container, made.instance_id, ref, body, if_match=None
            )
            with no.store.session() as session:
                conn = session.conn
                rows = conn.exec_driver_sql(
                    "SELECT id, path, vtype, vtext, vnum FROM search_values "
                    f"WHERE instance_id = {'?' if no.store.dialect == 'sqlite' else '%s'}",
                    (made.instance_id,),
                ).all()
                doc = conn.exec_driver_sql(
                    "SELECT doc FROM search_docs "
                    f"WHERE instance_id = {'?' if no.store.dialect == 'sqlite' else '%s'}",
                    (made.instance_id,),
                ).scalar()
                if no.store.dialect == "sqlite":
                    # One FTS5 row per string row, of every instance: none left behind.
                    fts = conn.exec_driver_sql("SELECT count(*) FROM search_fts_docsize")
                    strings = conn.exec_driver_sql(
                        "SELECT count(*) FROM search_values WHERE vtype IN ('s', 'd')"
                    )
                    assert fts.scalar() == strings.scalar()
            assert sorted((p, t, x, n) for _, p, t, x, n in rows) == sorted(flatten(record.body))
            assert {row_id >> ROW_BITS for row_id, *_ in rows} == {doc}
            assert len({row_id for row_id, *_ in rows}) == len(rows)

            def finds(*pairs: tuple[str, str]) -> bool:
                query = parse_query([("schema", PERSONALIZED_OFFER.versioned_schema), *pairs])
                page = no.search.find(principal, container, query)
                return made.at_id in {r.at_id for r in page.records}

            name = body["xdm:name"]
            assert finds(("q", name.split()[0]))
            for word in ("gold", "platinum", "travel", "mortgage", "savings"):
                assert finds(("q", word)) == (word in name.split()), word
            priority = body["xdm:rank"]["xdm:priority"]
            assert finds(("property", f"_instance.xdm:rank.xdm:priority=={priority}"))
            assert not finds(("property", f"_instance.xdm:rank.xdm:priority=={priority + 1}"))
            for tag in (a, b, c):
                assert finds(("property", f"_instance.xdm:tags=={tag}")) == (
                    tag in body["xdm:tags"]
                )
