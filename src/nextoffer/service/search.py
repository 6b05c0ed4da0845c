"""Listing and searching a container's instances: tenancy check and query, one read.

A container of another org or sandbox answers 404 exactly like a missing one (through
``Repository.container``); the query runs in the same read transaction.
"""

from __future__ import annotations

from nextoffer.repository.query import ListQuery
from nextoffer.service.auth import Principal
from nextoffer.service.repository import Repository
from nextoffer.storage import search, search_index
from nextoffer.storage.search import Page
from nextoffer.storage.search_postgres import dialect_for
from nextoffer.storage.store import Store

#: ``Page`` is what a search answers with (routes take it from here).
__all__ = ["Page", "Search"]


class Search:
    def __init__(self, store: Store, repository: Repository) -> None:
        self._store = store
        self._repository = repository
        search.install(store.engine)

    def find(self, principal: Principal, container_id: str, query: ListQuery) -> Page:
        search_index.ensure_current(self._store.engine)
        with self._store.session() as session:
            self._repository.container(session, principal, container_id)
            return search.find(session.conn, container_id, query, dialect=dialect_for(session.conn))
