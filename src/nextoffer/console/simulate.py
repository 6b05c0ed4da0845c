"""Simulation: what would this profile be offered, and why — a dry run with the explain
trace, through the same decision use case as the API (nothing is recorded or counted)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from wtforms.fields.choices import SelectChoice  # type: ignore[attr-defined]  # new in 3.3; stubs lag

from nextoffer.console import forms, web
from nextoffer.console.session import Visitor, nextoffer
from nextoffer.engine import PropositionRequest, Reason
from nextoffer.errors import NextOfferError
from nextoffer.repository.objects import DECISION, PERSONALIZED_OFFER, PLACEMENT
from nextoffer.service.context_data import parse_context
from nextoffer.service.decisions import DecisionCall

#: What each reason means, in the words a marketer reads in the trace.
EXPLANATIONS: dict[Reason, str] = {
    Reason.NOT_APPROVED: "not approved",
    Reason.NO_REPRESENTATION: "no representation for this placement",
    Reason.INVALID_OFFER: "the offer is broken (see its rule or dates)",
    Reason.NOT_STARTED: "not started yet",
    Reason.EXPIRED: "ended",
    Reason.RULE_FALSE: "its eligibility rule is false for this profile",
    Reason.RULE_ERROR: "its eligibility rule failed",
    Reason.SEGMENT_NOT_MET: "the profile is not in its segment",
    Reason.CONSTRAINT_FALSE: "the decision's rule for this criterion is false",
    Reason.CONSTRAINT_ERROR: "the decision's rule for this criterion failed",
    Reason.CONSTRAINT_SEGMENT_NOT_MET: "the profile is not in the criterion's segments",
    Reason.GLOBAL_CAP_REACHED: "its total cap is reached",
    Reason.PROFILE_CAP_REACHED: "its cap for this profile is reached",
    Reason.FORMULA_ERROR: "the ranking formula failed for it",
    Reason.DUPLICATE: "already proposed in another placement or decision",
    Reason.RANK_CUTOFF: "eligible, but ranked below the offers shown",
    Reason.SELECTED: "selected",
    Reason.NO_ELIGIBLE_OPTION: "no offer was eligible",
    Reason.DECISION_NOT_STARTED: "the decision has not started",
    Reason.DECISION_EXPIRED: "the decision has ended",
    Reason.FALLBACK_MISSING: "the fallback offer is missing",
    Reason.FALLBACK_WITHOUT_REPRESENTATION: "the fallback has no representation here",
}


def _json(text: str | None, what: str) -> Any:
    if not text or not text.strip():
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"{what} is not JSON: {exc}") from exc


async def _page(
    request: Request,
    visitor: Visitor,
    form: Any,
    *,
    result: Any = None,
    names: dict[str, str] | None = None,
    errors: list[str] | None = None,
) -> Response:
    no = nextoffer(request)
    options = await no.run(web.options, request, visitor, {DECISION, PLACEMENT})
    decisions = [SelectChoice(a, n) for a, n, _b in options[DECISION]]
    form.decision.choices = [SelectChoice("", "— choose —"), *decisions]
    form.placements.choices = [SelectChoice(a, n) for a, n, _b in options[PLACEMENT]]
    known = {a: n for object_type in (DECISION, PLACEMENT) for a, n, _b in options[object_type]}
    return web.render(
        request,
        "simulate.html",
        {
            "form": form,
            "result": result,
            "names": {**{a: n for a, n, _b in options[PLACEMENT]}, **(names or {})},
            "errors": [web.by_name(e, known) for e in errors or []],
            "explain": EXPLANATIONS,
        },
        visitor=visitor,
    )


@web.page
async def simulate_page(request: Request, visitor: Visitor) -> Response:
    form = forms.bind(forms.SimulateForm, None, session=visitor.data, secret=web.secret(request))
    return await _page(request, visitor, form)


@web.page
async def simulate(request: Request, visitor: Visitor) -> Response:
    formdata = await request.form()
    form = forms.bind(
        forms.SimulateForm, formdata, session=visitor.data, secret=web.secret(request)
    )
    if not form.validate():
        if "csrf_token" in form.errors:
            return web.refused(request, visitor)
        return await _page(request, visitor, form)
    errors: list[str] = []
    if not form.decision.data:
        form.decision.errors = ["choose a decision"]
    if not form.placements.data:
        form.placements.errors = ["choose at least one placement"]
    try:
        profile = _json(form.profile.data, "the profile")
        context_items = _json(form.context.data, "the context data")
        if profile is not None and not isinstance(profile, dict):
            raise ValueError("the profile must be a JSON object")
        context = parse_context(context_items, "context")
    except (ValueError, NextOfferError) as exc:
        errors.append(str(getattr(exc, "detail", exc)))
    if errors or form.decision.errors or form.placements.errors:
        return await _page(request, visitor, form, errors=errors)
    identities = (
        [(form.namespace.data.strip(), form.identity.data.strip())]
        if form.identity.data and form.namespace.data
        else []
    )
    call = DecisionCall(
        propositions=tuple(
            PropositionRequest(form.decision.data, placement, form.items.data or 1)
            for placement in form.placements.data
        ),
        identities=identities,
        context=context,
        dry_run=True,
        explain=True,
    )
    no = nextoffer(request)
    try:
        outcome = await no.run(
            no.decide, visitor.principal, visitor.container_id, call, profile=profile
        )
    except NextOfferError as exc:
        return await _page(request, visitor, form, errors=[exc.detail])
    offers = await no.run(web.options, request, visitor, {PERSONALIZED_OFFER})
    names = {a: n for a, n, _b in offers[PERSONALIZED_OFFER]}
    return await _page(request, visitor, form, result=outcome.result, names=names)


routes = [
    Route("/simulate", simulate_page, methods=["GET"]),
    Route("/simulate", simulate, methods=["POST"]),
]
