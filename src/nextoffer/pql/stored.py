"""A compiled rule as bytes, and back: what a compiled-rule cache keeps between processes.

:func:`dump` keeps what :class:`~nextoffer.pql.CompiledRule` needs to evaluate — the
generated function's code object (``marshal``, the format CPython's own ``.pyc`` files
use), the constants the code reads from its closure (literals, sets of strings, ``occurs``
tests), the paths it reads and the rule's conjuncts — and :func:`load` rebuilds the rule
from them in microseconds instead of compiling it again (parse, check, code generation,
``compile()``). A rule whose ``variables`` variant is generated on first use gets it the
same way after loading: the first call that passes variables compiles the rule from its
source once. Rules of one shape share one code object after loading, as after compiling
(``compiler._function``).

The bytes are only valid for the exact compiler and Python that wrote them (code objects
are specific to the bytecode version, and the code calls the runtime helpers by name):
the caller keys them by both (``service/catalogs.py``) and treats them like ``.pyc``
files — loading them runs the code they hold, so they must come from a trusted place.
"""

from __future__ import annotations

import marshal
import pickle
import threading
import types
from typing import TYPE_CHECKING, Any

from .compiler import _base_namespace

if TYPE_CHECKING:
    from . import CompiledRule

#: Bumped whenever the tuple below changes shape.
FORMAT = 2
#: Loaded code objects by their bytes (shared by the rules of one shape). Bounded.
_CODES: dict[bytes, types.CodeType] = {}
_CODES_MAX = 4096


def dump(rule: CompiledRule) -> bytes:
    """``rule`` as bytes for :func:`load` (the same compiler and Python only)."""
    function = rule.evaluate
    code = function.__code__
    # The closure: the rule's values by name, but ``_k0`` (the variables variant's holder).
    values = dict(zip(code.co_freevars, function.__closure__ or (), strict=True))
    lazy = "_k0" in values
    constants = {name: cell.cell_contents for name, cell in values.items() if name != "_k0"}
    return pickle.dumps(
        (
            FORMAT,
            rule.source,
            rule.format,
            rule.kind,
            marshal.dumps(code),
            constants,
            rule.profile_paths,
            rule.context_paths,
            lazy,
            rule.conjuncts,
        ),
        protocol=pickle.HIGHEST_PROTOCOL,
    )


def load(data: bytes) -> CompiledRule:
    """The rule :func:`dump` wrote; raises ``ValueError`` for bytes of another format."""
    from . import CompiledRule, _resolve_now

    fields = pickle.loads(data)  # trusted bytes only (see the module docstring)
    if not isinstance(fields, tuple) or not fields or fields[0] != FORMAT:
        raise ValueError("not a stored rule of this format")
    _, source, fmt, kind, code, constants, profile_paths, context_paths, lazy, conjuncts = fields
    found = _CODES.get(code)
    if found is None:
        if len(_CODES) >= _CODES_MAX:
            _CODES.clear()
        found = _CODES[code] = marshal.loads(code)
    if lazy:
        constants["_k0"] = [_VariablesVariant(source, fmt, kind)]
    closure = tuple(types.CellType(constants[name]) for name in found.co_freevars)
    function = types.FunctionType(
        found, _base_namespace(_resolve_now), "evaluate", (None, None, None, None), closure or None
    )
    rule: CompiledRule = object.__new__(CompiledRule)
    rule.source = source
    rule.format = fmt
    rule.kind = kind
    rule.profile_paths = profile_paths
    rule.context_paths = context_paths
    rule.evaluate = function  # type: ignore[method-assign]
    rule.__dict__["conjuncts"] = conjuncts  # the cached property, already known
    return rule


class _VariablesVariant:
    """The variables variant of a loaded rule: compiles the rule from its source on the first
    call that passes variables (as the compiler generates that variant on first use)."""

    __slots__ = ("_compiled", "_format", "_kind", "_lock", "_source")

    def __init__(self, source: Any, fmt: str, kind: str) -> None:
        self._source, self._format, self._kind = source, fmt, kind
        self._compiled: Any = None
        self._lock = threading.Lock()

    def __call__(self, *args: Any) -> Any:
        if self._compiled is None:
            from . import CompiledRule

            with self._lock:
                if self._compiled is None:
                    compiled = CompiledRule(self._source, format=self._format, kind=self._kind)
                    self._compiled = compiled.evaluate
        return self._compiled(*args)
