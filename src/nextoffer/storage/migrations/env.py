"""Alembic's entry point: runs the revisions on the connection ``migrations`` hands it.

Offline mode (``--sql``) is not supported: revisions look at the database they migrate
(the first one adopts databases made before migrations existed).
"""

from __future__ import annotations

from alembic import context

from nextoffer.storage import search_index, tables

# The search index's tables sit on the same metadata; the import registers them.
assert search_index.search_values.metadata is tables.metadata

connection = context.config.attributes.get("connection")
if context.is_offline_mode() or connection is None:
    raise RuntimeError(
        "nextoffer migrations run through `nextoffer db` or Store.open, on a connection"
    )

context.configure(
    connection=connection,
    target_metadata=tables.metadata,
    # SQLite cannot ALTER most things in place; batch mode copies the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
