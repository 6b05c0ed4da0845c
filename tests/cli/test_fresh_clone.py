"""A clone of the repository, with nothing beside it, runs its tests.

The tests once read Adobe's documented bodies from a folder next to the checkout that only
the team had; a stranger's clone failed. This clones the committed HEAD into an empty
temporary folder and runs the tests that read the reference data (tests/data/adobe), with
the clone's own code on the path, so anything reaching outside the clone fails here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SELECTION = ["tests/spec", "tests/api/test_adobe_examples.py"]

pytestmark = pytest.mark.skipif(
    not (ROOT / ".git").exists(),
    reason=f"{ROOT} is not a git checkout (e.g. an unpacked sdist): nothing to clone",
)


@pytest.mark.slow
def test_a_clone_with_nothing_beside_it_runs_its_tests(tmp_path: Path) -> None:
    clone = tmp_path / "x"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]  # the clone is alone in its folder
    env = {**os.environ, "PYTHONPATH": str(clone / "src")}
    env.pop("PYTEST_ADDOPTS", None)

    where = subprocess.run(
        [sys.executable, "-c", "import nextoffer; print(nextoffer.__file__)"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(where).resolve().is_relative_to(clone.resolve()), where  # not the editable install

    run = subprocess.run(
        [sys.executable, "-m", "pytest", *SELECTION, "-q", "-p", "no:cacheprovider"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-5000:]
    passed = re.search(r"(\d+) passed", output)
    assert passed and int(passed.group(1)) > 0, output[-5000:]
