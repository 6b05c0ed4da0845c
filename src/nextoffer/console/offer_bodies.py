"""Offers and fallback offers as forms: representations with their content, tags,
characteristics, dates, the eligibility rule, priority and caps."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nextoffer.console import bodies, forms
from nextoffer.repository.objects import PLACEMENT

_FORMATS = {"html": "text/html", "text": "text/plain", "json": "application/json"}


def _representation_data(rep: Mapping[str, Any]) -> dict[str, Any]:
    components = rep.get("xdm:components") or []
    first: Mapping[str, Any] = components[0] if components else {}
    fmt = bodies.text(first.get("dc:format"))
    url = first.get("xdm:deliveryURL")
    kind = "image" if isinstance(url, str) and not first.get("xdm:content") else "html"
    for name, mime in _FORMATS.items():
        if fmt == mime:
            kind = name
    languages = first.get("dc:language") or []
    return {
        "placement": rep.get("xdm:placement"),
        "kind": kind,
        "content": bodies.text(url if kind == "image" else first.get("xdm:content")),
        "link": bodies.text(first.get("xdm:linkURL")),
        "language": languages[0] if languages else "",
    }


def _characteristics_text(value: Any) -> str:
    if not isinstance(value, Mapping):
        return ""
    return "\n".join(f"{k}={v}" for k, v in value.items())


def offer_data(body: Mapping[str, Any]) -> dict[str, Any]:
    constraint = body.get("xdm:selectionConstraint") or {}
    caps = body.get("xdm:cappingConstraint") or {}
    reps = [r for r in body.get("xdm:representations") or [] if isinstance(r, Mapping)]
    return {
        **bodies.named(body),
        "status": body.get("xdm:status", "draft"),
        "tags": [t for t in body.get("xdm:tags") or [] if isinstance(t, str)],
        "characteristics": _characteristics_text(body.get("xdm:characteristics")),
        "representations": [_representation_data(r) for r in reps] + [{"language": "en-us"}],
        "startDate": bodies.date_in(constraint.get("xdm:startDate")),
        "endDate": bodies.date_in(constraint.get("xdm:endDate")),
        "rule": constraint.get("xdm:eligibilityRule", ""),
        "priority": (body.get("xdm:rank") or {}).get("xdm:priority", 0),
        "globalCap": caps.get("xdm:globalCap"),
        "profileCap": caps.get("xdm:profileCap"),
    }


def _parse_characteristics(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if key.strip():
            out[key.strip()] = value.strip() if sep else ""
    return out


def _component(sub: Any, stored: Mapping[str, Any], kind: str, content: str) -> dict[str, Any]:
    """The first component as the row says, over the stored one when the row keeps its
    kind: members the form does not show (``repo:name``, ``xdm:copyline``,
    ``repo:resolveURL``, a second language) are kept, as they are everywhere else."""
    same = bool(stored) and _representation_data({"xdm:components": [stored]})["kind"] == kind
    component: dict[str, Any] = dict(stored) if same else {}
    if kind == "image":
        component["xdm:deliveryURL"] = content.strip()
    else:
        component["xdm:content"] = content
        component["dc:format"] = _FORMATS.get(kind, "text/html")
    bodies.put(component, "xdm:linkURL", (sub.link.data or "").strip() or None)
    language = (sub.language.data or "").strip()
    languages = [v for v in component.get("dc:language") or [] if isinstance(v, str)]
    if not language:
        component.pop("dc:language", None)
    elif not languages or languages[0] != language:
        component["dc:language"] = [language, *languages[1:]]
    return component


def _representations(form: Any, body: dict[str, Any], options: bodies.Options) -> bodies.Rows:
    placements = {at_id: b for at_id, _n, b in options.get(PLACEMENT, [])}
    old = {
        r.get("xdm:placement"): r
        for r in body.get("xdm:representations") or []
        if isinstance(r, Mapping)
    }
    written: list[dict[str, Any]] = []
    rows: list[int] = []
    for index, entry in enumerate(form.representations.entries):
        sub = entry.form
        placement = sub.placement.data or ""
        content = sub.content.data or ""
        if sub.remove.data or (not placement and not content.strip()):
            continue  # removed, or the blank row for a new representation
        target = placements.get(placement, {})
        previous = old.get(placement) or {}
        kept = [c for c in previous.get("xdm:components") or [] if isinstance(c, Mapping)]
        kind = sub.kind.data
        component = _component(sub, kept[0] if kept else {}, kind, content)
        component["@type"] = target.get("xdm:componentType", forms.COMPONENT + "html")
        rep: dict[str, Any] = {
            **previous,
            "xdm:placement": placement,
            # The form edits the first component; the others (a language's variant) stay.
            "xdm:components": [component, *kept[1:]],
        }
        channel = target.get("xdm:channel")
        if isinstance(channel, str):
            rep["xdm:channel"] = channel
        written.append(rep)
        rows.append(index)
    body["xdm:representations"] = written
    return {"representations": rows}


def _offer_common(form: Any, body: dict[str, Any], options: bodies.Options) -> bodies.Rows:
    bodies.put_named(form, body)
    body["xdm:status"] = form.status.data
    bodies.put(body, "xdm:tags", list(form.tags.data or []))
    text = form.characteristics.data or ""
    stored = body.get("xdm:characteristics")
    # Unchanged text keeps what it shows: a key holding "=" or a value holding a line
    # break reads back otherwise ("b=c": "x" would become "b": "c=x").
    shown = _characteristics_text(stored).strip()
    if stored is None or text.replace("\r\n", "\n").strip() != shown:
        bodies.put(body, "xdm:characteristics", _parse_characteristics(text) or None)
    return _representations(form, body, options)


def fallback_body(
    form: Any, body: dict[str, Any], options: bodies.Options
) -> tuple[dict[str, Any], bodies.Rows]:
    return body, _offer_common(form, body, options)


def offer_body(
    form: Any, body: dict[str, Any], options: bodies.Options
) -> tuple[dict[str, Any], bodies.Rows]:
    rows = _offer_common(form, body, options)
    constraint = dict(body.get("xdm:selectionConstraint") or {})
    for name in ("startDate", "endDate"):
        key = f"xdm:{name}"
        bodies.put(constraint, key, bodies.date_out(getattr(form, name).data, constraint.get(key)))
    if form.rule.data:
        constraint["xdm:profileConstraintType"] = "eligibilityRule"
        constraint["xdm:eligibilityRule"] = form.rule.data
    else:
        constraint.pop("xdm:eligibilityRule", None)
        if constraint.get("xdm:profileConstraintType") == "eligibilityRule":
            constraint["xdm:profileConstraintType"] = "none"
        constraint.setdefault("xdm:profileConstraintType", "none")
    body["xdm:selectionConstraint"] = constraint
    body["xdm:rank"] = {**(body.get("xdm:rank") or {}), "xdm:priority": form.priority.data or 0}
    caps = dict(body.get("xdm:cappingConstraint") or {})
    bodies.put(caps, "xdm:globalCap", form.globalCap.data)
    bodies.put(caps, "xdm:profileCap", form.profileCap.data)
    bodies.put(body, "xdm:cappingConstraint", caps or None)
    return body, rows


POINTERS = (
    *bodies.NAMED_POINTERS,
    (r"^/xdm:status", "status"),
    (r"^/xdm:tags", "tags"),
    (r"^/xdm:characteristics", "characteristics"),
    (r"^/xdm:representations/(\d+)/xdm:placement", "representations-{0}-placement"),
    (r"^/xdm:representations/(\d+)/xdm:components/\d+/dc:language", "representations-{0}-language"),
    (r"^/xdm:representations/(\d+)/xdm:components/\d+/xdm:linkURL", "representations-{0}-link"),
    (r"^/xdm:representations/(\d+)", "representations-{0}-content"),
    (r"^/xdm:selectionConstraint/xdm:startDate", "startDate"),
    (r"^/xdm:selectionConstraint/xdm:endDate", "endDate"),
    (r"^/xdm:selectionConstraint/xdm:eligibilityRule", "rule"),
    (r"^/xdm:rank", "priority"),
    (r"^/xdm:cappingConstraint/xdm:globalCap", "globalCap"),
    (r"^/xdm:cappingConstraint/xdm:profileCap", "profileCap"),
)
