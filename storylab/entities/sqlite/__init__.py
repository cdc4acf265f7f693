"""The entity graph: every entity a persisted node in one SQLite file.

Why a store at all: a pipeline that dies half-way should, when started again,
find what it already finished and do only the rest. That needs the nodes
(id, name, type, status, data, output, error, timestamps), the ``Calls``
edges from parents to children in creation order, and each node's progress
log to outlive the process. SQLite gives all of that in one file, with two
properties we lean on:

* **Uniqueness is a constraint, not a check.** A child's *call path* (its
  name, prefixed by the ``label/key`` of the condition branches it was made
  in) is unique under its parent, and a root's name among roots, by a
  ``UNIQUE`` index. Two processes resuming the same pipeline at once cannot
  both create a child: the name is checked inside the write transaction,
  which only one process holds at a time, and the index guards the write.
* **Transactions are atomic.** A crash leaves the file as of some committed
  transaction, never half an operation.

How writes are committed. Each operation (create a child, mark a run
started, store an output...) is atomic and never spans an ``await``.
Operations share a transaction ("group commit"). A run that ends writes its
end (Completed with its output, or Failed with its error) into the open
transaction, then waits for the commit of that transaction before it hands
any of it on: its ``VALUE return`` and ``STATUS COMPLETED`` (or ``ERROR``
and ``STATUS FAILED``) envelopes, its ``result``, a runner's ``FINAL``, a
delegating parent, a second run attached to it. Every run that ended in one
transaction waits for the same commit, so many ends still share one. If that
commit fails, each waiting run raises the commit's
:class:`~storylab.entities.errors.EntityGraphError` instead of handing on a
result (in ``batched`` and ``interval`` mode, where the failed transaction
held other operations too, the next operation on the graph raises it as
well). The modes differ in when the commit comes, hence in how long an ended
run waits:

=============  ===============================  ===================  ===========================
``commit=``    the transaction is committed     an ended run waits   a crash of the process loses
=============  ===============================  ===================  ===========================
``batched``    at the end of the event-loop     one loop iteration   operations that ended
(default)      iteration in which a run ended;                       nothing (creations, starts,
               else ``commit_interval`` (5 ms)                       progress, data changes), up
               after its first operation                             to 5 ms of them
``interval``   ``commit_interval`` after its    up to 5 ms           the same: up to 5 ms of
               first operation                                       operations
``operation``  by each operation, before it     not at all           nothing that returned
               returns
=============  ===============================  ===================  ===========================

In no mode can a crash take back an end that was handed on: whatever anyone
saw finish is stored, and a resumed run gets it back instead of running that
entity again; lost operations are simply done again. In every mode the
transaction is also committed at once when the last running entity of the
graph ends, on :meth:`EntityGraph.flush` and :meth:`EntityGraph.close`, at
interpreter exit, and by every operation made outside a running event loop.
``interval`` makes fewer commits than ``batched`` but holds every result up
to ``commit_interval``: with few runs in flight that caps how many end per
second (docs/benchmarks.md has the numbers).

"Crash" means the process dies (an exception, a SIGKILL): a committed
transaction is then on disk. The file is in WAL mode with
``synchronous=NORMAL``, so a power cut or an operating-system crash may in
addition take back the last commits (those the OS had not yet written out),
in every mode; the file stays consistent, as of some earlier commit.

Within a transaction, work that nobody can observe is not written twice: a
node created in it is written once, at the commit (or before anything on
this connection reads), in the state it has by then, so a child created,
started and finished within one transaction costs one ``INSERT`` instead of
an ``INSERT`` and two ``UPDATE``s; progress rows are written at the commit
too, and consecutive envelopes of one node share a row. Every reader, and
every committed state, is the same as if each operation had been written
at once.

Progress logs are stored once, on the node that produced each envelope;
reading a node's progress returns its own envelopes and those of all its
descendants in the order they were written, which is how a child's progress
shows up in its parent's log (percolation) without writing it twice.

Several processes may run the same pipeline on one file. A node that runs
is *leased*: a row of the ``leases`` table names its owner (host, pid and a
random token of the owning graph), taken in the transaction that makes the
node InProgress and dropped in the one that finishes it. Another process
that meets a live lease does not run the node; it waits for it (see
``EntityRun``). A lease lives ``lease_ttl`` seconds past its owner's last
heartbeat (one asyncio task per graph renews every lease it holds while
anything runs); one whose owner is a process of this host that no longer
exists is over at once, so a ``kill -9`` is recovered as fast as before.
A pid that is alive is trusted only until the expiry: if the owner died and
its pid went to another program, the lease is simply waited out (the
heartbeat stopped), and the new owner's token keeps the two apart. Expiry
compares wall clocks, so hosts sharing a file over a network must keep their
clocks within a fraction of ``lease_ttl``. ``lease_ttl`` is 10 s unless
given to :meth:`EntityGraph.open` or set in ``$STORYLAB_LEASE_TTL``.

Fencing. Every write made under a lease is checked against its token, inside
the write transaction that stores it (so the check holds until the commit):
the node's progress envelopes (checked at the commit that writes them), its
data (``update_entity_data`` and the other data writes), the children it
creates and starts, and its end. A process whose lease was taken over (it
stalled past the expiry: a ``SIGSTOP``, a suspended laptop) therefore stores
nothing more for that node, and the first refused write, or the heartbeat
that finds the lease gone, stops the run: its task is cancelled, and the run
raises :class:`~storylab.entities.errors.LeaseLostError`, one line naming the
new owner and whether our lease had expired. A node's lease is checked once
per transaction (after that the write lock is ours until the commit), so the
check costs one indexed read per leased node per commit. Blob files are not
fenced: they are content-addressed, and a blob is only reachable through a
key stored in a node's data or output, which are.

The heartbeat never dies on an error. A renewal that meets another process's
write lock or a failing disk (``database is locked``, ``disk I/O error``) is
tried again with a growing delay; if it cannot succeed before the oldest of
our leases would expire (less half a heartbeat), every run holding one is
stopped as above (its error says so), and the leases given up are never
renewed again (a new token is used from then on), so another process can take
those nodes over once they expire. A renewal that finds a lease taken over
stops that run at once.

Waiting for the lock. Another process's write transaction (up to a
``BEGIN EXCLUSIVE`` held for minutes) never blocks the event loop of a run:
a run's steps await :meth:`EntityGraph.write_waiter` before they write, which
opens the transaction when the lock is free and otherwise looks again after
a growing delay (2 ms doubling to 50 ms); progress envelopes are buffered
without the lock; a commit that finds the lock taken is tried again by a
loop callback; the heartbeat retries as above. ``append_call`` (and
``append_or_retrieve_call``) from ``run_impl``, synchronous as they are,
do not wait either: when the lock is taken they create the child without
it, since under the parent's lease nobody else may create that parent's
children, a read (never kept waiting by a writer in WAL mode) decides
whether its name is taken, and the next commit writes the row once the lock
is free, after checking the parent's lease (a child made under a lease lost
meanwhile is not stored, and the run is stopped as above). Reads made on
the loop while such rows wait (the parent's children, a child found by
name, a node's data or status, a subtree) are answered with those rows laid
over the stored ones, copied for the read into the connection's temporary
database, which needs no lock of the file; so is the progress log with the
envelopes not stored yet. From a coroutine, the root
entities do not wait either: finding a root that exists
(``create_or_retrieve``, hence ``create_story`` on a resume) is a read;
``reopen`` is left to the next transaction, whose first statement it is
(reads say Pending meanwhile); ``close`` with something left to write
commits and closes the connection in a thread of its own. Only creating a
new root synchronously (``create``, ``create_or_retrieve`` of a name not
taken: another process may be making it, so the lock is needed to decide),
other synchronous writes outside a run (``merge_data``, ``delete_tree``),
and anything done outside an event loop, wait for the lock the usual SQLite
way, up to ``busy_timeout`` (30 s); from a coroutine, ``await
graph.writable()`` before them makes that wait an awaited one.

The file itself is checked at every commit: if it was deleted or replaced
(another inode at the path), the transaction is rolled back and every later
operation raises :class:`~storylab.entities.errors.GraphFileGoneError`,
instead of writing on into a file nobody will read.

The store is in parts, one module each, combined into :class:`EntityGraph`:
:mod:`~storylab.entities.sqlite.store` (opening, the shared state, closing),
:mod:`~storylab.entities.sqlite.transactions` (the write transaction, group
commits, the buffers), :mod:`~storylab.entities.sqlite.leases` (leases, the
heartbeat, fencing), :mod:`~storylab.entities.sqlite.queries` (reads) and
:mod:`~storylab.entities.sqlite.writes` (creating, starting, finishing,
data). The schema and its upgrades are in :mod:`storylab.entities.sqlite.schema`, the
records handed out in :mod:`storylab.entities.records`, the JSON encoding in
:mod:`storylab.entities.encoding`.
"""

from storylab.entities.sqlite._shared import COMMIT_MODES, LEASE_TTL_ENV, default_graph_path
from storylab.entities.sqlite.schema import APPLICATION_ID, SCHEMA_VERSION
from storylab.entities.sqlite.store import EntityGraph

__all__ = [
    "APPLICATION_ID",
    "COMMIT_MODES",
    "LEASE_TTL_ENV",
    "SCHEMA_VERSION",
    "EntityGraph",
    "default_graph_path",
]
