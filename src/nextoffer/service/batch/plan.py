"""What one batch job decides, as plain picklable data: :class:`JobPlan` is shipped to
local worker processes and to Spark executors, which compile their own snapshot of the
library from it (``catalogs.build_snapshot``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from nextoffer.engine import PropositionRequest
from nextoffer.service.catalogs import LibraryImage


@dataclass(frozen=True, slots=True)
class JobPlan:
    job_id: str
    org: str
    sandbox: str
    container_id: str
    #: The audience's PQL expression (the segment definition's, when the job started).
    segment: str
    propositions: tuple[PropositionRequest, ...]
    include_content: bool
    #: Seeds each profile's tie-breaking generator (with the profile id): the same seed,
    #: library and counters give the same decisions on every engine.
    seed: int
    #: The moment every decision of the job is made at (calendars, caps' periods, PQL now).
    decided_at: datetime
    image: LibraryImage
