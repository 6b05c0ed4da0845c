"""An S3-compatible server process on loopback for the tests of remote dataset locations.

No S3 endpoint is reachable from the machines the tests run on, and no S3 server that
stores objects for real installs from the registries they reach (PyPI, npm, Debian:
Debian's ``radosgw`` needs a running Ceph cluster; MinIO, SeaweedFS and Garage are not
packaged there). So the server is moto's standalone ``moto_server`` (``moto[server]``, in
the ``test`` extra): a separate process speaking S3's REST protocol over HTTP, reached by
pyarrow's real S3 client (the AWS SDK for C++) exactly as a deployment reaches S3 or
MinIO — nothing in nextoffer is replaced. Without it the tests are skipped, saying why;
under ``CI=true`` they fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from support.servers import free_port, until_ready

#: Keys the server accepts (it checks none); given so the client never looks elsewhere.
ACCESS_KEY = "nextoffer-test"
SECRET_KEY = "nextoffer-test-secret"
REGION = "us-east-1"


def _executable() -> str | None:
    beside = Path(sys.executable).with_name("moto_server")
    return str(beside) if beside.exists() else shutil.which("moto_server")


@contextmanager
def s3_server() -> Iterator[str]:
    """A fresh ``moto_server`` on a free loopback port; yields its endpoint URL."""
    # The AWS SDK never asks an EC2 metadata address (off loopback) for keys or region.
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    exe = _executable()
    if exe is None:
        reason = "S3 tests need moto_server (pip install 'nextoffer[test]')"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI: {reason}", pytrace=False)
        pytest.skip(reason)
    port = free_port()
    process = subprocess.Popen(
        [exe, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        httpx.get(f"{endpoint}/", timeout=1)
        return True

    with until_ready(process, ready, lambda: f"moto_server did not start on {endpoint}"):
        yield endpoint


def client(endpoint: str) -> object:
    """pyarrow's S3 client for the server, allowed to create buckets (the tests' own)."""
    from pyarrow import fs

    return fs.S3FileSystem(
        endpoint_override=endpoint,
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        region=REGION,
        allow_bucket_creation=True,
    )
