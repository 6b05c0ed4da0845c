"""Compiled rules and formulas by source: in memory, and in a file workers share.

Compiling a rule (parse, check, code generation, ``compile()``) is the dearest step of a
snapshot build (docs/benchmarks.md, "PQL compile"); a library at Adobe's guardrail holds
10,000 rules. Every snapshot rebuild asks :meth:`CompiledRules.get`
for each rule and formula, so a change to one offer compiles one rule, not ten thousand.

With a ``directory``, compiled rules also outlive the process: each one compiled here is
appended to ``rules-<fingerprint>.bin`` there (``pql.stored``: the code object and what it
reads, a small fraction of compiling it to load), and a process starting reads that file
once, so a worker that starts — or restarts, or is one of several started together after
one of them has built the library — finds its rules already compiled. Entries are keyed
by the rule's text, format and kind, and the file by a fingerprint of the compiler (the
nextoffer version, the source of the ``pql`` package, and Python's bytecode version): a
library version never invalidates anything (a changed rule is a new text, a deleted one
is simply not asked for), and a new compiler or Python starts a new file. Appends are
single ``write`` calls of length-prefixed, checksummed records, so processes appending at
once do not interleave; a record that cannot be read ends the read (what follows is
compiled again). The file holds code that runs when loaded, like ``__pycache__``: keep the
directory writable only by the service's user.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import struct
import sys
import threading
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nextoffer import pql
from nextoffer.pql import stored

log = logging.getLogger(__name__)

#: Distinct compiled rules and formulas kept in memory (per process).
MEMORY_LIMIT = 50_000
_HEADER = struct.Struct("<II")  # record length, crc32 of the record

Key = tuple[str, str, str]


def fingerprint() -> str:
    """What compiled code depends on: nextoffer's version, the ``pql`` package's source
    and Python's bytecode version (``importlib.util.MAGIC_NUMBER``)."""
    digest = hashlib.sha256()
    digest.update(importlib.metadata.version("nextoffer").encode())
    digest.update(importlib.util.MAGIC_NUMBER)
    digest.update(sys.version.encode())
    package = Path(pql.__file__).parent
    for path in sorted(package.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


class CompiledRules:
    """``pql.compile`` with a memory (and optionally a file) of what it compiled."""

    def __init__(
        self,
        directory: str | Path | None = None,
        *,
        compile_rule: Callable[..., pql.CompiledRule] = pql.compile,
        record: bool = False,
    ) -> None:
        """``record``: keep what is compiled for :meth:`take_new` even without a
        ``directory`` (a worker process that compiles for another one)."""
        self._compile = compile_rule
        self._memory: dict[Key, pql.CompiledRule] = {}
        #: Stored rules read from the file and not yet asked for (loaded on first use).
        self._stored: dict[Key, bytes] = {}
        #: Rules compiled here and not yet appended to the file.
        self._new: list[tuple[Key, bytes]] = []
        self._lock = threading.Lock()
        self.path: Path | None = None
        self._record = record or directory is not None
        if directory is not None:
            self.path = Path(directory) / f"rules-{fingerprint()}.bin"
            self._read()

    # -- lookups ----------------------------------------------------------------------

    def get(self, source: Any, *, format: str = "pql/text", kind: str = "rule") -> pql.CompiledRule:
        """The compiled rule (raises ``PQLError`` like ``pql.compile``)."""
        if not isinstance(source, str):
            return self._compile(source, format=format, kind=kind)
        key = (source, format, kind)
        compiled = self._memory.get(key)
        if compiled is not None:
            return compiled
        data = self._stored.pop(key, None)
        if data is not None:
            try:
                compiled = stored.load(data)
            except Exception as exc:  # a damaged entry is compiled again
                log.warning("a stored compiled rule could not be loaded: %s", exc)
        if compiled is None:
            compiled = self._compile(source, format=format, kind=kind)
            if self._record:
                self._new.append((key, stored.dump(compiled)))
        if len(self._memory) >= MEMORY_LIMIT:
            self._memory.clear()
        self._memory[key] = compiled
        return compiled

    __call__ = get

    def known(self, source: Any, *, format: str = "pql/text", kind: str = "rule") -> bool:
        """Whether :meth:`get` would answer without compiling."""
        key = (source, format, kind)
        return isinstance(source, str) and (key in self._memory or key in self._stored)

    def deferred(self, source: str, *, format: str = "pql/text", kind: str = "rule") -> Deferred:
        """The rule, compiled (through :meth:`get`) the first time it is evaluated."""
        return Deferred(self, source, format, kind)

    # -- the file ---------------------------------------------------------------------

    def take_new(self) -> list[tuple[Key, bytes]]:
        """The rules compiled here since the last call (or :meth:`save`), as stored bytes:
        what a worker process hands to :meth:`adopt` in another."""
        with self._lock:
            new, self._new = self._new, []
        return new

    def adopt(self, entries: list[tuple[Key, bytes]]) -> None:
        """Rules another process compiled (:meth:`take_new` there): loaded on first use,
        and appended to the file by the next :meth:`save`."""
        with self._lock:
            for key, data in entries:
                if key not in self._memory:
                    self._stored[key] = data
            if self._record:
                self._new.extend(entries)

    def save(self) -> int:
        """Append the rules compiled since the last save to the file (one ``write``); how
        many. Errors are logged, never raised: the file only saves time."""
        new = self.take_new()
        if not new or self.path is None:
            return 0
        chunks = []
        for key, data in new:
            record = _encode(key, data)
            chunks.append(_HEADER.pack(len(record), zlib.crc32(record)) + record)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, b"".join(chunks))
            finally:
                os.close(fd)
        except OSError as exc:
            log.warning("compiled rules not saved to %s: %s", self.path, exc)
            return 0
        return len(new)

    def _read(self) -> None:
        assert self.path is not None
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("compiled rules not read from %s: %s", self.path, exc)
            return
        view = memoryview(data)
        offset = 0
        while offset + _HEADER.size <= len(data):
            length, crc = _HEADER.unpack_from(view, offset)
            start, end = offset + _HEADER.size, offset + _HEADER.size + length
            record = view[start:end]
            if end > len(data) or zlib.crc32(record) != crc:
                log.warning("compiled rules file %s is damaged at byte %d", self.path, offset)
                break
            key, rule = _decode(bytes(record))
            self._stored[key] = rule
            offset = end


