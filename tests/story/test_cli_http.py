"""``storylab run --backend http`` against misbehaving servers, as a user meets it.

The CLI runs in a child process (``python -m storylab.cli``) while the server
answers from a thread of this one: the run must end on its own, with the bad
picture failed and named, the others drawn, no traceback, and no credential
anywhere in what it printed or stored.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hostile_server import HostileServer

from storylab.cli import main
from storylab.entities import EntityGraph
from storylab.story.backends.http_images import (
    DEFAULT_ATTEMPT_TIMEOUT,
    DEFAULT_IMAGE_TIMEOUT,
    DEFAULT_MAX_RESPONSE_BYTES,
)

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "pw-Hx93lq"
API_KEY = "sk-cli-Q7v2m"


def _storylab(tmp_path: Path, url: str, *argv: str, env: dict[str, str] | None = None):
    child_env = {k: v for k, v in os.environ.items() if k != "STORYLAB_IMAGES_API_KEY"}
    child_env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    child_env.update(env or {})
    (tmp_path / "store").mkdir(parents=True, exist_ok=True)  # --graph's folder must exist
    cmd = [
        sys.executable, "-m", "storylab.cli", "run", "an owl who counts stars",
        "--images", "3", "--backend", "http", "--images-url", url,
        "--graph", str(tmp_path / "store" / "graph.sqlite"), "--out", str(tmp_path / "out"),
        "--time-scale", "0.001", *argv,
    ]  # fmt: skip
    return subprocess.run(cmd, env=child_env, capture_output=True, text=True, timeout=120)


@pytest.mark.timeout(150)
def test_a_trickling_server_ends_at_the_image_deadline_and_the_run_finishes(tmp_path):
    with HostileServer("trickle", bad={"{{IMAGE_2}}"}) as server:
        done = _storylab(tmp_path, server.url, "--attempt-timeout", "0.3", "--image-timeout", "1")
    assert done.returncode == 1, done.stderr
    out = done.stdout
    assert "picture 2 failed: ImageDeadlineExceeded: image service at" in out
    assert "no picture for {{IMAGE_2}} within its deadline of 1 s per image" in out
    assert "no complete answer within the 0.3 s deadline per attempt" in out
    assert "picture 1 done" in out and "picture 3 done" in out
    assert "completed with errors: 2 pictures, 1 failed" in out
    assert "Traceback" not in done.stderr
    assert server.requests["{{IMAGE_2}}"] >= 2  # retried within its deadline


@pytest.mark.timeout(150)
def test_a_300_mb_answer_is_refused_at_the_default_limit(tmp_path):
    with HostileServer("huge", bad={"{{IMAGE_3}}"}, total=300 * 2**20) as server:
        done = _storylab(tmp_path, server.url)
    assert done.returncode == 1, done.stderr
    assert "picture 3 failed: ImageResponseInvalid" in done.stdout
    assert "larger than the limit of 32 MiB; reading stopped there" in done.stdout
    assert "completed with errors: 2 pictures, 1 failed" in done.stdout
    # it stopped reading at the limit: the socket buffers hold a few MiB at most
    assert 32 * 2**20 < server.bytes_sent["{{IMAGE_3}}"] < 64 * 2**20
    with EntityGraph.open(tmp_path / "store" / "graph.sqlite") as graph:
        assert len(list(graph.blobs.root.rglob("*.png"))) == 2


@pytest.mark.timeout(150)
def test_max_response_mb_and_half_a_png_through_the_cli(tmp_path):
    with HostileServer("huge", bad={"{{IMAGE_1}}"}) as server:
        done = _storylab(tmp_path / "a", server.url, "--max-response-mb", "0.5")
    assert "larger than the limit of 0.5 MiB" in done.stdout
    assert server.bytes_sent["{{IMAGE_1}}"] < 32 * 2**20
    with HostileServer("half-png", bad={"{{IMAGE_1}}"}) as server:
        done = _storylab(tmp_path / "b", server.url)
    assert done.returncode == 1
    assert "picture 1 failed: ImageResponseInvalid" in done.stdout
    assert "sent a broken picture for {{IMAGE_1}}: truncated or corrupt PNG" in done.stdout


@pytest.mark.parametrize("with_key", [True, False], ids=["api-key", "url-password"])
@pytest.mark.timeout(150)
def test_credentials_are_never_printed_or_stored(tmp_path, with_key):
    basic = base64.b64encode(f"bob:{PASSWORD}".encode()).decode()
    env = {"STORYLAB_IMAGES_API_KEY": API_KEY} if with_key else {}
    with HostileServer("echo", bad={"{{IMAGE_2}}"}, status=401) as server:
        url = server.url.replace("http://", f"http://bob:{PASSWORD}@")
        done = _storylab(tmp_path, url, env=env)
    echoed = server.headers_seen[-1]["authorization"]
    assert echoed == (f"Bearer {API_KEY}" if with_key else f"Basic {basic}")
    assert done.returncode == 1
    assert "picture 2 failed: ImageRequestRejected" in done.stdout
    assert "HTTP 401: credentials refused" in done.stdout and "http://***@" in done.stdout
    # and the other graph commands show the stored error just as safely
    graph = str(tmp_path / "store" / "graph.sqlite")
    listing = subprocess.run(
        [sys.executable, "-m", "storylab.cli", "eg", "list", "--graph", graph],
        capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    secrets = [PASSWORD, basic, *([API_KEY] if with_key else [])]
    printed = done.stdout + done.stderr + listing.stdout + listing.stderr
    assert [s for s in secrets if s in printed] == []
    for path in (tmp_path / "store").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert [s for s in secrets if s.encode() in data] == [], path


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--attempt-timeout", "0"], "argument --attempt-timeout: must be a number of seconds > 0"),
        (["--attempt-timeout", "soon"], "argument --attempt-timeout: must be a number of seconds"),
        (["--image-timeout", "-5"], "argument --image-timeout: must be a number of seconds > 0"),
        (["--image-timeout", "nan"], "argument --image-timeout: must be a number of seconds > 0"),
        (["--max-response-mb", "0"], "argument --max-response-mb: must be a number of MiB > 0"),
        (
            ["--backend", "simulated", "--image-timeout", "5"],
            "--attempt-timeout, --image-timeout and --max-response-mb need --backend http",
        ),
    ],
)
def test_bad_deadline_flags_are_refused_and_keep_what_is_stored(tmp_path, capsys, argv, message):
    base = ["--graph", str(tmp_path / "graph.sqlite"), "--out", str(tmp_path / "out")]
    assert main(["run", "an owl", "--images", "1", *base, "--time-scale", "0.001"]) == 0
    capsys.readouterr()
    with EntityGraph.open(tmp_path / "graph.sqlite") as graph:
        before = [(n.id, n.status) for n in graph.roots()]
    http = ["--backend", "http", "--images-url", "http://127.0.0.1:9"]
    assert _exit_code(["run", "a fox", *base, *http, *argv]) == 2
    assert message in capsys.readouterr().err
    with EntityGraph.open(tmp_path / "graph.sqlite") as graph:
        assert [(n.id, n.status) for n in graph.roots()] == before


def _exit_code(argv: list[str]) -> int | str | None:
    # argparse exits on a bad value; the run's own checks return the code.
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def test_help_states_the_backend_defaults(capsys):
    assert main(["run", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())

    def entry(flag: str) -> str:  # the flag's own help text (its last mention is the entry)
        return text.rsplit(flag, 1)[1].split(" --", 1)[0]

    assert f"(default {DEFAULT_ATTEMPT_TIMEOUT:g})" in entry("--attempt-timeout SECONDS")
    assert f"(default {DEFAULT_IMAGE_TIMEOUT:g})" in entry("--image-timeout SECONDS")
    assert f"(default {DEFAULT_MAX_RESPONSE_BYTES // 2**20})" in entry("--max-response-mb MIB")


def test_the_whole_http_path_runs_offline_against_the_local_server(tmp_path, capsys):
    """`storylab serve-images` in its own process; text and images both go over HTTP."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    server = subprocess.Popen(
        [sys.executable, "-m", "storylab.cli", "serve-images", "--port", "0",
         "--time-scale", "0.001"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        url = line.split(" on ", 1)[1].split(" ", 1)[0]
        assert "/v1/chat/completions and /v1/moderations" in line
        code = main(
            [
                "run", "a friendly ghost who is afraid of the dark", "--images", "2",
                "--backend", "http", "--images-url", url + "/v1",
                "--text-backend", "http", "--text-url", url + "/v1",
                "--graph", str(tmp_path / "g.sqlite"), "--out", str(tmp_path / "out"),
            ]
        )  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=10)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "verdict: safe by moderation endpoint" in out
    (page,) = (tmp_path / "out").glob("*.html")
    assert page.read_text().count("<img ") == 2
    with EntityGraph.open(tmp_path / "g.sqlite") as graph:
        (root,) = graph.roots()
        writer = next(c for c in graph.children(root.id) if c.name == "story-writer")
    assert len(writer.output["image_prompts"]) == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--text-model", "gpt-4o-mini"], "--text-url and --text-model need --text-backend http"),
        (["--images-model", "dall-e-3"], "--images-model needs --backend http"),
        (["--text-backend", "http", "--text-url", "ftp://x"], "argument --text-url: must be an"),
        (["--backend", "http", "--images-model", "dall e"], "argument --images-model: must be a"),
    ],
)
def test_the_model_flags_are_checked_before_anything_runs(tmp_path, capsys, argv, message):
    graph = tmp_path / "g.sqlite"
    assert main(["run", "--graph", str(graph), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("storylab run: error: ") and message in err and "\n" not in err
    assert not graph.exists()

