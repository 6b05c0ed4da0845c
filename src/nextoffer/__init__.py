"""nextoffer: self-hosted offer decisioning.

The library surface: ``NextOffer`` (``root.py``) opens everything from ``Settings`` and
offers the use cases; ``DecisionCall`` and ``PropositionRequest`` say what to decide. They
are imported on first use, so ``import nextoffer.pql`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nextoffer.engine import PropositionRequest as PropositionRequest
    from nextoffer.root import NextOffer as NextOffer
    from nextoffer.service.decisions import DecisionCall as DecisionCall
    from nextoffer.settings import Settings as Settings

__version__ = "0.1.0"
__all__ = ["DecisionCall", "NextOffer", "PropositionRequest", "Settings", "__version__"]

_LAZY = {
    "NextOffer": "nextoffer.root",
    "Settings": "nextoffer.settings",
    "DecisionCall": "nextoffer.service.decisions",
    "PropositionRequest": "nextoffer.engine",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nextoffer' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
