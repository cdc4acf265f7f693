"""Several hosts, one graph: the project's own test hosts in network namespaces.

Three namespaces joined by veth pairs, with addresses of a private range that
exist only inside them: ``db`` runs a PostgreSQL server and the Dask
scheduler (and the client that submits the stories), ``w1`` and ``w2`` one
Dask worker each, every process in a working folder of its own (no shared
graph file, no shared blob folder: the graph and the pictures are on the
server). The stories must finish with each picture drawn once, the global
limit must hold across the hosts, and a worker killed half-way through a
story must have that story finished on the other host with nothing stored
drawn again.

Needs root (``ip netns``), the ``ip`` tool, PostgreSQL's server binaries and
Dask distributed; it skips without them.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from .conftest import ROOT

HERE = Path(__file__).resolve().parent
DRIVER = HERE / "multihost_driver.py"
PASSWORD = "netns-" + uuid.uuid4().hex[:12]
DB1, DB2, W1, W2 = "10.231.1.1", "10.231.2.1", "10.231.1.2", "10.231.2.2"
TOPICS = [
    "a fox who finds a friend",
    "an owl who counts the stars",
    "a turtle who races the rain",
    "a bear who shares his honey",
]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]


def _postgres_bin() -> Path | None:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4])
    )
    return Path(found[-1]).parent if found else None


def _requirements() -> str | None:
    if os.geteuid() != 0:
        return "needs root for ip netns"
    if shutil.which("ip") is None or shutil.which("setpriv") is None:
        return "needs the ip and setpriv tools"
    if _postgres_bin() is None:
        return "needs PostgreSQL's server binaries (apt-get install postgresql)"
    try:
        import distributed  # noqa: F401
        import psycopg  # noqa: F401
    except ImportError as exc:
        return f"needs {exc.name}"
    probe = f"sl-probe-{uuid.uuid4().hex[:6]}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create a network namespace ({made.stderr.strip()})"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True)


class Hosts:
    """The three namespaces and every process started in them."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.ns = {name: f"sl-{name}-{tag}" for name in ("db", "w1", "w2")}
        self.procs: list[subprocess.Popen] = []
        self.folder = Path(tempfile.mkdtemp(prefix="storylab-netns-"))
        self.folder.chmod(0o755)

    def up(self) -> None:
        db, w1, w2 = self.ns["db"], self.ns["w1"], self.ns["w2"]
        for ns in self.ns.values():
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        # veth pairs made directly between namespaces: nothing on this host's own.
        for ns, here, there in ((w1, DB1, W1), (w2, DB2, W2)):
            end = "d" + ns[3:5]
            sh(
                "ip",
                "-n",
                db,
                "link",
                "add",
                end,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                ns,
            )
            sh("ip", "-n", db, "addr", "add", f"{here}/24", "dev", end)
            sh("ip", "-n", db, "link", "set", end, "up")
            sh("ip", "-n", ns, "addr", "add", f"{there}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "route", "add", "default", "via", here)
        sh("ip", "netns", "exec", db, "sysctl", "-qw", "net.ipv4.ip_forward=1")

    def start(self, ns: str, argv: list[str], *, cwd: Path, env: dict, user: str | None = None):
        prefix = ["ip", "netns", "exec", self.ns[ns]]
        if user:
            prefix += ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups"]
        proc = subprocess.Popen(
            prefix + argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.procs.append(proc)
        return proc

    def down(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)  # PostgreSQL: fast shutdown
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
        for ns in self.ns.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        shutil.rmtree(self.folder, ignore_errors=True)


def start_postgres(hosts: Hosts) -> Path:
    """A PostgreSQL server of its own in the db namespace, listening on the
    namespace's two addresses only; its socket folder is returned."""
    bindir = _postgres_bin()
    data, sock = hosts.folder / "pgdata", hosts.folder / "pgsock"
    for folder in (data, sock):
        folder.mkdir(mode=0o700)
        shutil.chown(folder, "postgres", "postgres")
    pwfile = hosts.folder / "pw"
    pwfile.write_text(PASSWORD)
    pwfile.chmod(0o644)
    sh(
        "setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups",
        str(bindir / "initdb"), "-D", str(data), "-U", "storylab", f"--pwfile={pwfile}",
        "--auth-local=trust", "--auth-host=scram-sha-256",
    )  # fmt: skip
    pwfile.unlink()
    with open(data / "pg_hba.conf", "a") as f:
        f.write("host all all 10.231.0.0/16 scram-sha-256\n")
    hosts.start(
        "db",
        [
            str(bindir / "postgres"), "-D", str(data), "-p", "5432",
            "-c", f"listen_addresses={DB1},{DB2}", "-c", f"unix_socket_directories={sock}",
        ],
        cwd=hosts.folder,
        env={"PATH": os.environ["PATH"], "LANG": "C.UTF-8"},
        user="postgres",
    )  # fmt: skip
    import psycopg

    deadline = time.monotonic() + 60
    while True:
        try:
            psycopg.connect(host=str(sock), user="storylab", dbname="postgres").close()
            return sock
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_stories_across_hosts_share_one_graph_on_the_server(tmp_path):
    why = _requirements()
    if why:
        pytest.skip(f"multi-host test: {why}")
    import psycopg

    hosts = Hosts()
    try:
        hosts.up()
        sock = start_postgres(hosts)
        url = f"postgresql://storylab@{DB1}:5432/postgres?schema=stories"
        base_env = {
            "PATH": os.environ["PATH"],
            "LANG": "C.UTF-8",
            "PYTHONPATH": str(ROOT),
            "PGPASSWORD": PASSWORD,
            "DASK_DISTRIBUTED__SCHEDULER__LOCKS__LEASE_TIMEOUT": "2s",
            "DASK_DISTRIBUTED__SCHEDULER__LOCKS__LEASE_VALIDATION_INTERVAL": "0.5s",
        }
        folders = {}
        for name in ("scheduler", "client", "w1", "w2"):
            folders[name] = hosts.folder / name
            folders[name].mkdir()

        def env_of(name: str) -> dict:
            home = str(folders[name])
            return dict(base_env, HOME=home, STORYLAB_HOME=home)

        scheduler = hosts.start(
            "db",
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", DB1,
             "--port", "8786", "--no-dashboard"],
            cwd=folders["scheduler"], env=env_of("scheduler"),
        )  # fmt: skip
        workers = {
            name: hosts.start(
                name,
                [
                    sys.executable,
                    "-m",
                    "distributed.cli.dask_worker",
                    f"tcp://{DB1}:8786",
                    "--host",
                    addr,
                    "--nthreads",
                    "4",
                    "--no-nanny",
                    "--no-dashboard",
                    "--name",
                    name,
                ],
                cwd=folders[name],
                env=env_of(name),
            )  # fmt: skip
            for name, addr in (("w1", W1), ("w2", W2))
        }
        client = hosts.start(
            "db",
            [sys.executable, str(DRIVER), f"tcp://{DB1}:8786", url, json.dumps(TOPICS)],
            cwd=folders["client"],
            env=env_of("client"),
        )
        out, err = client.communicate(timeout=300)
        assert client.returncode == 0, out + err
        report = json.loads(out.strip().splitlines()[-1])
        assert scheduler.poll() is None

        worker_pids = {p.pid for p in workers.values()}
        assert set(report["worker_pids"]) == worker_pids  # one worker on each host
        victim = report["victim_pid"]
        survivor = (worker_pids - {victim}).pop()
        assert workers["w1"].poll() is not None or workers["w2"].poll() is not None
        unfinished = [
            r for r in report["results"] if r["stage"] != "completed" or r["image_count"] != 5
        ]
        assert unfinished == [], (unfinished, err[-3000:])
        # The killed worker's story was finished on the other host.
        assert report["story_pids"][report["victim_story"]] == survivor
        assert set(report["story_pids"].values()) <= worker_pids
        assert report["peak"] <= 3 and report["leases_left"] == 0  # the global limit held

        with psycopg.connect(host=str(sock), user="storylab", dbname="postgres") as conn:
            conn.execute("SET search_path = stories")
            images = conn.execute(
                "SELECT p.name, i.id, i.status, "
                " (SELECT count(*) FROM progress g WHERE g.node_id = i.id"
                "  AND g.status = 'STARTED'),"
                " (SELECT count(*) FROM progress g WHERE g.node_id = i.id"
                "  AND g.message LIKE 'Generating image%%'"
                "  OR g.node_id = i.id AND g.more LIKE '%%Generating image%%') "
                "FROM nodes i JOIN nodes p ON p.id = i.parent_id "
                "WHERE i.type = 'ImageGenerationEntity'"
            ).fetchall()
            blobs = conn.execute("SELECT count(*) FROM blobs").fetchone()[0]
            leases = conn.execute("SELECT count(*) FROM leases").fetchone()[0]
        assert len(images) == len(TOPICS) * 5
        assert all(status == "Completed" for _, _, status, _, _ in images)
        stored_before = {i for ids in report["done_before"].values() for i in ids}
        assert stored_before
        for _, node, _, started, _ in images:
            if node in stored_before:
                assert started == 1, node  # stored before the kill: never drawn again
            else:
                assert 1 <= started <= 2, node
        assert sum(started - 1 for *_, started, _ in images) <= 3  # at most the limit redone
        assert blobs >= len(TOPICS) * 5 and leases == 0
        # No host kept a graph file or a blob folder of its own.
        for name in ("client", "w1", "w2"):
            assert not list(folders[name].rglob("*.sqlite")), name
            assert not list(folders[name].rglob("*.blobs")), name
    finally:
        hosts.down()


PARTITION_CLIENT = """
import json, sys, time
from storylab.entities import EntityGraph
g = EntityGraph.open(sys.argv[1])
g.roots()
print("ready", flush=True)
sys.stdin.readline()
t = time.monotonic()
try:
    g.roots()
    outcome = "answered"
except Exception as exc:
    outcome = f"{type(exc).__name__}: {exc}"
print(json.dumps({"outcome": outcome, "seconds": time.monotonic() - t}), flush=True)
"""


def test_a_server_that_stops_answering_fails_an_operation_instead_of_hanging_it():
    """A network gone silent (packets dropped, no connection closed): the next
    round trip fails after the connection's TCP user timeout (15 s by
    default), with a one-line store error, instead of TCP's own minutes."""
    why = _requirements()
    if why:
        pytest.skip(f"multi-host test: {why}")
    hosts = Hosts()
    try:
        hosts.up()
        start_postgres(hosts)
        folder = hosts.folder / "w1"
        folder.mkdir()
        env = {
            "PATH": os.environ["PATH"],
            "LANG": "C.UTF-8",
            "PYTHONPATH": str(ROOT),
            "PGPASSWORD": PASSWORD,
            "HOME": str(folder),
            "STORYLAB_HOME": str(folder),
        }
        url = f"postgresql://storylab@{DB1}:5432/postgres?schema=partition"
        client = hosts.start(
            "w1", [sys.executable, "-c", PARTITION_CLIENT, url], cwd=folder, env=env
        )
        assert client.stdout.readline().strip() == "ready", client.stderr.read()
        # Drop every packet to the server, silently (a blackhole route).
        sh("ip", "-n", hosts.ns["w1"], "route", "add", "blackhole", f"{DB1}/32")
        t0 = time.monotonic()
        out, err = client.communicate(input="go\n", timeout=120)
        report = json.loads(out.strip().splitlines()[-1])
        assert report["outcome"] != "answered", report
        assert "\n" not in report["outcome"] and PASSWORD not in out + err
        assert 10 <= report["seconds"] < 60, report  # the user timeout, not TCP's minutes
        assert time.monotonic() - t0 < 90
    finally:
        hosts.down()
