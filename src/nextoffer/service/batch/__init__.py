"""Batch decisioning: an audience's best offers decided in bulk (decisioning-api.md §7).

``jobs.py`` is the use case (submit, read, cancel, claim, run, recover); ``lifecycle.py``
its statuses; ``plan.py`` what a job decides, as data every engine receives; ``chunk.py``
the decisions of a chunk of profiles, on the one decision path; ``local.py`` and
``spark.py`` the engines; ``output.py`` the decision events' columns.
"""
