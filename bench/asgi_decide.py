"""CPU per recorded decision through the whole ASGI app, in process, beside a bare request.

    .venv/bin/python bench/asgi_decide.py [--requests 4000] [--repeats 5] [--tasks 50]
        [--baseline OTHER/src] [--workdir DIR] [--plot PNG]
    .venv/bin/python bench/asgi_decide.py --stages [--repeats 5]   # what each stage costs
    .venv/bin/python bench/asgi_decide.py --without "decide use case" --baseline OTHER/src
        # the route and middleware alone: both trees with the use case replayed
    .venv/bin/python bench/asgi_decide.py --layers [--repeats 5]
        # beside the app: the use case called alone, and a route with no framework

What a server worker runs for ``POST …/decisions`` minus the HTTP parser: the app of
``create_app`` (observability middleware, the shortcut, the route, body parsing, the
decide use case, the group-committed record on SQLite, the response) called as uvicorn
calls it, on uvloop, from ``--tasks`` concurrent tasks (the decisions of one pass of the
loop share a commit, as under load). The reference is ``GET /bare`` through the same app
(``httpbench.py``'s constant-body route). The library and request are
``http_decisions.py``'s (100 offers, 5-condition rules, a third capped, 10,000 profiles,
top 3, every decision recorded); the access log and metrics are on, as they are by default
(the log goes to ``/dev/null``).

The figure is CPU time of the whole process (``time.process_time``: the loop's thread,
the WAL checkpoint thread and any other) ÷ requests: unlike requests per second it barely
moves when other work shares the machine. With ``--baseline``, each repeat runs one child
process on this tree and one on ``OTHER/src`` (``PYTHONPATH``), alternately, each on a
database of its own built the same way by its own tree's code (the trees' schemas may
differ: a tree refuses a newer schema than its own): the ratio of their medians is the
change's effect.

With ``--stages``, each repeat runs, per stage, a pair of children: the full path and the
path with that stage replayed (``stage_replay.py``: during the warm-up the stage runs and
its answers are kept; measured requests get those answers back instead of the work), in
alternating order. The median of the pairs' differences is what the stage costs in place,
on the loop among the other tasks.

With ``--without STAGE``, every child (both trees' with ``--baseline``) runs with that stage
replayed: ``--without "decide use case"`` leaves the route, its middleware, the body,
authentication and the response — what the HTTP layer adds to a decision — so a change
there is compared without the use case's much larger spread.

With ``--layers``, every child also measures, in the same process and warm state, two
rows beside the app's: ``NextOffer.decide_async`` called alone from the same number of
tasks, on calls parsed from the same bodies before the clock starts (what the use case
costs with nothing between its decisions), and a minimal ASGI callable written here for
the same request (the headers in a dict, authentication, the body read and parsed by
``decision_request.parse``, the use case, ``decision_response.response`` serialised by
orjson, two ``send``s) with no Starlette, no middleware, no shortcut and no body checks:
what the app's framework layers cost a decision, against what a request's own work does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from scratch import scratch_dir

HERE = Path(__file__).resolve().parent


def child(args: argparse.Namespace) -> None:
    """One process: open the app on ``args.db``, warm it, measure, print JSON."""
    import orjson
    import uvloop
    from http_decisions import DECIDE_TYPE, PROFILES
    from starlette.responses import Response
    from starlette.routing import Route

    from nextoffer.api import decision_request, decision_response
    from nextoffer.api.app import create_app
    from nextoffer.api.media import DECISION_RESPONSE
    from nextoffer.settings import Settings

    start_replay = None
    if args.replay:
        from stage_replay import install

        start_replay = install(args.replay)
    lib = json.loads(Path(args.lib).read_text())
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - the access log's sink, for the run

    async def bare(request: Any) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    app = create_app(Settings.from_env(db_url=args.db))  # NEXTOFFER_* settings apply
    app.router.routes.insert(0, Route("/bare", bare, methods=["GET"]))
    headers = [(k.lower().encode(), v.encode()) for k, v in lib["headers"].items()]
    decide_path = f"/data/core/ode/{lib['container']}/decisions"
    template = lib["request"]
    rng = random.Random(os.getpid())

    def scope(method: str, path: str, extra: list[tuple[bytes, bytes]]) -> dict[str, Any]:
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [(b"host", b"127.0.0.1:8000"), *extra],
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8000),
            "state": {},
        }

    async def call(
        method: str, path: str, body: bytes, extra: list[tuple[bytes, bytes]], to: Any = None
    ) -> int:
        status = 0
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # pragma: no cover - never asked twice
            return {}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await (to or app)(scope(method, path, [*extra]), receive, send)
        return status

    def decision_body() -> bytes:
        return template.replace("__N__", str(rng.randrange(PROFILES))).encode()

    post_headers = [*headers, (b"content-type", DECIDE_TYPE.encode())]

    async def decide_one() -> int:
        body = decision_body()
        extra = [*post_headers, (b"content-length", str(len(body)).encode())]
        return await call("POST", decide_path, body, extra)

    async def bare_one() -> int:
        return await call("GET", "/bare", b"", headers)

    # --layers: the use case alone, and the same request through a route with no framework.
    opened: list[Any] = []  # the app's NextOffer and its caller, once the lifespan ran
    content_type = [(b"content-type", DECISION_RESPONSE.encode())]

    async def plain_route(scope: dict[str, Any], receive: Any, send: Any) -> None:
        no = opened[0]
        found = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        who = no.auth.authenticate(found)
        message = await receive()
        decision_call, fmt = decision_request.parse(orjson.loads(message["body"]))
        outcome = await no.decide_async(who, lib["container"], decision_call)
        answer = orjson.dumps(
            decision_response.response(
                outcome, fmt, decision_request_id=decision_call.decision_request_id
            )
        )
        length = [(b"content-length", str(len(answer)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": length + content_type})
        await send({"type": "http.response.body", "body": answer})

    async def plain_one() -> int:
        body = decision_body()
        extra = [*post_headers, (b"content-length", str(len(body)).encode())]
        return await call("POST", decide_path, body, extra, plain_route)

    async def alone(n: int) -> float:
        """CPU µs per decision of ``decide_async`` alone, from ``args.tasks`` tasks."""
        no, principal = opened
        calls = [decision_request.parse(orjson.loads(decision_body()))[0] for _ in range(n)]
        left = iter(calls)

        async def worker() -> None:
            for decision_call in left:
                await no.decide_async(principal, lib["container"], decision_call)

        cpu = time.process_time()
        await asyncio.gather(*(worker() for _ in range(args.tasks)))
        return (time.process_time() - cpu) / n * 1e6

    async def drive(one: Any, n: int) -> tuple[float, float]:
        """``n`` requests from ``args.tasks`` tasks: (CPU µs, wall µs) per request."""
        left = n
        bad = 0

        async def worker() -> None:
            nonlocal left, bad
            while left > 0:
                left -= 1
                if await one() != 200:
                    bad += 1

        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(args.tasks)))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        if bad:
            raise RuntimeError(f"{bad} requests did not answer 200")
        return cpu / n * 1e6, wall / n * 1e6

    async def main() -> dict[str, list[float]]:
        startup: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        done: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        await startup.put({"type": "lifespan.startup"})

        async def send_life(message: dict[str, Any]) -> None:
            await done.put(message)

        life_scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        life = asyncio.ensure_future(app(life_scope, startup.get, send_life))
        started = await done.get()
        if started["type"] != "lifespan.startup.complete":
            raise RuntimeError(f"lifespan: {started}")
        await drive(decide_one, args.requests)  # warm: snapshot, connections, caches
        if args.layers:
            no = app.state.nextoffer
            lower = {name.lower(): value for name, value in lib["headers"].items()}
            opened[:] = [no, no.auth.authenticate(lower)]
        if start_replay is not None:
            start_replay()
        out: dict[str, list[float]] = {"bare": [], "decision": [], "decision_wall": []}
        for _ in range(args.repeats):
            out["bare"].append((await drive(bare_one, args.requests))[0])
            cpu, wall = await drive(decide_one, args.requests)
            out["decision"].append(cpu)
            out["decision_wall"].append(wall)
            if args.layers:
                out.setdefault("alone", []).append(await alone(args.requests))
                out.setdefault("plain", []).append((await drive(plain_one, args.requests))[0])
        await startup.put({"type": "lifespan.shutdown"})
        await done.get()
        await life
        return out

    result = uvloop.run(main())
    sys.stderr.write(json.dumps(result) + "\n")


def _env(src: str | None) -> dict[str, str]:
    """The environment of a child on ``src`` (this tree's when None)."""
    env = dict(os.environ)
    path = [str(HERE)]
    if src:
        path.insert(0, src)
    env["PYTHONPATH"] = os.pathsep.join(path)
    return env


def run_child(
    src: str | None, db: str, lib: Path, args: argparse.Namespace, replay: str | None = None
) -> dict[str, Any]:
    """One child (or ``--processes`` children at once, on the same database, like the
    workers of one server: their figures are averaged)."""
    env = _env(src)
    command = [
        *(sys.executable, str(Path(__file__).resolve()), "--child", "--db", db),
        *("--lib", str(lib), "--requests", str(args.requests), "--repeats", "1"),
        *("--tasks", str(args.tasks)),
        *(("--replay", replay) if replay else ()),
        *(("--layers",) if getattr(args, "layers", False) else ()),
    ]
    children = [
        subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        for _ in range(getattr(args, "processes", 1))
    ]
    results = []
    for child in children:
        _, err = child.communicate()
        if child.returncode != 0:
            raise RuntimeError(err[-3000:])
        results.append(json.loads(err.strip().splitlines()[-1]))
    return {key: [statistics.fmean(r[key][0] for r in results)] for key in results[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="children at once per tree and repeat, on one database (2: two workers' commits)",
    )
    parser.add_argument("--baseline", help="another tree's src/ to compare with (PYTHONPATH)")
    parser.add_argument("--workdir", help="keep the database here and reuse it")
    parser.add_argument("--plot", type=Path, help="write a matplotlib PNG of every child here")
    parser.add_argument(
        "--stages", action="store_true", help="what each stage costs (stage_replay.py)"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--without", metavar="STAGE", help="replay this stage in every child (stage_replay.py)"
    )
    parser.add_argument(
        "--layers",
        action="store_true",
        help="also the use case alone and a route with no framework, in each child",
    )
    parser.add_argument("--replay", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--lib", help=argparse.SUPPRESS)
    parser.add_argument("--build", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    sys.path.insert(0, str(HERE))
    if args.build:
        from http_decisions import build

        Path(args.lib).write_text(json.dumps(build(args.db)))
        return

    workdir = scratch_dir("nextoffer-asgi-", keep=args.workdir)
    trees: dict[str, str | None] = {"this tree": None}
    if args.baseline:
        trees["baseline"] = args.baseline
    places: dict[str, tuple[str, Path]] = {}
    for name, src in trees.items():
        stem = "bench" if src is None else "baseline"
        db, lib_file = f"sqlite:///{workdir / (stem + '.db')}", workdir / f"{stem}-lib.json"
        if not lib_file.exists():
            print(f"building the library and 10,000 profiles ({name}) …", flush=True)
            subprocess.run(
                [sys.executable, __file__, "--build", "--db", db, "--lib", str(lib_file)],
                env=_env(src),
                check=True,
            )
        places[name] = (db, lib_file)
    if args.stages:
        stages(places["this tree"], args)
        return
    rows: dict[str, dict[str, list[float]]] = {name: {} for name in trees}
    load = [os.getloadavg()[0]]
    for _ in range(args.repeats):
        for name, src in trees.items():
            db, lib_file = places[name]
            for key, values in run_child(src, db, lib_file, args, args.without).items():
                rows[name].setdefault(key, []).extend(values)
        load.append(os.getloadavg()[0])
    print(f"load average (1 min) over the run: {min(load):.2f}–{max(load):.2f}")
    print(f"µs per request, medians of {args.repeats} child processes, {args.tasks} tasks")
    print("| tree | bare CPU µs | decision CPU µs | decision wall µs | bare ÷ decision (CPU) |")
    print("|---|---:|---:|---:|---:|")
    medians = {}
    for name, values in rows.items():
        bare = statistics.median(values["bare"])
        dec = statistics.median(values["decision"])
        wall = statistics.median(values["decision_wall"])
        medians[name] = dec
        print(f"| {name} | {bare:.1f} | {dec:.1f} | {wall:.1f} | {bare / dec:.3f} |")
    if args.layers:
        print("| tree | app µs | route with no framework µs | ÷ app | use case alone µs | ÷ app |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, values in rows.items():
            dec = statistics.median(values["decision"])
            plain = statistics.median(values["plain"])
            alone = statistics.median(values["alone"])
            print(
                f"| {name} | {dec:.1f} | {plain:.1f} | {plain / dec:.3f} "
                f"| {alone:.1f} | {alone / dec:.3f} |"
            )
    if args.baseline:
        ratio = medians["this tree"] / medians["baseline"]
        pairs = statistics.median(
            a / b
            for a, b in zip(
                rows["this tree"]["decision"], rows["baseline"]["decision"], strict=True
            )
        )
        print(
            f"decision CPU, this tree ÷ baseline: {ratio:.3f} (ratio of medians), "
            f"{pairs:.3f} (median of the {args.repeats} per-repeat ratios)"
        )
    if args.plot:
        plot(rows, args, args.plot)


def stages(place: tuple[str, Path], args: argparse.Namespace) -> None:
    """Per stage and repeat, a pair of children — the full path and the path with that
    stage replayed, in alternating order — and the median of the pairs' differences."""
    from stage_replay import STAGES

    db, lib_file = place
    names = list(STAGES)
    full: list[float] = []
    bare: list[float] = []
    costs: dict[str, list[float]] = {name: [] for name in names}
    without: dict[str, list[float]] = {name: [] for name in names}
    load = [os.getloadavg()[0]]
    for repeat in range(args.repeats):
        for n, stage in enumerate(names[repeat % len(names) :] + names[: repeat % len(names)]):
            order: list[str | None] = [None, stage] if (repeat + n) % 2 == 0 else [stage, None]
            pair = {}
            for variant in order:
                result = run_child(None, db, lib_file, args, replay=variant)
                pair[variant] = result["decision"][0]
                bare.extend(result["bare"])
            full.append(pair[None])
            without[stage].append(pair[stage])
            costs[stage].append(pair[None] - pair[stage])
        load.append(os.getloadavg()[0])
    print(f"load average (1 min) over the run: {min(load):.2f}–{max(load):.2f}")
    print(
        f"CPU µs per request, {args.repeats} pairs of child processes per stage, "
        f"{args.tasks} tasks; bare request {statistics.median(bare):.1f} µs, "
        f"full path {statistics.median(full):.1f} µs (medians)"
    )
    print("| stage replayed | what it replaces | decision CPU µs without it | its cost, µs |")
    print("|---|---|---:|---:|")
    for stage, what in STAGES.items():
        print(
            f"| {stage} | {what} | {statistics.median(without[stage]):.1f} "
            f"| {statistics.median(costs[stage]):.1f} |"
        )
    print("(its cost: the median over pairs of the full path's CPU minus the replayed one's)")


def plot(rows: dict[str, dict[str, list[float]]], args: argparse.Namespace, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for n, (name, values) in enumerate(rows.items()):
        for key, marker in (("decision", "o"), ("bare", "s")):
            ys = values[key]
            ax.scatter(
                [n + (0.15 if key == "bare" else 0)] * len(ys),
                ys,
                marker=marker,
                color=f"C{n}",
                alpha=0.7,
                label=f"{name}: {key}",
            )
            ax.hlines(statistics.median(ys), n - 0.1, n + 0.25, color=f"C{n}")
    ax.set_xticks(range(len(rows)), list(rows))
    ax.set_ylabel("process CPU µs per request")
    ax.set_ylim(bottom=0)
    ax.set_title(
        f"Recorded decision through the ASGI app ({args.tasks} tasks), one point per child"
    )
    ax.set_xlim(-0.5, len(rows) - 0.3)
    ax.legend(loc="center right", fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
