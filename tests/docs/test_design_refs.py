"""docs/design.md and docs/batch.md stay true to the code they name: every backquoted file
exists; every backquoted dotted name (``NextOffer.decide_async``, ``storage/errors.transient``,
``build_catalog(pause=…)``) resolves by import, with the keywords it is shown with; every
code-like name (``CountersElsewhere``, ``plan_batch``, ``FOLD_EVENTS``) is still in the
source; a constant or setting shown with its value (```FOLD_EVENTS` (4,096)``) has it; the
traces of a request name files, functions and parameters that are there; the root's
paragraph names every service it holds and nothing it lacks; the layer diagram draws
pyproject.toml's contract; every dependency has its why in design.md's dependency section,
which names none that is gone; batch.md names every error code of a job and quotes the
messages the code writes.

Commands, flags, settings, endpoints and section references are checked for every doc by
test_doc_examples.py, whose helpers this file imports."""

from __future__ import annotations

import importlib
import inspect
import itertools
import pkgutil
import re
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from sqlalchemy import Table

import nextoffer
from docs.test_doc_examples import _FENCE, ROOT, _changed_fields, _plain, sections
from docs.test_doc_examples import DOCS as ALL_DOCS
from nextoffer.settings import Settings

DOCS = [ROOT / "docs" / "design.md", ROOT / "docs" / "batch.md"]
SRC = ROOT / "src" / "nextoffer"


def spans(path: Path) -> list[str]:
    """The inline code spans of a doc's prose (a span that wraps is read as one line)."""
    prose = _FENCE.sub("", path.read_text())
    return [span.replace("\n", " ") for span in re.findall(r"`([^`]+)`", prose)]


# -- files ---------------------------------------------------------------------------------

#: `service/batch/chunk.py`, `storage/search*.py`, `tests/browser/`, `bench/ranking.py`
_FILE = re.compile(
    r"^(?:[\w.*-]+/)*[\w*-]+\.(?:py|html|js|md|bin)$|^(?:[\w-]+/)+$|^(?:bench|scripts)/[\w-]+$"
)
#: written in a doc, not files of ours: folders a setting defaults to, and one "gone"
_NOT_FILES = {"compiled-rules/", "datasets/", "types.py"}


def files_named(path: Path) -> set[str]:
    return {s for s in spans(path) if _FILE.match(s) and s not in _NOT_FILES}


def file_exists(written: str) -> bool:
    """Whether the file (or folder) the doc names is one of ours: a path from the repository
    (``bench/``, ``scripts/``, ``tests/``), under ``src/nextoffer``, or a bare name found
    somewhere under it (``session.py``, as a paragraph on storage writes it)."""
    bases = [ROOT, ROOT / "src", SRC, SRC / "console"]
    if any(list(base.glob(written.rstrip("/"))) for base in bases):
        return True
    return "/" not in written.rstrip("/") and any(SRC.rglob(written.rstrip("/")))


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_file_the_doc_names_exists(doc: Path) -> None:
    assert sorted(f for f in files_named(doc) if not file_exists(f)) == []


# -- dotted names --------------------------------------------------------------------------


@cache
def modules() -> dict[str, ModuleType]:
    """Every module of nextoffer (migration revisions left out), imported."""
    found = {"nextoffer": nextoffer}
    for info in pkgutil.walk_packages(nextoffer.__path__, "nextoffer."):
        if ".migrations." in info.name:  # Alembic runs them, with its context
            continue
        found[info.name] = importlib.import_module(info.name)
    return found


@cache
def by_short_name() -> dict[str, list[Any]]:
    """What a doc may name without its package: a module by its last part (``catalogs``) or
    its last two (``storage.ledger``), a class or function by its name (``NextOffer``),
    wherever in nextoffer it is defined or imported."""
    index: dict[str, list[Any]] = {}
    for name, module in modules().items():
        parts = name.split(".")
        for n in range(1, len(parts)):
            index.setdefault(".".join(parts[n:]), []).append(module)
        for attr, value in vars(module).items():
            if inspect.isclass(value) or inspect.isfunction(value):
                index.setdefault(attr, []).append(value)
            if inspect.isclass(value) and value.__module__ == name:  # its methods too
                for method, function in vars(value).items():
                    if inspect.isfunction(function):
                        index.setdefault(method, []).append(function)
    return index


