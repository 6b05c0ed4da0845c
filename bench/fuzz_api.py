"""Schemathesis against a live ``nextoffer serve`` (all phases, all endpoints); prints the
figures as JSON and exits non-zero on any 5xx, any failed check or too few requests.

    python bench/fuzz_api.py --max-examples 80 --min-requests 2000     (scripts/fuzz-api)
    python bench/fuzz_api.py --db-url postgresql://…/an_empty_database

The setup, the pinned parameters and the checks are described in tests/support/apifuzz.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support import apifuzz


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--max-examples", type=int, default=80, help="test cases per operation and phase"
    )
    parser.add_argument("--min-requests", type=int, default=2000)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--db-url",
        help="the server's database, an empty one (default: a SQLite file in the workdir)",
    )
    parser.add_argument(
        "--keep", type=Path, help="a directory to keep the server log and report in"
    )
    args = parser.parse_args()
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="nextoffer-fuzz-api-"))
    workdir.mkdir(parents=True, exist_ok=True)
    result = apifuzz.run(
        workdir,
        max_examples=args.max_examples,
        seed=args.seed,
        workers=args.workers,
        db_url=args.db_url,
    )
    (workdir / "schemathesis-output.txt").write_text(result.output)
    summary = result.summary()
    print(json.dumps(summary, indent=1))
    print(f"schemathesis output: {workdir / 'schemathesis-output.txt'}", file=sys.stderr)
    if not result.ok or result.requests < args.min_requests:
        print(result.output[-8000:], file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
