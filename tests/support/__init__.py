"""Helpers shared by the test groups (importable as ``support`` via pytest's pythonpath)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
#: Adobe's documented bodies and the rule-language cases, kept in the repository
#: (where each came from: tests/data/adobe/README.md).
ADOBE = ROOT / "tests" / "data" / "adobe"
EXAMPLES = ADOBE / "examples"

OM = "https://ns.adobe.com/experience/offer-management/"
#: nextoffer's own kinds (the ranking strategy).
NEXTOFFER_OM = "https://ns.nextoffer.dev/offer-management/"
RECEIPT_ACCEPT = "application/vnd.adobe.platform.xcore.xdm.receipt+json; version=1"
#: The documented create Content-Type, two spaces before ``schema=`` as on Adobe's pages.
CREATE_TYPE = 'application/schema-instance+json; version=1;  schema="{schema}"'
PATCH_TYPE = 'application/vnd.adobe.platform.xcore.patch.hal+json; version=1; schema="{schema}"'

VERSIONS = {
    "offer-placement": "0.4",
    "personalized-offer": "0.5",
    "fallback-offer": "0.1",
    "offer-filter": "0.1",
    "tag": "0.1",
    "eligibility-rule": "0.3",
    "offer-activity": "0.5",
    "ranking-function": "0.3",
    "ranking-strategy": "1.0",
}


def schema(type_name: str, version: str | None = "default") -> str:
    if version == "default":
        version = VERSIONS[type_name]
    namespace = NEXTOFFER_OM if type_name == "ranking-strategy" else OM
    return namespace + type_name + (f";version={version}" if version else "")


def example(name: str) -> Any:
    return json.loads((EXAMPLES / name).read_text())


def remap(value: Any, mapping: dict[str, str]) -> Any:
    """Replace documented ids with ids of instances the test created."""
    if isinstance(value, str):
        return mapping.get(value, value)
    if isinstance(value, list):
        return [remap(v, mapping) for v in value]
    if isinstance(value, dict):
        return {k: remap(v, mapping) for k, v in value.items()}
    return value