def has_member(owner: Any, name: str) -> tuple[bool, Any]:
    """``owner.name``, or whether ``name`` is an instance attribute of the class ``owner``
    (a dataclass field, a slot, an annotation or an assignment ``self.name =``)."""
    if hasattr(owner, name):
        return True, getattr(owner, name)
    if not inspect.isclass(owner):
        return False, None
    for klass in owner.__mro__:
        if name in getattr(klass, "__annotations__", {}) or name in getattr(klass, "__slots__", ()):
            return True, None
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        if re.search(rf"self\.{name}\b\s*(?::[^=]+)?=", source):
            return True, None
    return False, None


#: what a doc's short names stand for: an event loop's methods
_ALIASES = {"loop": "asyncio.AbstractEventLoop"}


def imported(parts: list[str]) -> Iterator[tuple[Any, list[str]]]:
    """The longest importable head of a name outside nextoffer (``pyarrow.fs``,
    ``time.thread_time``), and the parts left after it."""
    names = [*_ALIASES.get(parts[0], parts[0]).split("."), *parts[1:]]
    for n in range(len(names), 0, -1):
        try:
            yield importlib.import_module(".".join(names[:n])), names[n:]
        except ImportError:
            continue
        return


def table_column(dotted: str) -> bool:
    """Whether ``table.column`` names a column of one of our tables."""
    parts = dotted.split(".")
    tables = {
        value.name: value
        for module in modules().values()
        if module.__name__.startswith("nextoffer.storage")
        for value in vars(module).values()
        if isinstance(value, Table)
    }
    return len(parts) == 2 and parts[0] in tables and parts[1] in tables[parts[0]].c


def resolve(dotted: str) -> tuple[bool, Any]:
    """(found, the object) for a dotted name as a doc writes it: the first of
    :func:`candidates`."""
    found = candidates(dotted)
    return (True, found[0]) if found else (False, None)


def candidates(dotted: str) -> list[Any]:
    """What a dotted name as a doc writes it may stand for: ours, by its module's path or a
    short name (``update_instance``, a method of several classes), else a library's."""
    parts = dotted.split(".")
    starts: list[tuple[Any, list[str]]] = []
    for n in range(len(parts), 0, -1):
        head = ".".join(parts[:n])
        own = [modules()[f"nextoffer.{head}"]] if f"nextoffer.{head}" in modules() else []
        starts = [(found, parts[n:]) for found in [*own, *by_short_name().get(head, [])]]
        if starts:
            break
    starts += list(imported(parts))
    found = []
    for start, rest in starts:
        owner: Any = start
        for part in rest:
            ok, owner = has_member(owner, part)
            if not ok:
                break
        else:
            found.append(owner)
    return found


#: `Store.session(write=…)`, `DecisionCall.log=False`, `storage/errors.transient`,
#: `Map.mutate()`; not `spark.task.maxFailures` (Spark's) or `~0` (a pointer)
_DOTTED = re.compile(r"^(?P<name>[A-Za-z_]\w*(?:[./][A-Za-z_]\w*)*)(?:\((?P<args>[^)]*)\)|=\S+)?$")
#: dotted spans that are not Python names of ours or of a dependency: Spark's and Hadoop's
#: settings, Parquet columns (`scopeDetails.activity.id`), msgspec (considered, not
#: installed), file names
_NOT_NAMES = re.compile(
    r"^(?:spark\.|fs\.|request\.|hadoop|scopeDetails\.|msgspec\.|\.|[\w-]+\.(?:json|toml|parquet|db)$)"
)


