"""The console's forms (WTForms): fields, CSRF, and the values shown again after an error.

Every form derives from :class:`ConsoleForm`, whose CSRF token is an HMAC of the session's
``csrf`` value (WTForms' ``SessionCSRF``) with the server's console secret: a form posted
from another site, or without the token, is refused before anything is read from it.
Validation of the *object* is not done here: the form is turned into the xcore body and
the repository validates it exactly as for the API (``kinds.py`` maps its 422 pointers
back to these fields).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import wtforms
from wtforms import (
    BooleanField,
    FieldList,
    Form,
    FormField,
    HiddenField,
    IntegerField,
    PasswordField,
    SelectField,
    SelectMultipleField,
    StringField,
)
from wtforms.csrf.session import SessionCSRF
from wtforms.fields.choices import SelectChoice  # type: ignore[attr-defined]  # new in 3.3; stubs lag
from wtforms.utils import unset_value
from wtforms.validators import DataRequired, NumberRange, Optional

CHANNELS = [
    SelectChoice("https://ns.adobe.com/xdm/channel-types/web", "Web"),
    SelectChoice("https://ns.adobe.com/xdm/channel-types/mobile", "Mobile"),
    SelectChoice("https://ns.adobe.com/xdm/channel-types/email", "Email"),
    SelectChoice("https://ns.adobe.com/xdm/channel-types/messaging", "Messaging"),
    SelectChoice("https://ns.adobe.com/xdm/channel-types/offline", "Offline"),
]
COMPONENT = "https://ns.adobe.com/experience/offer-management/content-component-"
COMPONENT_TYPES = [
    SelectChoice(COMPONENT + "html", "HTML"),
    SelectChoice(COMPONENT + "imagelink", "Image"),
    SelectChoice(COMPONENT + "text", "Text"),
    SelectChoice(COMPONENT + "json", "JSON"),
]
#: Every status the API's schemas allow: a form that lacked one showed an offer the API
#: made ``pending`` as a draft, and saving it wrote ``draft``.
OFFER_STATUSES = [
    SelectChoice("draft", "Draft"),
    SelectChoice("pending", "Pending"),
    SelectChoice("approved", "Approved"),
    SelectChoice("rejected", "Rejected"),
    SelectChoice("archived", "Archived"),
]
DECISION_STATUSES = [
    SelectChoice("draft", "Draft"),
    SelectChoice("live", "Live"),
    SelectChoice("complete", "Complete"),
    SelectChoice("archived", "Archived"),
]
STRATEGY_TYPES = [
    SelectChoice("auto-optimization", "Auto-optimization (one model for everyone)"),
    SelectChoice("personalized-optimization", "Personalized optimization (a model over features)"),
]
FILTER_TYPES = [
    SelectChoice("anyTags", "Offers with any of these tags"),
    SelectChoice("allTags", "Offers with all of these tags"),
    SelectChoice("offers", "These offers"),
]
#: Who an offer is for (``xdm:selectionConstraint``): the form's choices. Segments are
#: ``anySegments`` or ``allSegments`` by :data:`SEGMENT_MATCHES`.
AUDIENCES = [
    SelectChoice("none", "All visitors"),
    SelectChoice("eligibilityRule", "Visitors a decision rule admits"),
    SelectChoice("segments", "Visitors in segments"),
]
#: nextoffer's own type of several rules (docs/decisioning.md), which only the API sets:
#: offered on the form of an offer that has it, kept as it is.
RULES_AUDIENCE = SelectChoice(
    "rules", "Visitors several decision rules admit (set through the API)"
)
SEGMENT_MATCHES = [
    SelectChoice("anySegments", "Any of them"),
    SelectChoice("allSegments", "All of them"),
]
#: The identity namespace of Adobe Experience Platform's own segments.
SEGMENT_NAMESPACE = "ups"
#: The largest whole number a form takes (a database's signed 64 bits): a priority of 23
#: nines reached the store, which could not write it (a 500).
MAX_INT = 2**63 - 1
#: The ``datetime-local`` input's format (no zone: the console reads and writes UTC).
DATETIME = "%Y-%m-%dT%H:%M"


class TextAreaField(wtforms.TextAreaField):
    """A textarea whose lines end as typed: a browser sends every line break of one as
    CRLF (HTML's form encoding), so a rule written on two lines was stored with a ``\r``
    the marketer never typed, and an unchanged one changed on every save."""

    def process_formdata(self, valuelist: list[Any]) -> None:
        super().process_formdata(valuelist)
        if isinstance(self.data, str):
            self.data = self.data.replace("\r\n", "\n")


class UtcMinuteField(wtforms.DateTimeLocalField):
    """A ``datetime-local`` input whose value has the four-digit year the input requires:
    ``strftime`` writes year 1 as ``1-01-01``, which the browser shows as empty, and the
    next save dropped the date."""

    def _value(self) -> str:
        if self.raw_data or self.data is None:
            return str(super()._value())  # type: ignore[misc]  # _value: not in the stubs
        d = self.data
        return f"{d.year:04d}-{d.month:02d}-{d.day:02d}T{d.hour:02d}:{d.minute:02d}"


class ConsoleForm(Form):
    class Meta:
        csrf = True
        csrf_class = SessionCSRF
        #: A form stays usable for as long as a default token lives; the session's end
        #: (the token's) ends it anyway.
        csrf_time_limit = timedelta(hours=24)


def bind(
    cls: type[ConsoleForm],
    formdata: Any,
    *,
    session: dict[str, Any],
    secret: bytes,
    data: dict[str, Any] | None = None,
) -> Any:
    """``cls`` bound to posted ``formdata`` (or to ``data`` for a fresh page)."""
    meta = {"csrf_context": session, "csrf_secret": secret}
    return cls(formdata=formdata, data=data, meta=meta)


class CsrfOnly(ConsoleForm):
    """Buttons that post nothing else (delete, status, revert, sign out)."""


class LoginForm(ConsoleForm):
    org = StringField("Organization", [DataRequired()], description="e.g. ACME@AdobeOrg")
    sandbox = StringField("Sandbox", [DataRequired()], default="prod")
    apiKey = StringField("API key", [DataRequired()])
    accessToken = PasswordField("Access token", [DataRequired()])


# The library's forms carry no "required" validators of their own: the repository checks
# the body they make, so the console shows the API's own messages beside the fields.
class _Named(ConsoleForm):
    name = StringField("Name")
    description = TextAreaField("Description", [Optional()])
    etag = HiddenField()
    #: A new object's original when it is a duplicate: its members the form does not
    #: show (caps, a second component, xdm:definedOn) are copied too.
    copy_of = HiddenField()
    #: A new-object form's own random value: sent twice, it creates once.
    once = HiddenField()


class PlacementForm(_Named):
    channel = SelectField("Channel", choices=CHANNELS)
    componentType = SelectField("Content type", choices=COMPONENT_TYPES)


class TagForm(_Named):
    pass


class RuleForm(_Named):
    condition = TextAreaField("Condition (PQL)")


class RankingForm(_Named):
    expression = TextAreaField("Formula (PQL)")


class RankingStrategyForm(_Named):
    """An AI ranking strategy. The rate is a text field so that the repository, not the
    form, judges it: the console shows the API's own 422 message beside it."""

    strategyType = SelectField("Strategy", choices=STRATEGY_TYPES)
    optimizationGoal = StringField(
        "Optimization goal", default="clicks", description="clicks, or an event type"
    )
    features = TextAreaField(
        "Features", [Optional()], description="personalized only: one PQL feature per line"
    )
    explorationRate = StringField(
        "Exploration rate", [Optional()], description="personalized only: 0 to 1 (0.1 if empty)"
    )


class CollectionForm(_Named):
    filterType = SelectField("Offers in the collection", choices=FILTER_TYPES)
    tags = SelectMultipleField("Tags", choices=[], validate_choice=False)
    offers = SelectMultipleField("Offers", choices=[], validate_choice=False)


class RepresentationForm(Form):
    """One representation: a placement and its content (the first component)."""

    placement = SelectField("Placement", choices=[], validate_choice=False)
    kind = SelectField(
        "Content",
        choices=[
            SelectChoice("html", "HTML"),
            SelectChoice("text", "Text"),
            SelectChoice("json", "JSON"),
            SelectChoice("image", "Image URL"),
        ],
    )
    content = TextAreaField("Content or URL")
    link = StringField("Link URL", [Optional()])
    language = StringField("Language", [Optional()], default="en-us")
    remove = BooleanField("Remove this representation when saving")


class AudienceField(SelectField):
    """:data:`AUDIENCES`, and :data:`RULES_AUDIENCE` for an offer that holds it. Any value
    is taken (``offer_bodies`` judges it): a page of an older console sent none."""

    def __init__(self, label: str, **kwargs: Any) -> None:
        super().__init__(label, choices=list(AUDIENCES), validate_choice=False, **kwargs)

    def process(self, formdata: Any, data: Any = unset_value, extra_filters: Any = None) -> None:
        super().process(formdata, data, extra_filters)
        if self.data == RULES_AUDIENCE.value:
            self.choices = [*AUDIENCES, RULES_AUDIENCE]


class SegmentForm(Form):
    """One segment of an offer's audience: its id, and the namespace of its identity."""

    segment = StringField("Segment id")
    namespace = StringField(
        "Segment namespace",
        [Optional()],
        default=SEGMENT_NAMESPACE,
        description="ups for Experience Platform's segments; empty: any namespace",
    )
    remove = BooleanField("Remove this segment when saving")


class _Offer(_Named):
    status = SelectField("Status", choices=OFFER_STATUSES)
    tags = SelectMultipleField("Tags", choices=[], validate_choice=False)
    characteristics = TextAreaField(
        "Characteristics", [Optional()], description="one key=value per line"
    )
    representations = FieldList(FormField(RepresentationForm), min_entries=1)


class FallbackOfferForm(_Offer):
    pass


class OfferForm(_Offer):
    startDate = UtcMinuteField("Starts (UTC)", [Optional()], format=DATETIME)
    endDate = UtcMinuteField("Ends (UTC)", [Optional()], format=DATETIME)
    audience = AudienceField("Eligible visitors")
    rule = SelectField("Eligibility rule", choices=[], validate_choice=False)
    segmentsMatch = SelectField(
        "Visitors must be in", choices=SEGMENT_MATCHES, validate_choice=False
    )
    segments = FieldList(FormField(SegmentForm), min_entries=1)
    priority = IntegerField("Priority", [Optional(), NumberRange(min=0, max=MAX_INT)], default=0)
    globalCap = IntegerField("Total cap", [Optional(), NumberRange(min=1, max=MAX_INT)])
    profileCap = IntegerField("Cap per profile", [Optional(), NumberRange(min=1, max=MAX_INT)])


class CriterionForm(Form):
    """One evaluation criterion of a decision: placements, a collection, a rule, ranking."""

    placements = SelectMultipleField("Placements", choices=[], validate_choice=False)
    collection = SelectField("Collection", choices=[], validate_choice=False)
    rule = SelectField("Eligibility rule", choices=[], validate_choice=False)
    formula = SelectField("Ranking", choices=[], validate_choice=False)
    priority = IntegerField(
        "Priority",
        [Optional(), NumberRange(min=0, max=MAX_INT)],
        description="criteria of one priority are one group; the highest group is tried "
        "first, lower ones fill what it leaves (0 if empty)",
    )
    remove = BooleanField("Remove this criterion when saving")


class DecisionForm(_Named):
    status = SelectField("Status", choices=DECISION_STATUSES)
    startDate = UtcMinuteField("Starts (UTC)", [Optional()], format=DATETIME)
    endDate = UtcMinuteField("Ends (UTC)", [Optional()], format=DATETIME)
    fallback = SelectField("Fallback offer", choices=[], validate_choice=False)
    criteria = FieldList(FormField(CriterionForm), min_entries=1)


class SimulateForm(ConsoleForm):
    decision = SelectField("Decision", choices=[], validate_choice=False)
    placements = SelectMultipleField("Placements", choices=[], validate_choice=False)
    items = IntegerField("Offers per placement", [NumberRange(min=1, max=30)], default=1)
    namespace = StringField("Identity namespace", [Optional()], default="ECID")
    identity = StringField("Identity", [Optional()])
    profile = TextAreaField(
        "Profile (JSON)", [Optional()], description="replaces the stored profile when given"
    )
    context = TextAreaField(
        "Context data (JSON)", [Optional()], description='[{"@type": …, "xdm:data": {…}}]'
    )
