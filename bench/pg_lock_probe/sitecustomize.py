"""A measuring probe for the PostgreSQL store's write lock, loaded by every
Python process started with this folder on ``PYTHONPATH`` (Dask workers
included) when ``$STORYLAB_PG_PROBE`` names a file prefix.

Each process appends JSON lines to ``PREFIX.<pid>``:

* ``["wait", seconds, blocking_seconds]`` when it takes the graph's advisory
  lock: from its first refused try (or from the call) to the grant, and the
  part spent inside one blocking call;
* ``["hold", seconds]`` when it lets the lock go (commit or rollback);
* ``["renew", seconds, leases]`` for each lease renewal of the heartbeat;
* ``["rowlock", seconds]`` for each lock a write takes on one node's row or
  one name (a store without the graph-wide lock): the statement's whole
  round trip, so the wait is at most that.

Summarise with ``python bench/pg_lock_probe/summary.py PREFIX``. Nothing here
changes what the store does; it only wraps two of its methods.
"""

import json
import os
import time

_prefix = os.environ.get("STORYLAB_PG_PROBE")


def _install(prefix: str) -> None:
    try:
        from storylab.entities.postgres import store
        from storylab.entities.sqlite import leases
    except ImportError:  # no psycopg here: nothing to measure
        return
    out = open(f"{prefix}.{os.getpid()}", "a", buffering=1)
    state = {"held_since": None, "refused_since": None}
    execute = store._Connection.execute

    def probed_execute(self, sql, params=()):
        if sql == "BEGIN IMMEDIATE":
            called = time.monotonic()
            try:
                result = execute(self, sql, params)
            except store._Busy:
                if state["refused_since"] is None:
                    state["refused_since"] = called
                raise
            now = time.monotonic()
            first = state["refused_since"] if state["refused_since"] is not None else called
            out.write(json.dumps(["wait", now - first, now - called]) + "\n")
            state["refused_since"], state["held_since"] = None, now
            return result
        if sql in ("COMMIT", "ROLLBACK") and state["held_since"] is not None:
            result = execute(self, sql, params)
            out.write(json.dumps(["hold", time.monotonic() - state["held_since"]]) + "\n")
            state["held_since"] = None
            return result
        return execute(self, sql, params)

    store._Connection.execute = probed_execute
    locking = getattr(store._Connection, "_locking", None)
    if locking is not None:

        def probed_locking(self, sql, params):
            began = time.monotonic()
            try:
                return locking(self, sql, params)
            finally:
                out.write(json.dumps(["rowlock", time.monotonic() - began]) + "\n")

        store._Connection._locking = probed_locking
    renew = leases.Leases._renew_leases

    async def probed_renew(self):
        began = time.monotonic()
        try:
            return await renew(self)
        finally:
            out.write(json.dumps(["renew", time.monotonic() - began, len(self._held)]) + "\n")

    leases.Leases._renew_leases = probed_renew


if _prefix:
    _install(_prefix)
