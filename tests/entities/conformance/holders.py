"""Processes that hold a graph's write lock, for the store tests.

``SQLITE_WRITE_HOLDER``: run as ``python -c SQLITE_WRITE_HOLDER FILE [SECONDS]``;
it takes the file's write lock (``BEGIN EXCLUSIVE``), prints ``locked``, then
commits after SECONDS (printing ``releasing`` first) or, without SECONDS, once
a line arrives on its stdin; it prints ``released`` when the commit is done.

``PG_WRITE_HOLDER``: run as ``python -c PG_WRITE_HOLDER SCHEMA [SECONDS]`` with ``HOLD_URL`` in the
environment: it takes the graph's advisory lock and writes a row in an open
transaction, prints ``locked``, then commits after SECONDS (printing
``releasing`` first) or, without SECONDS, once a line arrives on its stdin;
it prints ``released`` when the commit is done.

``PG_NODE_HOLDER``: run as ``python -c PG_NODE_HOLDER SCHEMA SECONDS WHAT...``
with ``HOLD_URL`` in the environment, where each WHAT is ``row:ID`` (the node
``ID`` is written: its row stays locked, as another process's update of it
does until its commit) or ``name:PARENT:KEY`` (the name ``KEY`` under
``PARENT``, ``-`` among roots, is being decided: its lock is held, as by
another process creating it); it also does what ``PG_WRITE_HOLDER`` does, in
the same open transaction. It prints ``locked``, commits after SECONDS
(printing ``releasing`` first), and prints ``released``."""

PG_WRITE_HOLDER = """
import os, sys, time, psycopg
from storylab.entities.postgres.schema import lock_key
conn = psycopg.connect(os.environ["HOLD_URL"])
conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(sys.argv[1]),))
conn.execute(
    f'INSERT INTO "{sys.argv[1]}".storylab_meta (name, value) VALUES (%s, %s)',
    ("a-foreign-write", "open"),
)
print("locked", flush=True)
if len(sys.argv) > 2:
    time.sleep(float(sys.argv[2]))
    print("releasing", flush=True)
else:
    sys.stdin.readline()
conn.commit()
print("released", flush=True)
"""

PG_NODE_HOLDER = """
import os, sys, time, psycopg
from storylab.entities.postgres.schema import lock_key, name_key
schema = sys.argv[1]
conn = psycopg.connect(os.environ["HOLD_URL"])
conn.execute(f'SET search_path = "{schema}"')
conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(schema),))
conn.execute(
    "INSERT INTO storylab_meta (name, value) VALUES (%s, %s)", ("a-foreign-write", "open")
)
for what in sys.argv[3:]:
    kind, _, rest = what.partition(":")
    if kind == "row":
        cur = conn.execute("UPDATE nodes SET data = data WHERE id = %s", (rest,))
        assert cur.rowcount == 1, what
    else:
        parent, _, key = rest.partition(":")
        parent = None if parent == "-" else parent
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (name_key(schema, parent, key),))
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
print("releasing", flush=True)
conn.commit()
print("released", flush=True)
"""

SQLITE_WRITE_HOLDER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
if len(sys.argv) > 2:
    time.sleep(float(sys.argv[2]))
    print("releasing", flush=True)
else:
    sys.stdin.readline()
conn.execute("COMMIT")
print("released", flush=True)
"""
