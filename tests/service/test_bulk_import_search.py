"""A library written by ``Repository.create_many`` (``nextoffer import library``) is found
by every search exactly as the same library created one instance at a time — and stays so
after updates and deletes — on SQLite and PostgreSQL.

The bulk path writes the search index a batch at a time (``storage/search_index.py``: one
statement for the rows, one for their FTS5 rows on SQLite), the one-by-one path an
instance at a time; both must leave the same index behind.
"""

from __future__ import annotations

from typing import Any

from nextoffer.ids import IdFactory, utcnow
from nextoffer.repository import references
from nextoffer.repository.objects import (
    OM,
    PERSONALIZED_OFFER,
    PLACEMENT,
    RULE,
    TAG,
    ObjectType,
    SchemaRef,
)
from nextoffer.repository.query import parse_query
from nextoffer.root import NextOffer
from nextoffer.service.auth import Principal
from nextoffer.settings import Settings

HTML = OM + "content-component-html"
WEB = "https://ns.adobe.com/xdm/channel-types/web"
WORDS = ("gold", "platinum", "mortgage", "Café", "savings", "travel")


def library() -> list[tuple[ObjectType, dict[str, Any]]]:
    """A placement, two tags, 40 rules and 40 offers with words, numbers, dates, booleans,
    arrays (one holding a value twice) and nested objects."""
    ids = IdFactory(worker=3)
    items: list[tuple[ObjectType, dict[str, Any]]] = []

    def add(kind: ObjectType, body: dict[str, Any]) -> str:
        at_id = ids.at_id(kind.name, utcnow())
        items.append((kind, {**body, "@id": at_id}))
        return at_id

    placement = add(
        PLACEMENT, {"xdm:name": "Banner", "xdm:channel": WEB, "xdm:componentType": HTML}
    )
    tags = [add(TAG, {"xdm:name": name}) for name in ("gold tier", "travel perks")]
    for n in range(40):
        source = f'age >= {n} and tier = "{WORDS[n % len(WORDS)]}"'
        rule = add(
            RULE,
            {
                "xdm:name": f"rule {n} {WORDS[n % 3]}",
                "xdm:condition": {"xdm:type": "PQL", "xdm:format": "pql/text", "xdm:value": source},
            },
        )
        body: dict[str, Any] = {
            "xdm:name": f"{WORDS[n % len(WORDS)]} offer {n} {WORDS[(n * 7) % len(WORDS)]}",
            "xdm:status": "approved" if n % 4 else "draft",
            "xdm:startDate": f"2026-0{1 + n % 9}-15T10:00:00Z",
            "xdm:representations": [
                {
                    "xdm:placement": placement,
                    "xdm:components": [
                        {
                            "@type": HTML,
                            "dc:format": "text/html",
                            "xdm:content": f"<p>{WORDS[n % 5]} rate {n}.5%</p>",
                        }
                    ],
                }
            ],
            "xdm:rank": {"xdm:priority": n % 7},
            "xdm:selectionConstraint": {"xdm:eligibilityRule": rule},
            "xdm:tags": [tags[n % 2], tags[n % 2]] if n % 5 == 0 else tags[: 1 + n % 2],
            "xdm:characteristics": {"segment": WORDS[(n + 1) % len(WORDS)], "vip": str(n % 2)},
        }
        add(PERSONALIZED_OFFER, body)
    return items


QUERIES = [
    [("q", "gold")],
    [("q", "platinum mortgage"), ("qop", "AND")],
    [("q", "gold mortgage")],
    [("q", "cafe")],
    [("q", "sav*")],
    [("q", '"offer 1"')],
    [("q", "rate"), ("field", "_instance.xdm:representations")],
    [("q", "travel"), ("field", "_instance.xdm:name")],
    [("property", "_instance.xdm:rank.xdm:priority>=3")],
    [
        ("property", "_instance.xdm:rank.xdm:priority==2"),
        ("property", "_instance.xdm:status==approved"),
    ],
    [("property", "_instance.xdm:startDate>2026-05-01T00:00:00Z")],
    [("property", "_instance.xdm:characteristics.segment~gold|travel")],
    [("property", "_instance.xdm:tags")],
    [("name", "gold offer*")],
]


def found(no: NextOffer, principal: Principal, container: str, kind: ObjectType) -> list[list[str]]:
    """The @ids each query of :data:`QUERIES` finds, in its order (by @id)."""
    schema = kind.versioned_schema
    answers = []
    for pairs in QUERIES:
        query = parse_query([("schema", schema), ("limit", "100"), *pairs])
        page = no.search.find(principal, container, query)
        answers.append(sorted(record.at_id for record in page.records))
    return answers


def test_searches_after_a_bulk_import_equal_those_after_one_by_one_creates(db_url: str) -> None:
    items = library()
    with NextOffer.open(Settings(db_url=db_url, freeze_heap=False)) as no:
        bulk = no.bootstrap(org="BULK@AdobeOrg", sandbox="prod")
        single = no.bootstrap(org="ONE@AdobeOrg", sandbox="prod")
        no.repository.create_many(bulk.principal, bulk.container_id, items, keep_ids=True)
        # One at a time, in file order (references point backwards); each gets a new @id,
        # and the references of the later ones are rewritten to it.
        renamed: dict[str, str] = {}
        for kind, body in items:
            content = references.rewrite({k: v for k, v in body.items() if k != "@id"}, renamed)
            ref = SchemaRef(kind, None, "")
            made = no.repository.create(single.principal, single.container_id, ref, content)
            renamed[body["@id"]] = made.at_id
        back = {new: old for old, new in renamed.items()}
        sides = [(bulk.principal, bulk.container_id), (single.principal, single.container_id)]

        def answers() -> dict[str, list[list[str]]]:
            by_side = {}
            for (principal, container), label in zip(sides, ("bulk", "single"), strict=True):
                lists = found(no, principal, container, PERSONALIZED_OFFER)
                lists += found(no, principal, container, RULE)
                # the one-by-one side's @ids, named as in the file
                by_side[label] = [sorted(back.get(a, a) for a in ids) for ids in lists]
            return by_side

        first = answers()
        assert first["bulk"] == first["single"]
        # The queries do find things (else the comparison would prove little).
        assert all(first["bulk"][i] for i in range(len(QUERIES)))

        # Updates and deletes afterwards leave both indexes alike too: each side's FTS5 rows
        # are forgotten and rewritten whichever way they were first written.
        offers = [(kind, body) for kind, body in items if kind is PERSONALIZED_OFFER]
        for principal, container in sides:
            records = {back.get(r.at_id, r.at_id): r for r in _instances(no, container)}
            for _, body in offers[:6]:
                record = records[body["@id"]]
                changed = {**record.body, "xdm:name": f"renamed {record.body['xdm:name']} mortgage"}
                no.repository.replace(
                    principal, container, record.instance_id, None, changed, if_match=record.etag
                )
            for _, body in offers[6:9]:
                no.repository.delete(
                    principal, container, records[body["@id"]].instance_id, if_match=None
                )
        second = answers()
        assert second["bulk"] == second["single"]
        assert second != first
        if no.store.dialect == "sqlite":
            # One FTS5 row per string row: none left behind by an update or a delete.
            with no.store.session() as session:
                fts = session.conn.exec_driver_sql("SELECT count(*) FROM search_fts_docsize")
                strings = session.conn.exec_driver_sql(
                    "SELECT count(*) FROM search_values WHERE vtype IN ('s', 'd')"
                )
                assert fts.scalar() == strings.scalar()


def _instances(no: NextOffer, container: str) -> list[Any]:
    with no.store.session() as session:
        return list(session.all_instances(container))
