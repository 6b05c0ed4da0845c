"""The relational schema, in SQLAlchemy Core, shared by every SQL backend.

Times are stored twice where they are sorted or filtered on: as the RFC 3339 text the
API returns and as integer epoch microseconds for ordering and range queries.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    literal_column,
)
from sqlalchemy.sql.elements import ColumnElement

metadata = MetaData()

#: The schema changes through migrations (``storage/migrations``), which also write this
#: version into ``schema_info``: nextoffer 0.1 read it instead of Alembic's revision and
#: refuses a version above 1, so an old binary cannot run on a migrated schema.
SCHEMA_VERSION = 2

schema_info = Table(
    "schema_info",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("version", Integer, nullable=False),
)

orgs = Table(
    "orgs",
    metadata,
    Column("org_id", String(255), primary_key=True),
    Column("created", String(32), nullable=False),
)

sandboxes = Table(
    "sandboxes",
    metadata,
    Column("org_id", String(255), ForeignKey("orgs.org_id"), nullable=False),
    Column("name", String(255), nullable=False),
    Column("created", String(32), nullable=False),
    PrimaryKeyConstraint("org_id", "name"),
)

containers = Table(
    "containers",
    metadata,
    Column("container_id", String(36), primary_key=True),
    Column("org_id", String(255), nullable=False),
    Column("sandbox", String(255), nullable=False),
    Column("container_type", String(64), nullable=False),
    Column("name", String(255), nullable=False),
    Column("product_contexts", Text, nullable=False),  # JSON array
    Column("etag", Integer, nullable=False),
    Column("created", String(32), nullable=False),
    Column("modified", String(32), nullable=False),
    Column("created_by", String(255), nullable=False),
    Column("modified_by", String(255), nullable=False),
    Column("created_client", String(255), nullable=False),
    Column("modified_client", String(255), nullable=False),
    #: +1 on every instance write in the container: the compiled catalog's version.
    Column("library_version", BigInteger, nullable=False, default=0),
    Index("ix_containers_tenant", "org_id", "sandbox"),
)

api_clients = Table(
    "api_clients",
    metadata,
    Column("client_id", String(255), primary_key=True),
    Column("org_id", String(255), nullable=False),
    Column("created", String(32), nullable=False),
)

client_sandboxes = Table(
    "client_sandboxes",
    metadata,
    Column("client_id", String(255), ForeignKey("api_clients.client_id"), nullable=False),
    Column("sandbox", String(255), nullable=False),
    PrimaryKeyConstraint("client_id", "sandbox"),
)

signing_keys = Table(
    "signing_keys",
    metadata,
    Column("kid", String(64), primary_key=True),
    Column("secret", String(128), nullable=False),
    Column("created", String(32), nullable=False),
)

instances = Table(
    "instances",
    metadata,
    Column("instance_id", String(36), primary_key=True),
    Column("container_id", String(36), nullable=False),
    Column("schema_id", String(255), nullable=False),  # versionless
    Column("at_id", String(64), nullable=False),
    Column("name", Text),  # xdm:name (or name), for lookups and sorting
    Column("etag", Integer, nullable=False),
    Column("created", String(32), nullable=False),
    Column("modified", String(32), nullable=False),
    Column("created_us", BigInteger, nullable=False),
    Column("modified_us", BigInteger, nullable=False),
    Column("created_by", String(255), nullable=False),
    Column("modified_by", String(255), nullable=False),
    Column("created_client", String(255), nullable=False),
    Column("modified_client", String(255), nullable=False),
    Column("body", Text, nullable=False),  # the _instance object, JSON
    UniqueConstraint("container_id", "at_id", name="uq_instances_at_id"),
    Index("ix_instances_schema", "container_id", "schema_id", "instance_id"),
    Index("ix_instances_created", "container_id", "schema_id", "created_us"),
    Index("ix_instances_modified", "container_id", "schema_id", "modified_us"),
)
#: Characters of a string PostgreSQL's indexes hold: a b-tree entry holds at most 2,704
#: bytes, and these first characters at most 800 (migration ``0018_search_text_prefix``).
#: The rest is compared on the row; SQLite indexes whole strings.
TEXT_PREFIX = 200


def indexed_prefix(column: ColumnElement[Any]) -> ColumnElement[Any]:
    """``left(column, 200)``, as PostgreSQL's indexes hold it (the length written out, not
    bound: an index on an expression serves only that expression)."""
    return func.left(column, literal_column(str(TEXT_PREFIX)))


_n = instances.c
Index("ix_instances_name", _n.container_id, _n.schema_id, _n.name).ddl_if(dialect="sqlite")
Index("ix_instances_name_prefix", _n.container_id, _n.schema_id, indexed_prefix(_n.name)).ddl_if(
    dialect="postgresql"
)

#: Every write of an instance (issue 19): the body written, by whom, when. ``revision`` is
#: the etag the write produced (a delete: one past the last), so a history reads in order.
instance_revisions = Table(
    "instance_revisions",
    metadata,
    Column("container_id", String(36), nullable=False),
    Column("instance_id", String(36), nullable=False),
    Column("revision", Integer, nullable=False),
    Column("action", String(16), nullable=False),  # create | update | delete
    Column("schema_id", String(255), nullable=False),
    Column("at_id", String(64), nullable=False),
    Column("modified", String(32), nullable=False),
    Column("modified_us", BigInteger, nullable=False),
    Column("modified_by", String(255), nullable=False),
    Column("modified_client", String(255), nullable=False),
    Column("body", Text, nullable=False),  # the _instance object as written, JSON
    #: The container's ``library_version`` after this write (issue 22, migration
    #: ``0009_change_seq``): what a snapshot refresh reads its changes by.
    Column("change_seq", BigInteger, nullable=False, server_default="0"),
    PrimaryKeyConstraint("container_id", "instance_id", "revision"),
    Index("ix_revisions_change_seq", "container_id", "change_seq"),
)

#: One row per reference from an instance to another ``@id`` in the same container.
instance_refs = Table(
    "instance_refs",
    metadata,
    Column("container_id", String(36), nullable=False),
    Column("from_instance_id", String(36), nullable=False),
    Column("to_at_id", String(64), nullable=False),
    PrimaryKeyConstraint("from_instance_id", "to_at_id"),
    Index("ix_instance_refs_target", "container_id", "to_at_id"),
)

#: How many instances of each schema a container holds (the guardrail totals read it).
instance_counts = Table(
    "instance_counts",
    metadata,
    Column("container_id", String(36), nullable=False),
    Column("schema_id", String(255), nullable=False),
    Column("count", Integer, nullable=False),
    PrimaryKeyConstraint("container_id", "schema_id"),
)

# -- the runtime: profiles, their events, decisions and cap counters ------------------

# ``profiles`` and ``profile_identities`` are read by key on every decision: on SQLite
# they keep their rows in the key's b-tree (``WITHOUT ROWID``), so a lookup reads one
# b-tree, not the key's index and then the rows (``0016_clustered_profiles``).

profiles = Table(
    "profiles",
    metadata,
    Column("profile_id", String(36), primary_key=True),
    Column("org_id", String(255), nullable=False),
    Column("sandbox", String(255), nullable=False),
    Column("attributes", Text, nullable=False),  # JSON object
    Column("created", String(32), nullable=False),
    Column("modified", String(32), nullable=False),
    sqlite_with_rowid=False,
)

#: Each (namespace, id) names at most one profile of a tenant.
profile_identities = Table(
    "profile_identities",
    metadata,
    Column("org_id", String(255), nullable=False),
    Column("sandbox", String(255), nullable=False),
    Column("namespace", String(255), nullable=False),
    Column("identity", String(1024), nullable=False),
    Column("profile_id", String(36), nullable=False),
    PrimaryKeyConstraint("org_id", "sandbox", "namespace", "identity"),
    Index("ix_profile_identities_profile", "profile_id"),
    sqlite_with_rowid=False,
)

experience_events = Table(
    "experience_events",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("org_id", String(255), nullable=False),
    Column("sandbox", String(255), nullable=False),
    Column("profile_id", String(36), nullable=False),
    #: The event's own ``_id``/``@id``; a second event with the same id is a duplicate.
    Column("event_id", String(255), nullable=False),
    Column("event_type", String(255)),
    Column("timestamp", String(40), nullable=False),
    Column("timestamp_us", BigInteger, nullable=False),
    Column("body", Text, nullable=False),
    UniqueConstraint("org_id", "sandbox", "event_id", name="uq_experience_events_id"),
    Index("ix_experience_events_profile", "profile_id", "timestamp_us"),
    #: The oldest first, for retention (``Runtime.prune_experience_events``).
    Index("ix_experience_events_time", "timestamp_us"),
)

decision_events = Table(
    "decision_events",
    metadata,
    Column("proposition_id", String(36), nullable=False),
    Column("container_id", String(36), nullable=False),
    Column("created", String(32), nullable=False),
    Column("created_us", BigInteger, nullable=False),
    Column("profile_key", String(1100)),
    Column("body", Text, nullable=False),  # JSON: identity, request id, propositions
    #: The event's place in commit order, which the offers report is folded in
    #: (``report_fold.py``), and its key (``0017_event_seq_key``): PostgreSQL's identity;
    #: on SQLite ``INTEGER``, so the rowid itself (the table's largest + 1 on insert) and
    #: the rows' own b-tree is in commit order, with no index of its own.
    Column("seq", BigInteger().with_variant(Integer(), "sqlite"), Identity(), primary_key=True),
    #: The offers it proposed (a JSON array): what the fold adds to the offers report.
    Column("offers", Text, nullable=False, server_default="[]"),
    UniqueConstraint("proposition_id", name="uq_decision_events_proposition"),
    Index("ix_decision_events_container", "container_id", "created_us"),
)

#: Decision events to delete for a deleted profile: those recorded in its org and
#: sandbox's containers under ``profile_key`` (its id, or one of its identities' scope) up
#: to ``until_seq``, the last event when it was deleted. A pass walks the events by place
#: from ``cursor_seq`` (``Erasures.erase_decision_events``); the row goes at ``until_seq``.
profile_erasures = Table(
    "profile_erasures",
    metadata,
    Column("profile_key", String(1100), nullable=False),
    Column("org_id", String(255), nullable=False),
    Column("sandbox", String(255), nullable=False),
    Column("until_seq", BigInteger, nullable=False),
    Column("cursor_seq", BigInteger, nullable=False),
    Column("requested", String(32), nullable=False),
    PrimaryKeyConstraint("profile_key", "org_id", "sandbox"),
    Index("ix_profile_erasures_cursor", "cursor_seq"),
)

#: Cap counters to delete for a deleted profile: those of its org and sandbox's containers
#: counting under ``scope`` (its id, or one of its identities' scope: the identity's own
#: text). A pass walks the counters once for all that are due (``service/retention.py``);
#: a profile id's is due once decisions from other processes' caches have settled.
counter_erasures = Table(
    "counter_erasures",
    metadata,
    Column("scope", String(1100), nullable=False),
    Column("org_id", String(255), nullable=False),
    Column("sandbox", String(255), nullable=False),
    Column("requested", String(32), nullable=False),
    PrimaryKeyConstraint("scope", "org_id", "sandbox"),
)

#: How far each derived table is folded from ``decision_events``: every event with
#: ``seq <= position`` is counted in it, none above (``report_fold.py``).
report_folds = Table(
    "report_folds",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("position", BigInteger, nullable=False),
)

#: The profiles' change sequence (``0011_profile_seq``): one row, bumped by every
#: transaction that changes or deletes profiles (its last statement: the row lock queues
#: such transactions, so they commit in the order of their numbers), and the profiles each
#: number changed. Nodes follow it to drop what their profile cache holds of those
#: profiles (``service/profile_cache.py``); rows older than a few minutes are trimmed.
profile_seq = Table(
    "profile_seq",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("seq", BigInteger, nullable=False),
)
profile_changes = Table(
    "profile_changes",
    metadata,
    Column("seq", BigInteger, nullable=False),
    Column("profile_id", String(36), nullable=False),
    Column("changed_us", BigInteger, nullable=False),
    Index("ix_profile_changes_seq", "seq"),
    Index("ix_profile_changes_changed", "changed_us"),
)

#: Cap counters: one row per counter key (offer, rule, placement, scope, period), see
#: ``nextoffer.storage.counters``.
cap_counters = Table(
    "cap_counters",
    metadata,
    Column("counter_key", String(1400), primary_key=True),
    Column("container_id", String(36), nullable=False),
    Column("count", BigInteger, nullable=False),
)

#: Containers whose cap counters Redis holds (``serve --redis``), since their first count
#: there. Redis keeps a marker key beside each one's counters; a marker missing for a
#: container listed here means Redis lost them (``storage/redis_markers.py``).
redis_counter_markers = Table(
    "redis_counter_markers",
    metadata,
    Column("container_id", String(36), primary_key=True),
    Column("placed", String(32), nullable=False),
)

#: Per offer and UTC day: propositions, impressions, clicks (the offers report).
offer_daily = Table(
    "offer_daily",
    metadata,
    Column("container_id", String(36), nullable=False),
    Column("day", String(10), nullable=False),  # YYYY-MM-DD
    Column("offer_id", String(64), nullable=False),
    Column("propositions", BigInteger, nullable=False, default=0),
    Column("impressions", BigInteger, nullable=False, default=0),
    Column("clicks", BigInteger, nullable=False, default=0),
    PrimaryKeyConstraint("container_id", "day", "offer_id"),
)

#: When an offer's counting restarts (its new start date is after its old end date, spec
#: decisioning-api §5.2), its epoch moves on and its counters start from zero.
cap_epochs = Table(
    "cap_epochs",
    metadata,
    Column("container_id", String(36), nullable=False),
    Column("offer_id", String(64), nullable=False),
    Column("epoch", Integer, nullable=False),
    PrimaryKeyConstraint("container_id", "offer_id"),
)

# -- ranking strategies: what they learned (``storage/ranking.py``) -------------------

#: Per container: +1 on every transaction that adds to ``ranking_stats`` (in commit order:
#: the increment takes this row's lock), so a process reads only what changed.
ranking_state = Table(
    "ranking_state",
    metadata,
    Column("container_id", String(36), primary_key=True),
    Column("version", BigInteger, nullable=False),
)

#: A strategy's sufficient statistics per offer: cell (row, col) of ``A = Σ x xᵀ`` (upper
#: triangle) or, with ``col = -1``, of ``b = Σ r x`` (``engine/strategy.py``). ``version``
#: is the ``ranking_state`` version of the last transaction that added to the cell.
ranking_stats = Table(
    "ranking_stats",
    metadata,
    Column("container_id", String(36), nullable=False),
    Column("strategy_id", String(64), nullable=False),
    Column("offer_id", String(64), nullable=False),
    Column("row", Integer, nullable=False),
    Column("col", Integer, nullable=False),
    Column("value", Float(precision=53), nullable=False),
    Column("version", BigInteger, nullable=False),
    PrimaryKeyConstraint("container_id", "strategy_id", "offer_id", "row", "col"),
    Index("ix_ranking_stats_version", "container_id", "version"),
)

#: Per strategy, UTC day, offer and whether the decision explored: impressions and
#: rewards (the ranking strategy report).
ranking_daily = Table(
    "ranking_daily",
    metadata,
    Column("container_id", String(36), nullable=False),
    Column("strategy_id", String(64), nullable=False),
    Column("day", String(10), nullable=False),
    Column("offer_id", String(64), nullable=False),
    Column("explored", Integer, nullable=False),
    Column("impressions", BigInteger, nullable=False),
    Column("clicks", BigInteger, nullable=False),
    PrimaryKeyConstraint("container_id", "strategy_id", "day", "offer_id", "explored"),
)

#: Each display and success a strategy has counted, one row per (proposition, the
#: proposition's position in its decision, offer, kind: 0 a display, 1 a success): a
#: Bernoulli trial per display, however often one is displayed or clicked. Inserted with
#: ON CONFLICT DO NOTHING in the transaction that stores the event; only a new row adds
#: to ``ranking_stats``. ``decided_us`` is the decision's time: ``Ranking.prune_trials``
#: deletes the rows of decisions past the decision events' retention by it.
ranking_trials = Table(
    "ranking_trials",
    metadata,
    Column("container_id", String(36), nullable=False),
    Column("proposition_id", String(36), nullable=False),
    Column("position", Integer, nullable=False),
    Column("offer_id", String(64), nullable=False),
    Column("kind", Integer, nullable=False),
    Column("decided_us", BigInteger, nullable=False),
    PrimaryKeyConstraint("container_id", "proposition_id", "position", "offer_id", "kind"),
    Index("ix_ranking_trials_decided", "decided_us"),
)

#: Datastreams (Adobe's ``configId``): the public key of the Edge endpoints, naming one
#: org, sandbox and decisioning container, the browser origins it serves and its rate.
datastreams = Table(
    "datastreams",
    metadata,
    Column("datastream_id", String(36), primary_key=True),
    Column("org_id", String(255), nullable=False),
    Column("sandbox", String(255), nullable=False),
    Column("container_id", String(36), nullable=False),
    Column("name", String(255), nullable=False),
    Column("allowed_origins", Text, nullable=False),  # JSON array of origins
    Column("rate_limit", Integer, nullable=False),  # requests per second
    Column("created", String(32), nullable=False),
    Column("modified", String(32), nullable=False),
    Index("ix_datastreams_tenant", "org_id", "sandbox"),
)

# -- batch decisioning: audiences, output datasets, jobs (issue 18) --------------------

#: Segment definitions (audiences), Adobe's Segmentation Service shape: a PQL expression.
segment_definitions = Table(
    "segment_definitions",
    metadata,
    Column("segment_id", String(36), primary_key=True),
    Column("org_id", String(255), nullable=False),
    Column("sandbox", String(255), nullable=False),
    Column("name", String(255), nullable=False),
    Column("body", Text, nullable=False),  # JSON: the definition as answered
    Column("created_ms", BigInteger, nullable=False),
    Column("modified_ms", BigInteger, nullable=False),
    Index("ix_segment_definitions_tenant", "org_id", "sandbox", "created_ms"),
)

#: Output datasets of batch jobs: a name and where their files are written.
datasets = Table(
    "datasets",
    metadata,
    Column("dataset_id", String(36), primary_key=True),
    Column("org_id", String(255), nullable=False),
    Column("sandbox", String(255), nullable=False),
    Column("name", String(255), nullable=False),
    Column("location", String(2048), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Index("ix_datasets_tenant", "org_id", "sandbox", "created_ms"),
)

#: Batch decisioning jobs (workloads): the request, the lifecycle and its progress.
batch_jobs = Table(
    "batch_jobs",
    metadata,
    Column("job_id", String(36), primary_key=True),
    Column("org_id", String(255), nullable=False),
    Column("sandbox", String(255), nullable=False),
    Column("container_id", String(36), nullable=False),
    Column("dataset_id", String(36), nullable=False),
    Column("segment_id", String(36), nullable=False),
    Column("engine", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("request", Text, nullable=False),  # JSON: the propositions, includeContent, form
    Column("detail", Text, nullable=False),  # JSON: progress, errors, output
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
    #: The running process's last sign of life (epoch ms), and who it is (host:pid).
    Column("heartbeat_ms", BigInteger),
    Column("owner", String(255)),
    Index("ix_batch_jobs_status", "status", "created_ms"),
    Index("ix_batch_jobs_dataset", "dataset_id", "status"),
    Index("ix_batch_jobs_tenant", "org_id", "sandbox", "created_ms"),
)

#: A Spark batch job's committed decisions, per profile: what each reserved (JSON
#: ``[[counter key, n], ...]``) and reported (its UTC day, the offers it proposed, JSON),
#: and which task attempt decided it (``storage/ledger.py``, ``DecisionLedger``). Written
#: in the reservation's own transaction; a job's rows go when its Spark run ends.
batch_decisions = Table(
    "batch_decisions",
    metadata,
    Column("job_id", String(36), primary_key=True),
    Column("profile_id", String(36), primary_key=True),
    Column("attempt", String(32), nullable=False),
    Column("day", String(10), nullable=False),
    Column("offers", Text, nullable=False),
    Column("reserved", Text, nullable=False),
    sqlite_with_rowid=False,
)

#: Batch jobs scan a tenant's profiles in key order.
Index("ix_profiles_tenant", profiles.c.org_id, profiles.c.sandbox, profiles.c.profile_id)
