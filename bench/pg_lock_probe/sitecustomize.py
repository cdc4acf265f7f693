"""A measuring probe for the PostgreSQL store's write lock, loaded by every
Python process started with this folder on ``PYTHONPATH`` (Dask workers
included) when ``$STORYLAB_PG_PROBE`` names a file prefix.

Each process appends JSON lines to ``PREFIX.<pid>``:

* ``["wait", seconds, seconds]`` when it opens a write transaction: the
  ``BEGIN`` round trip (there is no graph-wide lock to wait for);
* ``["hold", seconds]`` when that transaction ends (commit or rollback);
* ``["renew", seconds, leases]`` for each lease renewal of the heartbeat;
* ``["rowlock", seconds]`` for each lock a write takes on one node's row or
  one name: the statement's whole round trip (with the parent's row
  first, when that is leased here), so the wait is at most that.

Summarise with ``python bench/pg_lock_probe/summary.py PREFIX``. Nothing here
changes what the store does; it only wraps some of its methods.
"""

import json
import os
import time

_prefix = os.environ.get("STORYLAB_PG_PROBE")


def _install(prefix: str) -> None:
    try:
        from storylab.entities.postgres import store
    except ImportError:  # no psycopg here: nothing to measure
        return
    out = open(f"{prefix}.{os.getpid()}", "a", buffering=1)
    graph = store.PostgresGraph
    begin, commit = graph._abegin, graph._a_commit
    held_since: dict[int, float] = {}

    async def probed_begin(self):
        if self._in_txn:
            return await begin(self)
        called = time.monotonic()
        result = await begin(self)
        now = time.monotonic()
        out.write(json.dumps(["wait", now - called, now - called]) + "\n")
        held_since[id(self)] = now
        return result

    async def probed_commit(self, batch):
        try:
            return await commit(self, batch)
        finally:
            since = held_since.pop(id(self), None)
            if since is not None:
                out.write(json.dumps(["hold", time.monotonic() - since]) + "\n")

    def probed_lock(original):
        async def probed(self, *args):
            began = time.monotonic()
            try:
                return await original(self, *args)
            finally:
                out.write(json.dumps(["rowlock", time.monotonic() - began]) + "\n")

        return probed

    renew = graph._renew_leases

    async def probed_renew(self):
        began = time.monotonic()
        try:
            return await renew(self)
        finally:
            out.write(json.dumps(["renew", time.monotonic() - began, len(self._held)]) + "\n")

    graph._abegin = probed_begin
    graph._a_commit = probed_commit
    graph._alock_node = probed_lock(graph._alock_node)
    graph._alock_name = probed_lock(graph._alock_name)
    graph._renew_leases = probed_renew


if _prefix:
    _install(_prefix)
