"""What the console's forms share when they turn into xcore bodies and back: names,
dates (UTC, the ``datetime-local`` input's form), members set or removed, and the types of
the reference choices and of the rows a repeated group wrote."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from nextoffer.ids import format_datetime, parse_datetime
from nextoffer.repository.objects import ObjectType

#: The choices of reference fields: type → ``[(@id, name, body)]``.
Options = Mapping[ObjectType, list[tuple[str, str, dict[str, Any]]]]
#: Body index → form row, per repeated group (blank rows are not written).
Rows = dict[str, list[int]]


def text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def named(body: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "name": text(body.get("xdm:name", body.get("name"))),
        "description": text(body.get("xdm:description", body.get("description"))),
    }


def put_named(form: Any, body: dict[str, Any]) -> None:
    body.pop("name", None)  # the unprefixed form of an older client: one name only
    # Spaces around a name are typing, not naming: a name of spaces only is then empty,
    # and refused as the API refuses an empty one.
    body["xdm:name"] = (form.name.data or "").strip()
    description = (form.description.data or "").strip()
    body.pop("description", None)
    if description:
        body["xdm:description"] = description
    else:
        body.pop("xdm:description", None)


NAMED_POINTERS = (
    (r"^/(xdm:)?name", "name"),
    (r"^/(xdm:)?description", "description"),
)


def date_in(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_datetime(value).astimezone(UTC).replace(tzinfo=None)
    except ValueError:
        return None


def date_out(value: datetime | None, stored: Any = None) -> str | None:
    """The form's minute as the API's date; ``stored`` as it is when the form shows its
    minute unchanged (the form has no seconds: a save would cut them, and their digits)."""
    if value is None:
        return None
    kept = date_in(stored)
    if kept is not None and kept.replace(second=0, microsecond=0) == value:
        return str(stored)
    return format_datetime(value.replace(tzinfo=UTC))


def put(body: dict[str, Any], key: str, value: Any) -> None:
    if value is None or value == "" or value == []:
        body.pop(key, None)
    else:
        body[key] = value
