"""Offers and fallback offers as forms: representations with their content, tags,
characteristics, dates, who the offer is for (everyone, a decision rule's visitors, or
segments'), priority and caps."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nextoffer.console import bodies, forms
from nextoffer.errors import Unprocessable
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


TYPE = "xdm:profileConstraintType"
SEGMENTS = "xdm:segmentIdentities"
#: The members of each kind of audience: those of another are dropped when it changes.
AUDIENCE_MEMBERS = ("xdm:eligibilityRule", SEGMENTS, "xdm:eligibilityRules")
#: A segment identity's id, in the spellings the engine reads (the first is written).
ID_KEYS = ("_id", "@id", "xdm:id", "id")


def _audience(constraint: Mapping[str, Any]) -> str:
    """The form's audience of a stored constraint: a type the form does not know is shown
    (and kept) as it is. No type but a rule is the rule (docs/decisioning.md)."""
    kind = constraint.get(TYPE)
    if kind is None:
        return (
            "eligibilityRule" if isinstance(constraint.get("xdm:eligibilityRule"), str) else "none"
        )
    if kind in ("anySegments", "allSegments"):
        return "segments"
    return kind if isinstance(kind, str) else "none"


def _namespace(identity: Mapping[str, Any]) -> tuple[str, str, str]:
    """A segment identity's namespace member, its code member, and the code."""
    name = "namespace" if "namespace" in identity and "xdm:namespace" not in identity else None
    name = name or "xdm:namespace"
    held = identity.get(name)
    if not isinstance(held, Mapping):
        return name, "xdm:code", ""
    code = "code" if "code" in held and "xdm:code" not in held else "xdm:code"
    return name, code, bodies.text(held.get(code))


def _segment_data(identity: Mapping[str, Any]) -> dict[str, Any]:
    found = next((identity[k] for k in ID_KEYS if isinstance(identity.get(k), str)), "")
    return {"segment": found, "namespace": _namespace(identity)[2]}


def _stored_segments(constraint: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    found = constraint.get(SEGMENTS)
    return [i for i in found if isinstance(i, Mapping)] if isinstance(found, list) else []


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
        "audience": _audience(constraint),
        "rule": constraint.get("xdm:eligibilityRule", ""),
        "segmentsMatch": constraint.get(TYPE) if _audience(constraint) == "segments" else None,
        "segments": [_segment_data(i) for i in _stored_segments(constraint)]
        + [{"namespace": forms.SEGMENT_NAMESPACE}],
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
        # The placement's channel, on a new representation or over the one stored; one
        # the API left out (it is the placement's anyway) stays out.
        if isinstance(channel, str) and (not previous or "xdm:channel" in previous):
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
    # A new offer has a selection constraint and a rank (XDM requires both); an API's
    # offer without them gains none from the "all visitors" and the 0 the form shows.
    new = "@id" not in body
    segment_rows = _put_audience(form, constraint, new=new)
    if constraint or new or "xdm:selectionConstraint" in body:
        body["xdm:selectionConstraint"] = constraint
    if form.priority.data or "xdm:rank" in body or new:
        body["xdm:rank"] = {**(body.get("xdm:rank") or {}), "xdm:priority": form.priority.data or 0}
    caps = dict(body.get("xdm:cappingConstraint") or {})
    bodies.put(caps, "xdm:globalCap", form.globalCap.data)
    bodies.put(caps, "xdm:profileCap", form.profileCap.data)
    bodies.put(body, "xdm:cappingConstraint", caps or None)
    return body, {**rows, "segments": segment_rows}


def _put_audience(form: Any, constraint: dict[str, Any], *, new: bool) -> list[int]:
    """Who the offer is for, as the form says; the form rows of the segments written.

    The members of the audience the form shows are written; when the audience changed,
    those of the one before are dropped (a rule left behind by "segments" would only
    mislead). Unchanged, a type the API left out stays out (a ``new`` offer has one). A
    rule chosen with "all visitors" is the rule: before the form had an audience,
    choosing a rule was how an offer got one (a page of that console sends none)."""
    stored = _audience(constraint)
    rule = form.rule.data or ""
    chosen = form.audience.data or ""
    if not chosen:  # a page without the audience select: the rule says, segments stay
        chosen = "eligibilityRule" if rule else stored if stored in ("segments", "rules") else ""
        chosen = chosen or "none"
    elif chosen == "none" and rule and rule != constraint.get("xdm:eligibilityRule"):
        chosen = "eligibilityRule"  # (a rule an API's "none" holds as well stays as it is)
    if chosen not in ("none", "eligibilityRule", "segments", stored):
        raise Unprocessable(
            f"{chosen!r} is not an audience of an offer", pointer=f"/xdm:selectionConstraint/{TYPE}"
        )
    kept = _stored_segments(constraint)
    if chosen != stored:
        for key in AUDIENCE_MEMBERS:
            constraint.pop(key, None)
    if chosen == "eligibilityRule":
        if not rule:
            raise Unprocessable(
                "choose the decision rule (or All visitors)",
                pointer="/xdm:selectionConstraint/xdm:eligibilityRule",
            )
        constraint["xdm:eligibilityRule"] = rule
    if chosen == "segments":
        match = form.segmentsMatch.data
        constraint[TYPE] = match if match in ("anySegments", "allSegments") else "anySegments"
        identities, rows = _identities(form, kept if chosen == stored else [])
        if not identities:
            raise Unprocessable(
                "add a segment id (or choose another audience)",
                pointer=f"/xdm:selectionConstraint/{SEGMENTS}",
            )
        constraint[SEGMENTS] = identities
        return rows
    if chosen != stored or constraint.get(TYPE) is not None or new:
        constraint[TYPE] = chosen
    return []


def _identities(
    form: Any, stored: list[Mapping[str, Any]]
) -> tuple[list[dict[str, Any]], list[int]]:
    """The segment rows as ``xdm:segmentIdentities`` (blank and removed rows left out),
    and the form row of each. A row of a stored identity edits it: its other members
    (Adobe's ``xid``) and its own spellings stay."""
    written: list[dict[str, Any]] = []
    rows: list[int] = []
    for index, entry in enumerate(form.segments.entries):
        sub = entry.form
        segment_id = (sub.segment.data or "").strip()
        if sub.remove.data or not segment_id:
            continue
        previous = stored[index] if index < len(stored) else {}
        identity = dict(previous)
        key = next((k for k in ID_KEYS if isinstance(previous.get(k), str)), ID_KEYS[0])
        identity[key] = segment_id
        name, code, held = _namespace(previous)
        namespace = (sub.namespace.data or "").strip()
        if namespace != held:
            if namespace:
                inner = previous.get(name)
                identity[name] = {**(inner if isinstance(inner, Mapping) else {}), code: namespace}
            else:
                identity.pop(name, None)
        written.append(identity)
        rows.append(index)
    return written, rows


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
    (r"^/xdm:selectionConstraint/xdm:profileConstraintType", "audience"),
    (
        r"^/xdm:selectionConstraint/xdm:segmentIdentities/(\d+)/(?:xdm:)?namespace",
        "segments-{0}-namespace",
    ),
    (r"^/xdm:selectionConstraint/xdm:segmentIdentities/(\d+)", "segments-{0}-segment"),
    (r"^/xdm:selectionConstraint/xdm:segmentIdentities", "segments-0-segment"),
    (r"^/xdm:rank", "priority"),
    (r"^/xdm:cappingConstraint/xdm:globalCap", "globalCap"),
    (r"^/xdm:cappingConstraint/xdm:profileCap", "profileCap"),
)