def dotted_names(path: Path) -> Iterator[tuple[str, str, list[str]]]:
    """(as written, the dotted name, the keywords it is shown with)."""
    for span in spans(path):
        match = _DOTTED.match(span)
        if not match or _NOT_NAMES.match(span) or _FILE.match(span):
            continue
        name = match.group("name").replace("/", ".")
        keywords = re.findall(r"(\w+)=", match.group("args") or "")
        if "." in name or keywords:  # a bare name only with keywords: `build_catalog(pause=…)`
            yield span, name, keywords


def dotted_problem(name: str, keywords: list[str]) -> str | None:
    logger = name.startswith("nextoffer.") and f'getLogger("{name}")' in source_text()
    if table_column(name) or logger:
        return None
    found = candidates(name)
    if not found:
        return "does not resolve"
    if keywords and not any(takes(obj, keywords) for obj in found):
        return f"takes no {keywords}"
    return None


def takes(obj: Any, keywords: list[str]) -> bool:
    """Whether ``obj`` is a callable with parameters of these names (or one whose signature
    cannot be read)."""
    try:
        params = inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return True
    return all(k in params for k in keywords)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_dotted_name_the_doc_shows_resolves(doc: Path) -> None:
    wrong = {
        written: problem
        for written, name, keywords in dotted_names(doc)
        if (problem := dotted_problem(name, keywords))
    }
    assert wrong == {}


# -- names in the source -------------------------------------------------------------------

#: CamelCase (`CountersElsewhere`), snake_case with an underscore (`plan_batch`, a table,
#: a column, a field) and constants (`FOLD_EVENTS`): names that only the code can make true
_CODE_NAME = re.compile(
    r"^(?P<name>_?[A-Z][a-z0-9]+(?:[A-Z][a-z0-9]*)+|_?[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+"
    r"|_?[a-z][a-z0-9]*(?:_[a-z0-9]+)+)(?:\(.*\))?$"
)
#: code-like names a doc gives that are another project's, not ours
_THEIRS = {
    # libraries and tools: what nextoffer uses or chose not to use
    "SortedList",
    "BayesianRidge",
    "AsyncConnection",
    "SessionCSRF",
    "LRUCache",
    "ImportWarning",
    "BlockingConnectionPool",
    "ThreadPoolExecutor",
    "pack_commands",
    "send_packed_command",
    "read_response",
    "ensure_connection",
    "wrap_future",
    "call_soon_threadsafe",
    "call_soon",
    "call_later",
    "lru_cache",
    "thread_time",
    "getsizeof",
    "popitem",
    "mapInArrow",
    "json_each",
    "pg_current_xact_id",
    "pg_snapshot_xmin",
    "mmap_size",
    "cache_size",
    "maxmemory_policy",
    "psycopg_pool",
    "cb_explore_adf",
    "moto_server",
    "openjdk_17_jre_headless",
    "PIPE_BUF",
    "PYTHONUNBUFFERED",
    "SCRIPT_FLUSH",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "HADOOP_HOME",
    "SPARK_HOME",
    "PYSPARK_SUBMIT_ARGS",
    "UNION_ALL",
    "FOR_UPDATE",
    "GET",
    "POST",
    "DELETE",
    "PUT",
    "PATCH",
}


@cache
def source_text() -> str:
    """nextoffer's source, SQL, JSON, templates and script, as one text."""
    suffixes = (".py", ".sql", ".json", ".html", ".js")
    return "\n".join(f.read_text() for f in sorted(SRC.rglob("*")) if f.suffix in suffixes)


@cache
def source_words() -> frozenset[str]:
    return frozenset(re.findall(r"\w+", source_text()))


def code_names(path: Path) -> set[str]:
    found = set()
    for span in spans(path):
        match = _CODE_NAME.match(span)
        if match and match.group("name") not in _THEIRS and not span.startswith("NEXTOFFER_"):
            found.add(match.group("name"))
    return found


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_code_name_the_doc_gives_is_in_the_source(doc: Path) -> None:
    assert sorted(code_names(doc) - source_words()) == []


# -- constants and settings shown with their value -----------------------------------------

