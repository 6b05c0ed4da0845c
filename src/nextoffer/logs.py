"""Log lines an outage would repeat for every request, said once in a while.

While the database is away every decision logs that its record was not written: at a
thousand decisions a second that is a thousand lines a second, enough to fill a disk
before the outage ends and to bury every other line. :class:`Throttled` writes the first
at once, then at most one every ``seconds``, each saying how many like it it stood for;
:func:`withheld` is the line for what an error answered to a client leaves out.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from nextoffer.errors import NextOfferError


class Throttled:
    """One kind of error line of ``logger``, written at most every ``seconds``."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._seconds = seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._next: float | None = None
        self._held = 0

    def error(self, message: str, *args: Any) -> None:
        """``logger.error(message, *args)``, unless one was written less than ``seconds``
        ago: then it is only counted, and the next line written says how many were."""
        self._log(logging.ERROR, message, args)

    def warning(self, message: str, *args: Any) -> None:
        """As :meth:`error`, at ``WARNING``: a store's failure that a client is told of
        (``service/locations.py``)."""
        self._log(logging.WARNING, message, args)

    def _log(self, level: int, message: str, args: tuple[Any, ...]) -> None:
        with self._lock:
            now = self._clock()
            if self._next is not None and now < self._next:
                self._held += 1
                return
            held, self._held = self._held, 0
            self._next = now + self._seconds
        if held:
            self._logger.log(
                level,
                f"{message} (and {held} more like it in the {self._seconds:g} s before)",
                *args,
            )
        else:
            self._logger.log(level, message, *args)


_WITHHELD = Throttled(logging.getLogger("nextoffer.api"))


def withheld(exc: NextOfferError) -> None:
    """Log what an answer to a client leaves out: ``exc``'s internal text (a driver's
    words, naming hosts, ports, roles or files), which only the operator reads. An
    outage would repeat it for every request, so it is throttled."""
    if exc.internal:
        _WITHHELD.error("%s: %s", exc.detail, exc.internal)
