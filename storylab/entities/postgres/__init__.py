"""The entity graph on a PostgreSQL server, for several hosts sharing one graph.

Open it like a SQLite graph, with a URL instead of a path:
``EntityGraph.open("postgresql://user@host/db")`` (or :func:`open_graph`),
``storylab run --graph postgresql://...``, ``storylab eg --graph ...``. The
driver (psycopg 3, the ``storylab[postgres]`` extra) is imported only when
such a graph is opened.

The store (:mod:`storylab.entities.postgres.store`) is its own
implementation of :class:`~storylab.entities.store.EntityStore` on psycopg's
async API (:mod:`storylab.entities.postgres.core`), keeping every promise of
that interface the way a server can:

* no graph-wide write lock: a transaction locks what it decides about, a
  node's row before its lease is read or changed, one name under one parent
  before it is looked up and created, each held to the commit, so processes
  writing different stories never wait for each other;
* names are unique under a parent by a ``UNIQUE`` index, and a name being
  created is locked until its commit, so two hosts creating the same root
  get one node (the second waits for the first and gets its node; a batch
  never waits for a name, or an idle node's row, while it holds others: it
  commits them first, so batches writing in opposite orders never wait for
  each other); the
  children of a node leased here are named by the lease's holder alone,
  without a statement, and inserted at a commit that fences that lease;
* leases carry a token, every write under one is fenced by it, a claim never
  waits for a row another process is writing (it is "busy" and polled
  instead), and the heartbeat renews leases in a short transaction of its
  own, awaited on the caller's loop;
* operations share a transaction and many ends share one commit; a result is
  handed on only once that commit returned (``synchronous_commit`` is the
  server's: on by default, so "committed" means on the server's disk);
* binary outputs go to a ``blobs`` table (``bytea``), committed before their
  key is stored anywhere, so a picture drawn on one host is read on another;
* the schema has a version (table ``storylab_meta``), older ones are upgraded
  in one transaction, a newer one is refused;
* a server that is down, credentials that are refused, a newer schema: each
  is one line, and no message carries the password.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from storylab.entities.postgres.url import is_server_url

if TYPE_CHECKING:
    from storylab.entities.postgres.store import PostgresGraph

__all__ = ["is_server_url", "open_graph"]


def open_graph(url: str, **options: Any) -> PostgresGraph:
    """Open (creating its tables if needed) the graph at a ``postgresql://`` URL.

    Takes the options of :meth:`EntityGraph.open <storylab.entities.graph.EntityGraph.open>`
    (``create``, ``commit``, ``commit_interval``, ``read_only``, ``lease_ttl``,
    ``lease_heartbeat``, ``busy_timeout``)."""
    from storylab.entities.postgres.store import PostgresGraph

    return PostgresGraph.open_url(url, **options)