#: `FOLD_EVENTS` (4,096), `LOOP_CONNECTIONS` (4), `BUILD_STEP` (0.1 ms),
#: `NEXTOFFER_SNAPSHOT_WAIT_SECONDS` (5 s), `NEXTOFFER_BATCH_STALL_SECONDS`, 3600
_VALUED = re.compile(
    r"`(?P<name>[A-Z][A-Z0-9_]+)`(?: \(|, )(?P<value>[\d,.]+)(?: (?P<unit>ms|s|µs)\b)?"
)
_UNITS = {None: 1.0, "s": 1.0, "ms": 1e-3, "µs": 1e-6}


def valued_names(path: Path) -> Iterator[tuple[str, float]]:
    text = " ".join(_FENCE.sub("", path.read_text()).split())
    for match in _VALUED.finditer(text):
        value = float(match.group("value").replace(",", "").rstrip("."))
        yield match.group("name"), value * _UNITS[match.group("unit")]


def actual_value(name: str) -> float | None:
    """A constant of ours by that name, or a setting's default; None if neither."""
    if name.startswith("NEXTOFFER_"):
        plain = Settings()
        for value in ("7", "1", "0"):
            changed = _changed_fields(name, value, plain)
            if changed:
                return float(getattr(plain, changed[0]))
        return None
    values = {vars(m)[name] for m in modules().values() if name in vars(m)}
    return float(values.pop()) if len(values) == 1 else None


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_constant_the_doc_gives_a_value_has_it(doc: Path) -> None:
    shown = list(valued_names(doc))
    wrong = [(n, v, actual_value(n)) for n, v in shown if actual_value(n) != pytest.approx(v)]
    assert wrong == []


def test_design_md_gives_constants_values_the_check_reads() -> None:
    shown = dict(valued_names(ROOT / "docs" / "design.md"))
    assert {"FOLD_EVENTS", "LOOP_CONNECTIONS", "BUILD_STEP"} <= set(shown)


# -- dependencies --------------------------------------------------------------------------


def requirement_name(requirement: str) -> str:
    return re.split(r"[\[<>=!~ ;]", requirement, maxsplit=1)[0].lower()


def dependencies() -> dict[str, set[str]]:
    """Each group of pyproject.toml (``runtime`` and each extra) → the distributions it
    names (nextoffer's own extras left out)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    groups = {"runtime": project["dependencies"], **project["optional-dependencies"]}
    return {
        group: {requirement_name(r) for r in reqs if not r.startswith("nextoffer")}
        for group, reqs in groups.items()
    }


def dependency_section() -> str:
    text = (ROOT / "docs" / "design.md").read_text()
    return text.split("## Dependencies, and why each", 1)[1].split("\n## ", 1)[0]


def named_in(section: str) -> set[str]:
    return {requirement_name(n) for n in re.findall(r"\*\*([\w.\[\]-]+)\*\*", section)}


def test_design_md_says_why_of_every_dependency() -> None:
    groups = dependencies()
    section = named_in(dependency_section())
    assert groups["runtime"] - section == set()
    every = set().union(*groups.values())
    assert every - {"types-jsonschema", "types-wtforms"} - section == set()


def test_design_md_names_no_dependency_that_is_gone() -> None:
    every = set().union(*dependencies().values())
    assert named_in(dependency_section()) - every == set()


# -- the traces of a request ---------------------------------------------------------------


def traces() -> list[str]:
    """design.md's blocks that trace a request file by file (a decision, the Edge's)."""
    text = (ROOT / "docs" / "design.md").read_text()
    return [
        m.group(2) for m in _FENCE.finditer(text) if re.search(r"^\s*(?:→ )?api/", m.group(2), re.M)
    ]


def trace_problems(trace: str) -> list[str]:
    """What the trace gets wrong: a file that is not there, a name not in the file on its
    line (``Attempt``, ``NextOffer.decide_async``), a call shown with a parameter its
    function does not take (``decide(catalog, request, counters, now, rng)``)."""
    problems = []
    module: ModuleType | None = None
    for line in trace.splitlines():
        path = re.search(r"(\w+(?:/\w+)*\.py)", line)
        if path:
            if not (SRC / path.group(1)).is_file():
                problems.append(f"no file {path.group(1)}")
                continue
            module = modules()["nextoffer." + path.group(1).removesuffix(".py").replace("/", ".")]
        if module is None:
            continue
        for call, args in re.findall(r"\b([a-z_]\w*)\(([\w, ]*)\)", line):
            function = getattr(module, call, None)
            if not callable(function):
                problems.append(f"no {call} in {module.__name__}")
                continue
            params = list(inspect.signature(function).parameters)
            shown = [a.strip() for a in args.split(",") if a.strip()]
            if [p for p in params if p in shown] != shown:
                problems.append(f"{call}({', '.join(params)}) is not shown as {call}({args})")
        for name in re.findall(r"\b([A-Z]\w*\.\w+|[A-Z][a-z]+[A-Z]\w*)", line):
            if not has_member(module, name.split(".")[0])[0] or not resolve(name)[0]:
                problems.append(f"no {name} in {module.__name__}")
    return problems


def test_the_traces_follow_the_code() -> None:
    found = traces()
    assert any("api/routes/ode.py" in trace for trace in found)
    assert any("api/routes/edge.py" in trace for trace in found)
    assert {trace.split()[0]: trace_problems(trace) for trace in found} == {
        trace.split()[0]: [] for trace in found
    }


# -- the root's use cases ------------------------------------------------------------------


def root_paragraph() -> str:
    """design.md's paragraph on what the root offers: "Its methods are … its attributes …"."""
    text = (ROOT / "docs" / "design.md").read_text()
    return (
        text.split("## One composition root", 1)[1].split("Its methods are", 1)[1].split("\n\n")[0]
    )


