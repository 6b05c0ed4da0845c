"""Schemathesis against a live ``nextoffer serve``: the run behind ``scripts/fuzz-api`` and
``tests/api/test_fuzz_schemathesis.py``.

The server gets a tenant with the demo library; schemathesis reads ``/openapi.json`` from
it and sends the tenant's four headers on every request (its ``ignored_auth`` check
drops them to prove they are needed). Path and query parameters that name stored things
are pinned to real ones so that requests reach the code behind the 404s: the container,
an offer (read, PUT, PATCH; by instance id on xcore, by ``@id`` on dps), a throwaway
placement and tag (DELETE) and a profile.

Requests and their statuses are counted from schemathesis's HAR report (every request it
sent, with its response), not from its count of test cases.

Checks: all of schemathesis's, with two off and one tuned to the documented contract (docs/api.md):

* ``positive_data_acceptance`` is off: it expects a 2xx for every request the document's
  schemas admit, but validity here also depends on stored state and on rules no JSON
  Schema states (references, PQL, date ranges, the ``schema`` media-type parameter);
  every refusal must still be a documented status with a documented body, which
  ``status_code_conformance`` and ``response_schema_conformance`` check.
* ``missing_required_header`` is off: it insists on 401 for a missing ``Authorization``,
  where the documented answer is Adobe's gateway ``403010``; ``test_auth_matrix.py``
  checks every missing header on every endpoint against the documented table.
* ``negative_data_rejection`` accepts 413: more than 1,000 events is "too large".
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx

from support.live import LiveServer, headers_of, make_tenant


@dataclass
class FuzzResult:
    requests: int
    statuses: dict[str, int]
    server_errors: int
    test_cases: int
    failures: list[dict[str, object]]
    errors: list[dict[str, object]]
    exit_code: int
    seconds: float
    output: str

    @property
    def ok(self) -> bool:
        return (
            self.exit_code == 0 and not self.server_errors and not self.failures and not self.errors
        )

    def summary(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "server_errors_5xx": self.server_errors,
            "statuses": dict(sorted(self.statuses.items())),
            "schemathesis_test_cases": self.test_cases,
            "failures": self.failures,
            "errors": self.errors,
            "exit_code": self.exit_code,
            "seconds": round(self.seconds, 1),
        }


def _toml_value(value: object) -> str:
    return json.dumps(value)


def write_config(
    path: Path,
    *,
    headers: dict[str, str],
    container: str,
    offer: str,
    victim: str,
    offer_id: str,
    dps_victim: str,
) -> None:
    lines = ["[headers]"]
    lines += [f"{_toml_value(k)} = {_toml_value(v)}" for k, v in headers.items()]
    lines += [
        "",
        "[parameters]",
        f'"path.containerId" = {_toml_value(container)}',
        f'"path.instanceId" = {_toml_value(offer)}',
        '"query.namespace" = "Email"',
        '"query.id" = "fuzz@example.com"',
        f'"query.containerId" = {_toml_value(container)}',
        # The dps form names objects by @id; offer-type picks the offers' resource.
        f'"path.id" = {_toml_value(offer_id)}',
        '"query.offer-type" = "personalized"',
        "",
        "[checks.negative_data_rejection]",
        "expected-statuses = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422]",
        "",
        "[[operations]]",
        'include-method = "DELETE"',
        'include-path = "/data/core/xcore/{containerId}/instances/{instanceId}"',
        f'parameters = {{ "path.instanceId" = {_toml_value(victim)} }}',
        "",
        "[[operations]]",
        'include-method = "DELETE"',
        'include-path = "/data/core/dps/{resource}/{id}"',
        f'parameters = {{ "path.id" = {_toml_value(dps_victim)}, "path.resource" = "tags" }}',
        "",
    ]
    path.write_text("\n".join(lines))


def run(
    workdir: Path,
    *,
    max_examples: int,
    seed: int | None = None,
    workers: int = 1,
    phases: str = "examples,coverage,fuzzing,stateful",
    max_time: float | None = None,
    db_url: str | None = None,
) -> FuzzResult:
    """Start a server in ``workdir``, fuzz it, stop it; the figures and schemathesis's output.
    The server's database is a SQLite file in ``workdir`` unless ``db_url`` names another
    (an empty one: it is migrated and a tenant seeded in it)."""
    import time

    db_url = db_url or f"sqlite:///{workdir / 'fuzz.db'}"
    creds, ids = make_tenant(db_url, "FUZZ@AdobeOrg", "prod", seed=True)
    # The access log counts requests; uvicorn writes it to the server's log file.
    server = LiveServer(db_url, workdir=workdir, access_log=True).start()
    try:
        headers = headers_of(creds)
        with httpx.Client(base_url=server.base, headers=headers, timeout=10) as client:
            victim = client.post(
                f"/data/core/xcore/{creds.container_id}/instances",
                content=json.dumps(
                    {
                        "xdm:name": "to delete",
                        "xdm:channel": "https://ns.adobe.com/xdm/channel-types/web",
                        "xdm:componentType": "https://ns.adobe.com/experience/offer-management/content-component-html",
                    }
                ),
                headers={
                    "Content-Type": 'application/schema-instance+json; version=1; schema="https://ns.adobe.com/experience/offer-management/offer-placement;version=0.4"'
                },
            )
            victim.raise_for_status()
            dps_victim = client.post("/data/core/dps/tags", json={"name": "to delete"})
            dps_victim.raise_for_status()
            client.post(
                "/data/core/nextoffer/profiles",
                json={
                    "identityMap": {"Email": [{"id": "fuzz@example.com"}]},
                    "profile": {"loyalty": {"tier": "gold"}},
                },
            ).raise_for_status()
        config = workdir / "schemathesis.toml"
        write_config(
            config,
            headers=headers,
            container=creds.container_id,
            offer=ids["holiday_offer@instance"],
            victim=victim.json()["instanceId"],
            offer_id=ids["holiday_offer"],
            dps_victim=dps_victim.json()["id"],
        )
        report = workdir / "schemathesis-report.json"
        har = workdir / "schemathesis-requests.har"
        exe = Path(sys.executable).with_name("schemathesis")
        command = [
            str(exe),
            "--config-file",
            str(config),
            "run",
            f"{server.base}/openapi.json",
            "--url",
            server.base,
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance,missing_required_header",
            "--max-examples",
            str(max_examples),
            "--workers",
            str(workers),
            "--phases",
            phases,
            "--no-color",
            "--output-truncate",
            "true",
            "--generation-database",
            "none",
            "--report",
            "json,har",
            "--report-json-path",
            str(report),
            "--report-har-path",
            str(har),
            "--request-timeout",
            "30",
        ]
        if seed is not None:
            command += ["--seed", str(seed)]
        if max_time is not None:
            command += ["--max-time", str(int(max_time))]
        started = time.monotonic()
        done = subprocess.run(command, capture_output=True, text=True, cwd=workdir, check=False)
        seconds = time.monotonic() - started
    finally:
        server.stop()
    entries = json.loads(har.read_text())["log"]["entries"] if har.exists() else []
    statuses: dict[str, int] = {}
    for entry in entries:
        status = str(entry["response"]["status"])
        statuses[status] = statuses.get(status, 0) + 1
    data = json.loads(report.read_text()) if report.exists() else {}
    return FuzzResult(
        requests=len(entries),
        statuses=statuses,
        server_errors=sum(n for s, n in statuses.items() if s.startswith("5")),
        test_cases=int(data.get("test_cases", {}).get("generated", 0)),
        failures=list(data.get("failures", [])),
        errors=list(data.get("errors", [])),
        exit_code=done.returncode,
        seconds=seconds,
        output=done.stdout + done.stderr,
    )
