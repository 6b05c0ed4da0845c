"""A batch job's lifecycle (decisioning-api.md §7) and its guardrails.

``QUEUED → PROCESSING → INGESTING → COMPLETED | ERROR``: queued until its dataset has
fewer than :data:`MAX_RUNNING` jobs running; processing while profiles are decided;
ingesting while its files are published into the dataset; then done. Cancelling (``DELETE``)
and a runner that died end in ``ERROR`` with the reason in ``ode:statusDetail``.
"""

from __future__ import annotations

QUEUED = "QUEUED"
PROCESSING = "PROCESSING"
INGESTING = "INGESTING"
COMPLETED = "COMPLETED"
ERROR = "ERROR"

#: Jobs that hold a runner (and count toward the dataset's limit).
RUNNING = (PROCESSING, INGESTING)
#: Jobs that are not finished.
OPEN = (QUEUED, PROCESSING, INGESTING)
#: Running jobs per output dataset at most; others wait QUEUED (as Adobe documents).
MAX_RUNNING = 5
#: The batch engines.
ENGINES = ("local", "spark")