def test_design_md_names_what_the_root_holds_and_nothing_it_lacks() -> None:
    from nextoffer.root import NextOffer

    named = set(re.findall(r"`(\w+)", root_paragraph()))
    assert sorted(set(NextOffer.__annotations__) - named) == []
    assert sorted(n for n in named if not has_member(NextOffer, n)[0]) == []


# -- batch.md: error codes and the messages it quotes --------------------------------------


def batch_error_codes() -> set[str]:
    """Every ``code`` a batch job's ``errors[]`` can carry, as the code writes them."""
    source = "\n".join(f.read_text() for f in (SRC / "service" / "batch").glob("*.py"))
    return set(re.findall(r'(?:"code": |code = |code, message = )"(\w+)"', source))


def test_batch_md_names_every_error_code_of_a_job() -> None:
    codes = batch_error_codes()
    assert {"cancelled", "runnerLost"} <= codes
    text = (ROOT / "docs" / "batch.md").read_text()
    assert sorted(c for c in codes if f"`{c}`" not in text) == []


@cache
def source_tokens() -> list[str]:
    """nextoffer's Python source as words, its string literals joined where Python joins
    them and each ``{…}`` or ``%s`` placeholder of a message written as ``\x00``."""
    python = "\n".join(f.read_text() for f in sorted(SRC.rglob("*.py")))
    text = re.sub(r'"\s*\n\s*[rbf]*"', "", python)
    text = re.sub(r"\{[^{}\n]*\}|%[sdr]", "\x00", text)
    return [_bare(re.sub(r"""^(?:[\w.]*\()?[rbf]*["']""", "", t)) for t in text.split()]


def _bare(word: str) -> str:
    """A word without the punctuation that may end it in a sentence or a literal."""
    return re.sub(r"""["'),.:;]+$""", "", word)


_VARIES = re.compile(r"^\(?[\d,.]+\)?$|^N$|://")