class Deferred:
    """A rule compiled on its first evaluation: what a worker's first snapshot holds for
    the rules no one has compiled yet, so that it answers before compiling them all.

    It has no ``conjuncts`` (the catalog then shares no rule parts in that pool) and raises
    the compiler's ``PQLError`` from ``evaluate`` when the source does not compile.
    """

    __slots__ = ("_format", "_kind", "_rules", "_source", "evaluate")

    def __init__(self, rules: CompiledRules, source: str, fmt: str, kind: str) -> None:
        self._rules, self._source, self._format, self._kind = rules, source, fmt, kind
        self.evaluate: Callable[..., Any] = self._first

    def _first(
        self,
        profile: Any = None,
        events: Any = None,
        now: Any = None,
        context: Any = None,
        variables: Any = None,
    ) -> Any:
        compiled = self._rules.get(self._source, format=self._format, kind=self._kind)
        self.evaluate = compiled.evaluate
        return compiled.evaluate(
            profile=profile, events=events, now=now, context=context, variables=variables
        )


def _encode(key: Key, data: bytes) -> bytes:
    parts = [part.encode() for part in key]
    head = struct.pack("<III", *(len(p) for p in parts))
    return head + b"".join(parts) + data


def _decode(record: bytes) -> tuple[Key, bytes]:
    lengths = struct.unpack_from("<III", record)
    offset = 12
    parts = []
    for length in lengths:
        parts.append(record[offset : offset + length].decode())
        offset += length
    return (parts[0], parts[1], parts[2]), record[offset:]
