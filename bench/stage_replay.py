"""One stage of a recorded decision replayed instead of run: what it costs, by subtraction.

``bench/asgi_decide.py --stages`` runs children with one stage of the decision path
wrapped: during the warm-up the stage runs for real and its answers are kept; during the
measured requests the kept answers are handed back in turn (a list index instead of the
work; a replayed profile is another request's, so profiles stay distinct). The child's
CPU per decision without the stage, subtracted from the full path's in the same run, is
what the stage costs where it runs — on the event loop, among the other 49 tasks —
rather than in a loop of its own. The stages around the replayed one do the work they do
on the real path (the answers are other requests' real ones).

This is measurement scaffolding for the benchmark only: nothing in ``src/`` knows of it.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

#: Stage name -> what it replaces (module attribute), as ``docs/benchmarks.md`` names them.
STAGES = {
    "decide use case": "NextOffer.decide_async: profile read, engine, cap plan, record",
    "engine": "engine.decide, as attempt.py calls it",
    "profile read": "SqlitePath.profile (one indexed SQLite read)",
    "record": "SqlitePath.record (reserve + event, group-committed, and the fold after)",
    "record's write": "the same, but the answer still awaits the next loop pass",
    "body parse": "decision_request.parse (the checks after orjson.loads; the identity still read)",
    "response": "decision_response.response (the response body's dicts)",
}


def install(stage: str) -> Callable[[], None]:
    """Wrap ``stage``; returns the switch from recording to replaying."""
    replaying = False

    def start() -> None:
        nonlocal replaying
        replaying = True

    def recorded(real: Callable[..., Any]) -> Callable[..., Any]:
        kept: list[Any] = []
        turn = itertools.count()

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if replaying and kept:
                return kept[next(turn) % len(kept)]
            value = real(*args, **kwargs)
            kept.append(value)
            return value

        return wrapper

    if stage == "decide use case":
        from nextoffer.root import NextOffer

        real_decide = NextOffer.decide_async
        outcomes: list[Any] = []
        turn = itertools.count()

        async def decide_async(self: NextOffer, principal: Any, container: str, call: Any) -> Any:
            if replaying and outcomes:
                return outcomes[next(turn) % len(outcomes)]
            outcome = await real_decide(self, principal, container, call)
            outcomes.append(outcome)
            return outcome

        NextOffer.decide_async = decide_async  # type: ignore[method-assign]
    elif stage == "engine":
        from nextoffer.service import attempt

        attempt.engine_decide = recorded(attempt.engine_decide)  # type: ignore[assignment]
    elif stage == "profile read":
        from nextoffer.storage.sqlite_path import SqlitePath

        SqlitePath.profile = recorded(SqlitePath.profile)  # type: ignore[method-assign]
    elif stage in ("record", "record's write"):
        from nextoffer.storage.sqlite_path import SqlitePath

        real_record = SqlitePath.record
        suspend = stage == "record's write"

        def record(self: SqlitePath, item: Any) -> Any:
            if not replaying:
                return real_record(self, item)
            loop = asyncio.get_running_loop()
            future: asyncio.Future[list[Any]] = loop.create_future()
            # Reserved and written, as every benchmark record is: at once, or (the
            # write alone replayed) on the loop's next pass, as a batch answers.
            if suspend:
                loop.call_soon(future.set_result, [])
            else:
                future.set_result([])
            return future

        SqlitePath.record = record  # type: ignore[method-assign,assignment]
    elif stage == "body parse":
        import dataclasses

        from nextoffer.api import decision_request
        from nextoffer.service.identities import parse_identity_map

        kept_parse = recorded(decision_request.parse)

        def parse(body: Any) -> Any:
            call, fmt = kept_parse(body)
            if not replaying:
                return call, fmt
            # The request's own identity, not the warm-up's: a kept identity would be read
            # from the profile cache, and the stages after the parse would cost less.
            mapping = body["xdm:profiles"][0]["xdm:identityMap"]
            identities = parse_identity_map(mapping, pointer="")
            return dataclasses.replace(call, identities=identities), fmt

        decision_request.parse = parse
    elif stage == "response":
        from nextoffer.api import decision_response

        decision_response.response = recorded(decision_response.response)
    else:
        raise SystemExit(f"unknown stage {stage!r}; one of {sorted(STAGES)}")
    return start