def _matches(doc: list[str], src: list[str], i: int, need: int) -> bool:
    """Whether the doc's words are the source's from ``i`` on, a placeholder standing for
    one to three of them (a number, ``N`` or a URL for a word with a digit), with ``need``
    of them still to be matched as they are written."""
    if not doc:
        return need <= 0
    if i >= len(src):
        return False
    word = src[i]
    if "\x00" in word:
        head, _, tail = word.partition("\x00")
        tail = tail.replace("\x00", "")
        return any(
            doc[0].startswith(head)
            and doc[n - 1].endswith(tail)
            and _matches(doc[n:], src, i + 1, need)
            for n in range(1, min(3, len(doc)) + 1)
        )
    if _VARIES.search(doc[0]) and word.strip("()") != doc[0].strip("()"):
        return bool(re.search(r"\d", word)) and _matches(doc[1:], src, i + 1, need)
    return word == doc[0] and _matches(doc[1:], src, i + 1, need - 1)


def in_source(piece: str) -> bool:
    """Whether the code writes ``piece`` (two thirds of its words as they are)."""
    words = [_bare(word) for word in piece.split()]
    src = source_tokens()
    need = -(-2 * len(words) // 3)
    return any(
        _matches(words, src, i, need)
        for i in range(len(src))
        if src[i] == words[0] or "\x00" in src[i]
    )


@cache
def section_titles() -> frozenset[str]:
    """The section names of every doc, which a doc quotes when it refers to one."""
    docs = [*ALL_DOCS, ROOT / "docs" / "benchmarks.md"]
    return frozenset(title for doc in docs for title in sections(doc))


def quoted_messages(path: Path) -> list[str]:
    """The pieces (between "…") of each message the doc quotes: a quotation of four words
    or more that is not one of our docs' section names."""
    text = re.sub(r"`[^`]*`", "", " ".join(_FENCE.sub("", path.read_text()).split()))
    found = []
    for quote in re.findall(r'"([^"]+)"', text):
        if len(quote.split()) < 4 or any(t.startswith(_plain(quote)) for t in section_titles()):
            continue
        found += [p.strip() for p in quote.split("…") if len(p.split()) >= 3]
    return found


def test_every_message_batch_md_quotes_is_the_code_s() -> None:
    quoted = quoted_messages(ROOT / "docs" / "batch.md")
    assert len(quoted) >= 6
    assert [piece for piece in quoted if not in_source(piece)] == []


# -- the layers ----------------------------------------------------------------------------


def layer_contract() -> list[set[str]]:
    """pyproject.toml's layers, top first: each a set of sibling packages."""
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (layers,) = [c for c in tool["contracts"] if c["type"] == "layers"]
    return [
        {p.strip().removeprefix("nextoffer.") for p in layer.split("|")}
        for layer in layers["layers"]
    ]


def layer_diagram() -> str:
    text = (ROOT / "docs" / "design.md").read_text().split("## Layers", 1)[1]
    return next(m.group(2) for m in _FENCE.finditer(text))


def diagram_problems(diagram: str, layers: list[set[str]]) -> list[str]:
    """A package of the contract the diagram leaves out, or an arrow against its order."""
    rank = {package: n for n, layer in enumerate(layers) for package in layer}
    problems = [f"{p} not drawn" for p in rank if not re.search(rf"\b{p}\b", diagram)]
    for line in diagram.splitlines():
        chain = [w for w in re.findall(r"[a-z]+", line.split("(")[0]) if w in rank]
        if "→" in line:
            problems += [f"{a} → {b}" for a, b in itertools.pairwise(chain) if rank[a] >= rank[b]]
    return problems


def test_the_layer_diagram_is_the_contract() -> None:
    assert diagram_problems(layer_diagram(), layer_contract()) == []


# -- sizes -------------------------------------------------------------------------------

#: (`static/console.js`, ~290 lines), (`charts.py`, ~140 lines: …)
_SIZED = re.compile(r"`([\w/]+\.(?:py|js))`, ~(\d+) lines")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_size_the_doc_gives_a_file_is_near_its_own(doc: Path) -> None:
    text = " ".join(doc.read_text().split())
    sized = [(name, int(lines)) for name, lines in _SIZED.findall(text)]
    actual = {
        name: len(next(SRC.rglob(Path(name).name)).read_text().splitlines()) for name, _ in sized
    }
    assert [(n, said, actual[n]) for n, said in sized if abs(actual[n] - said) > said * 0.15] == []


# -- migrations ----------------------------------------------------------------------------


def migrations_named(path: Path) -> set[str]:
    """The migrations the doc names: `0008_fts_writes`, migration `0020`."""
    return {span for span in spans(path) if re.fullmatch(r"\d{4}(?:_\w+)?", span)}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_migration_the_doc_names_exists(doc: Path) -> None:
    versions = SRC / "storage" / "migrations" / "versions"
    named = migrations_named(doc)
    assert sorted(m for m in named if not list(versions.glob(f"{m}*.py"))) == []


# -- figures -------------------------------------------------------------------------------

#: a measured figure: a time (µs, ms), a ratio (0.3×, 10x) or a share (11 %)
_FIGURE = re.compile(r"\d[\d.,]*\s?(?:µs|ms)\b|\d[\d.]*×|\b\d+(?:\.\d+)?x\b|\d+(?:\.\d+)?\s?%")
#: where a figure's measurement is: the benchmarks' record, a bench/ script, a command
_MEASURED = re.compile(r"benchmarks\.md|`bench/|`(?:\.venv/bin/)?python ")


def unsourced_figures(path: Path) -> list[str]:
    """The paragraphs (and list items) of a doc that give a figure without saying where it
    was measured."""
    text = _FENCE.sub("", path.read_text())
    paragraphs = re.split(r"\n\s*\n|\n(?=[-*] )", text)
    return [
        " ".join(p.split())[:80]
        for p in paragraphs
        if _FIGURE.search(p) and not _MEASURED.search(p)
    ]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_figure_says_where_it_was_measured(doc: Path) -> None:
    assert unsourced_figures(doc) == []


# -- threads -------------------------------------------------------------------------------


def thread_names_in_code() -> set[str]:
    """The name each thread of nextoffer is given, its variable part as ``<…>``: a thread's
    ``name=`` and a pool's ``thread_name_prefix``."""
    text = source_text()
    named = set(re.findall(r'(?<!\w)name=f?"(nextoffer[-\w]*(?: ?\{[^}]*\}|-\{[^}]*\})?)"', text))
    prefixes = set(re.findall(r'thread_name_prefix="([^"]+)"', text))
    return {re.sub(r"\{[^}]*\}", "<>", n) for n in named} | {f"{p}_<>" for p in prefixes}


def thread_names_in_design_md() -> set[str]:
    text = (ROOT / "docs" / "design.md").read_text()
    section = text.split("**Threads, by name**", 1)[1].split("\n\n", 2)[1]
    spans = re.findall(r"`(nextoffer[-_][^`]*)`", section)
    return {re.sub(r"<[^>]*>|(?<=_)[N0]$", "<>", span) for span in spans}


def test_design_md_lists_every_thread_by_its_name() -> None:
    assert thread_names_in_code() == thread_names_in_design_md()


def test_design_md_names_every_method_of_the_counter_interface() -> None:
    from nextoffer.storage.counters import CapCounterStore

    text = (ROOT / "docs" / "design.md").read_text()
    paragraph = text.split("**Counters behind one interface**", 1)[1].split("\n\n", 1)[0]
    named = set(re.findall(r"`(\w+)`", paragraph))
    members = {n for n in dir(CapCounterStore) if not n.startswith("_")}
    members |= {n for n in CapCounterStore.__annotations__ if not n.startswith("_")}
    assert sorted(members - named) == []


def test_design_md_names_every_coroutine_of_a_path_on_a_loop() -> None:
    from nextoffer.storage.decision_path import OnLoop

    text = " ".join((ROOT / "docs" / "design.md").read_text().split())
    listed = re.search(r"\(`OnLoop`: ([^)]*)\)", text)
    assert listed is not None
    named = set(re.findall(r"`(\w+)`", listed.group(1)))
    assert named == {n for n in dir(OnLoop) if not n.startswith("_")}
