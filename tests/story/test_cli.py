"""``storylab run`` and ``storylab serve-images`` as a user meets them."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest
from pagecheck import read_page

from storylab.cli import main
from storylab.entities import EntityGraph
from storylab.story.html import MISSING_IMAGE_TEXT


def _run(tmp_path, *argv: str) -> int:
    # Options given in argv come later and so win over these defaults.
    base = ["--graph", str(tmp_path / "graph.sqlite"), "--out", str(tmp_path / "out")]
    return main(["run", *base, "--time-scale", "0.001", *argv])


def test_default_run_writes_html_and_prints_the_tree(tmp_path, capsys):
    assert _run(tmp_path) == 0
    out = capsys.readouterr().out
    assert "5 of 5 pictures drawn" in out and "picture 3 done" in out
    assert "story-pipeline-a-brave-kitten" in out
    assert "└── picture 5" in out
    (page,) = (tmp_path / "out").glob("*.html")
    assert page.read_text().count("<img ") == 5


def test_run_again_resumes_from_the_stored_result(tmp_path, capsys):
    assert _run(tmp_path, "an owl", "--images", "2", "--fail", "IMAGE_2") == 1
    first = capsys.readouterr().out
    assert "picture 2 failed" in first and "completed with errors" in first
    assert _run(tmp_path, "an owl", "--images", "2", "--no-retry") == 1
    second = capsys.readouterr().out
    assert "already finished" in second and "started" not in second
    with EntityGraph.open(tmp_path / "graph.sqlite") as graph:
        (root,) = graph.roots()
        assert len(graph.children(root.id)) == 4  # nothing was created twice


def test_run_again_draws_only_the_failed_image_again(tmp_path, capsys):
    assert _run(tmp_path, "an owl", "--images", "3", "--fail", "IMAGE_2") == 1
    capsys.readouterr()
    with EntityGraph.open(tmp_path / "graph.sqlite") as graph:
        (root,) = graph.roots()
        before = {c.name: c for c in graph.children(root.id)}
    assert _run(tmp_path, "an owl", "--images", "3") == 0
    out = capsys.readouterr().out
    assert "picture 2 started" in out and "picture 2 done" in out
    assert "picture 1 started" not in out and "completed: 3 pictures" in out
    with EntityGraph.open(tmp_path / "graph.sqlite") as graph:
        after = {c.name: c for c in graph.children(root.id)}
    assert after.keys() == before.keys()  # same children, none created twice
    for name in ("image-{{IMAGE_1}}", "image-{{IMAGE_3}}", "story-writer"):
        assert after[name].finished_at == before[name].finished_at  # not run again
    assert after["image-{{IMAGE_2}}"].status == "Completed"
    (page,) = (tmp_path / "out").glob("*.html")
    assert page.read_text().count("<img ") == 3 and "{{IMAGE_2}}" not in page.read_text()


def test_a_failed_picture_is_a_figure_on_the_page_until_a_rerun_draws_it(tmp_path, capsys):
    assert _run(tmp_path, "an owl", "--images", "3", "--fail", "IMAGE_2", "--no-tree") == 1
    assert "completed with errors: 2 pictures, 1 failed" in capsys.readouterr().out
    (path,) = (tmp_path / "out").glob("*.html")
    page = read_page(path.read_text())
    (figure,) = page.having("span", class_="storylab-missing")
    assert figure["data-placeholder"] == "{{IMAGE_2}}"
    with EntityGraph.open(tmp_path / "graph.sqlite") as graph:
        (root,) = graph.roots()
        writer = next(c for c in graph.children(root.id) if c.name == "story-writer")
    alt = writer.output["image_prompts"][1]["alt_text"]
    assert alt.startswith("Illustration 2: ")
    assert f"{MISSING_IMAGE_TEXT}{alt}" in page.text and "{{IMAGE_2}}" not in page.text
    assert len(page.having("img")) == 2

    assert _run(tmp_path, "an owl", "--images", "3", "--no-tree") == 0
    page = read_page(path.read_text())
    assert len(page.having("img")) == 3 and not page.having("span", class_="storylab-missing")
    assert [i["alt"] for i in page.having("img")][1] == alt  # drawn where the figure was


def test_a_story_whose_every_picture_failed_exits_non_zero_and_a_rerun_draws_them(tmp_path, capsys):
    argv = ("an owl", "--images", "2", "--no-tree")
    assert _run(tmp_path, *argv, "--fail", "IMAGE_1,IMAGE_2") == 1
    captured = capsys.readouterr()
    assert "picture 1 failed" in captured.out and "completed" not in captured.out
    (line,) = [ln for ln in captured.err.splitlines() if "every picture failed" in ln]
    assert line.startswith("story-pipeline-an-owl-") and ": failed: every picture failed " in line
    assert line.endswith("(2 of 2), so the story is stored as failed; run it again to draw "
                         "the pictures again")  # fmt: skip
    with EntityGraph.open(tmp_path / "graph.sqlite") as graph:
        (root,) = graph.roots()
        assert root.status == "Failed" and root.data["stage"] == "failed"
    assert not (tmp_path / "out").exists()  # no page claims to be the story

    assert _run(tmp_path, *argv) == 0
    out = capsys.readouterr().out
    assert "resuming (Failed)" in out and "completed: 2 pictures" in out
    assert "picture 1 done" in out and "picture 2 done" in out
    (path,) = (tmp_path / "out").glob("*.html")
    assert len(read_page(path.read_text()).having("img")) == 2


def test_a_placeholder_typed_in_a_topic_is_printed_on_the_page_not_drawn(tmp_path, capsys):
    topic = "a cat {{IMAGE_2}} who sings {{IMAGE_7}}"
    assert _run(tmp_path, topic, "--images", "2") == 0
    out = capsys.readouterr().out
    assert "image-{{IMAGE_7}}" not in out and "└── picture 2" in out
    with EntityGraph.open(tmp_path / "graph.sqlite") as graph:
        (root,) = graph.roots()
        kids = [c.name for c in graph.children(root.id) if c.type == "ImageGenerationEntity"]
    assert kids == ["image-{{IMAGE_1}}", "image-{{IMAGE_2}}"]
    (path,) = (tmp_path / "out").glob("*.html")
    html = path.read_text()
    page = read_page(html)
    assert f"A story about {topic} for readers" in page.text
    assert len(page.having("img")) == 2 and "{{IMAGE_" not in html


def test_several_topics_run_together(tmp_path, capsys):
    code = _run(tmp_path, "an owl", "a shy dragon", "--images", "3", "--global-limit", "4")
    assert code == 0
    out = capsys.readouterr().out
    assert "[an owl] 3 of 3 pictures drawn" in out and "[a shy dragon] 3 of 3 pictures drawn" in out
    assert len(list((tmp_path / "out").glob("*.html"))) == 2


INTERNAL_NAMES = ("illustration_count", "image_quality", "aspect_ratio", "num_images",
                  "fail_probability", "time_scale", "story_limit", "global_limit",
                  "base_url")  # fmt: skip


def _one_clear_line(err: str, prefix: str = "storylab run: error: ") -> str:
    assert "Traceback" not in err
    (line,) = err.splitlines()
    assert line.startswith(prefix)
    for name in INTERNAL_NAMES:
        assert name not in line
    return line


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["   "], "Topic is required"),
        (["owl", "--images", "0"], "argument --images: must be a whole number from 1 to 10"),
        (["owl", "--images", "99"], "argument --images: must be a whole number from 1 to 10; got"),
        (["owl", "--images", "two"], "argument --images: must be a whole number from 1 to 10"),
        (["owl", "--fail", "IMAGE_99"],
         "--fail IMAGE_99: no such image; allowed: IMAGE_1 to IMAGE_5 (the story has --images 5)"),
        (["owl", "--fail", "banana"], "--fail banana: no such image; allowed: IMAGE_1 to IMAGE_5"),
        (["owl", "--images", "2", "--fail", "IMAGE_1,IMAGE_3"],
         "--fail IMAGE_3: no such image; allowed: IMAGE_1 to IMAGE_2 (the story has --images 2)"),
        (["owl", "--images", "1", "--fail", "{{IMAGE_2}}"],
         "--fail {{IMAGE_2}}: no such image; allowed: IMAGE_1 (the story has --images 1)"),
        (["owl", "--images-url", "notaurl"],  # checked although the backend is simulated
         "argument --images-url: must be an http:// or https:// URL with a host, like "
         "http://127.0.0.1:8765; got 'notaurl'"),
        (["owl", "--images-url", "ftp://example.org"], "argument --images-url: must be an http://"),
        (["owl", "--images-url", "http://"], "argument --images-url: must be an http://"),
        (["owl", "--images-url", "http://h:port"], "argument --images-url: must be an http://"),
        (["owl", "--age-range", "abc"],
         "argument --age-range: must be two ages from 1 to 18, youngest first, like 3-5; got "
         "'abc'"),
        (["owl", "--age-range", "9-3"], "argument --age-range: must be two ages from 1 to 18"),
        (["owl", "--age-range", "3-40"], "argument --age-range: must be two ages from 1 to 18"),
        (["owl", "--style", "pastel"],
         "argument --style: invalid choice: 'pastel' (choose from 'watercolor', 'digital-art'"),
        (["owl", "--quality", "ultra"],
         "argument --quality: invalid choice: 'ultra' (choose from 'low', 'medium', 'high')"),
        (["owl", "--aspect", "5:4"], "argument --aspect: invalid choice: '5:4' (choose from '1:1'"),
        (["owl", "--backend", "dalle"],
         "argument --backend: invalid choice: 'dalle' (choose from 'simulated', 'http')"),
        (["owl", "--time-scale", "-1"], "argument --time-scale: must be a number > 0, like 0.05"),
        (["owl", "--time-scale", "inf"], "argument --time-scale: must be a number > 0"),
        (["owl", "--fail-probability", "1.5"],
         "argument --fail-probability: must be a probability from 0 to 1, like 0.25; got '1.5'"),
        (["owl", "--story-limit", "0"], "argument --story-limit: must be a whole number >= 1"),
        (["owl", "--global-limit", "ten"], "argument --global-limit: must be a whole number >= 1"),
        (["owl", "--backend", "http", "--fail", "IMAGE_1"],
         "--fail and --fail-probability need --backend simulated"),
    ],
)  # fmt: skip
def test_bad_input_is_refused_naming_the_flag_and_stores_nothing(tmp_path, capsys, argv, message):
    assert _run(tmp_path, *argv) == 2
    out, err = capsys.readouterr()
    assert message in _one_clear_line(err) and out == ""
    assert not (tmp_path / "graph.sqlite").exists()  # refused before the graph was opened
    assert not (tmp_path / "out").exists()


def test_a_library_error_is_shown_with_the_flag_not_the_field():
    from storylab.cli.args import flag_message

    text = "story_limit must be an integer >= 1, got 0; illustration_count must be between 1 and 10"
    assert flag_message(text) == (
        "--story-limit must be an integer >= 1, got 0; --images must be between 1 and 10"
    )
    # Only whole names: a field inside a longer word or a flag stays as it is.
    assert flag_message("my_story_limit and --story-limit") == "my_story_limit and --story-limit"


def test_leaving_out_a_default_is_the_same_story_as_passing_it(tmp_path, capsys):
    assert _run(tmp_path, "an owl", "--no-tree") == 0
    capsys.readouterr()
    defaults = ["--images", "5", "--style", "watercolor", "--quality", "medium",
                "--aspect", "3:2", "--age-range", " 3 - 10 "]  # fmt: skip
    assert _run(tmp_path, "an owl", *defaults, "--no-tree") == 0
    out = capsys.readouterr().out
    assert "already finished; using the stored result" in out and "started" not in out
    with EntityGraph.open(tmp_path / "graph.sqlite") as graph:
        (root,) = graph.roots()
        assert root.data["customization"] is None
    # A value that is not the default is another story (so the check above can fail).
    assert _run(tmp_path, "an owl", "--images", "4", "--no-tree") == 0
    assert "picture 4 started" in capsys.readouterr().out
    with EntityGraph.open(tmp_path / "graph.sqlite") as graph:
        assert len(graph.roots()) == 2


def test_serve_images_answers_over_http(tmp_path):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "storylab.cli",
            "serve-images",
            "--port",
            "0",
            "--time-scale",
            "0.001",
            "--max-concurrent",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert "serving simulated models on http://127.0.0.1:" in line
        url = line.split(" on ", 1)[1].split()[0]
        deadline = time.monotonic() + 10
        while True:
            try:
                r = httpx.post(
                    f"{url}/v1/images/generations",
                    json={"prompt": "an owl", "size": "1024x1024", "quality": "low"},
                    timeout=10,
                )
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert r.status_code == 200 and r.json()["data"][0]["b64_json"]
        assert (
            _run(
                tmp_path,
                "an owl",
                "--backend",
                "http",
                "--images-url",
                url,
                "--images",
                "2",
                "--quality",
                "low",
                "--no-tree",
            )
            == 0
        )
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_reader_that_goes_away_stops_the_run_quietly_and_it_resumes(tmp_path):
    graph_file = tmp_path / "graph.sqlite"
    argv = [sys.executable, "-m", "storylab.cli", "run", "a quick fox", "--graph", str(graph_file),
            "--out", str(tmp_path / "out"), "--time-scale", "0.01", "--no-tree"]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline().startswith(b"graph: ")
    proc.stdout.close()  # like `storylab run | head -1`
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 141
    assert b"Traceback" not in err
    done = subprocess.run(argv, capture_output=True, timeout=60, text=True)
    assert done.returncode == 0 and "completed: 5 pictures" in done.stdout


def test_progress_into_a_pipe_is_plain_lines_one_per_event(tmp_path):
    argv = [sys.executable, "-m", "storylab.cli", "run", "an owl", "--images", "2",
            "--fail", "IMAGE_2", "--graph", str(tmp_path / "graph.sqlite"),
            "--out", str(tmp_path / "out"), "--time-scale", "0.001", "--no-tree"]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, timeout=60, text=True)
    assert done.returncode == 1, done.stderr
    graph_line, *progress = done.stdout.splitlines()
    assert graph_line.startswith("graph: ")
    assert progress and all(line.startswith("[an owl] ") for line in progress)
    assert "\x1b" not in done.stdout and "\r" not in done.stdout  # no terminal tricks
    for line in ("picture 1 started", "picture 1 done",
                 "picture 2 started"):
        assert progress.count(f"[an owl] {line}") == 1
    (failed,) = [ln for ln in progress if "picture 2 failed" in ln]
    assert "simulated image failure for picture 2" in failed
    assert progress[-1].startswith("[an owl] completed with errors: 1 picture, 1 failed -> ")


def _digest(path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_file_that_is_no_usable_graph_is_one_line_and_exit_1_and_left_alone(
    tmp_path, capsys, unusable_graph
):
    path, message = unusable_graph
    before = _digest(path)
    assert _run(tmp_path, "an owl", "--graph", str(path)) == 1
    out, err = capsys.readouterr()
    assert message in _one_clear_line(err) and out == ""
    assert _digest(path) == before and not (tmp_path / "out").exists()


def test_a_read_only_graph_file_is_refused_before_anything_runs(tmp_path, capsys, make_read_only):
    assert _run(tmp_path, "an owl", "--images", "2", "--fail", "IMAGE_2", "--no-tree") == 1
    capsys.readouterr()
    graph_file = tmp_path / "graph.sqlite"
    before = _digest(graph_file)
    make_read_only(graph_file)
    # The retry would have to write: refused up front, nothing drawn, nothing half-done.
    assert _run(tmp_path, "an owl", "--images", "2", "--out", str(tmp_path / "out2")) == 1
    out, err = capsys.readouterr()
    line = _one_clear_line(err)
    assert "graph.sqlite is read-only" in line and "nothing was changed" in line
    assert out == "" and not (tmp_path / "out2").exists()
    assert _digest(graph_file) == before


def test_a_graph_on_a_read_only_disk_is_refused_in_one_line(tmp_path, on_read_only_mount):
    assert _run(tmp_path, "an owl", "--images", "2", "--no-tree") == 0
    argv = [sys.executable, "-m", "storylab.cli", "run", "an owl", "--images", "2",
            "--graph", "{ro}/graph.sqlite", "--out", str(tmp_path / "out2")]  # fmt: skip
    done = on_read_only_mount([tmp_path / "graph.sqlite"], argv)
    assert done.returncode == 1 and done.stdout == ""
    assert "cannot open the entity graph" in _one_clear_line(done.stderr)
    assert "read-only" in done.stderr


def test_a_graph_in_a_folder_that_cannot_be_made_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way")
    assert _run(tmp_path, "an owl", "--graph", str(blocker / "sub" / "g.sqlite")) == 2
    assert "(Not a directory)" in _one_clear_line(capsys.readouterr().err)


def _serve(*argv: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "storylab.cli", "serve-images", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port", "http"], "argument --port: must be a port from 1 to 65535, or 0 for any free"),
        (["--port", "70000"], "argument --port: must be a port from 1 to 65535"),
        (["--port", "-1"], "argument --port: must be a port from 1 to 65535"),
        (["--max-concurrent", "0"], "argument --max-concurrent: must be a whole number >= 1"),
        (["--retry-after", "-2"], "argument --retry-after: must be a number of seconds >= 0"),
        (["--time-scale", "nan"], "argument --time-scale: must be a number > 0"),
        (["--fail", "banana"], "--fail banana: not an image name; allowed: IMAGE_1, IMAGE_2, ..."),
    ],
)
def test_serve_images_refuses_bad_flags_in_one_line(argv, message):
    done = _serve(*argv)
    assert done.returncode == 2 and done.stdout == ""
    assert message in _one_clear_line(done.stderr, "storylab serve-images: error: ")


def test_serve_images_on_a_port_in_use_is_one_line_and_exit_1():
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _serve("--port", str(port))
    assert done.returncode == 1 and done.stdout == ""
    line = _one_clear_line(done.stderr, "storylab serve-images: error: ")
    assert f"cannot listen on 127.0.0.1 port {port} (--host/--port): Address already in use" in line


def _as_in_a_terminal():
    """Ctrl-C's default action, as a command started at a terminal has it.

    A shell without job control starts background commands with SIGINT
    ignored, and children inherit that: a test suite launched that way would
    otherwise start ``storylab run`` deaf to SIGINT (it then rightly runs to the
    end and exits 0), whatever the product does."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_stops_a_run_with_exit_130_and_it_resumes(tmp_path):
    import signal

    graph_file = tmp_path / "graph.sqlite"
    # About 5 s a picture at this scale: once one has started, the run cannot
    # end on its own before the signal arrives, however loaded the machine is.
    argv = [sys.executable, "-m", "storylab.cli", "run", "a slow owl", "--graph", str(graph_file),
            "--out", str(tmp_path / "out"), "--time-scale", "0.5", "--no-tree"]  # fmt: skip
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_as_in_a_terminal,
    )
    seen = []
    for line in proc.stdout:  # ready: inside the run, a picture is being drawn
        seen.append(line)
        if line.startswith("[a slow owl] picture ") and line.rstrip().endswith(" started"):
            break
    else:
        pytest.fail(f"no picture started: {seen} {proc.communicate()}")
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (seen, rest, err)
    assert err.strip().splitlines()[-1] == "interrupted; run the same command again to resume"
    assert "Traceback" not in err
    assert "completed" not in rest  # stopped while drawing, not after the end
    with EntityGraph.open(graph_file, create=False) as graph:
        (story,) = graph.roots()
        pictures = [c for c in graph.children(story.id) if c.name.startswith("image-")]
        kept = sum(p.status == "Completed" for p in pictures)
    assert story.status != "Completed" and kept < 5
    argv[argv.index("0.5")] = "0.001"
    done = subprocess.run(argv, capture_output=True, timeout=60, text=True)
    assert done.returncode == 0
    assert "resuming" in done.stdout and "completed: 5 pictures" in done.stdout
    redrawn = [line for line in done.stdout.splitlines() if line.endswith(" started")]
    assert len(redrawn) == 5 - kept, done.stdout  # only what was missing is drawn again


def test_the_offline_story_from_the_command_line_reads_as_a_story(tmp_path, capsys):
    import base64
    import html
    import io
    import re

    from PIL import Image

    from storylab.story.backends.text import plan_offline_story

    topic = "a brave kitten who learns to share"
    assert _run(tmp_path, topic, "--images", "3", "--style", "digital-art", "--no-tree") == 0
    capsys.readouterr()
    (page,) = (tmp_path / "out").glob("*.html")
    text = page.read_text()
    plan = plan_offline_story(topic)
    words = html.unescape(re.sub(r"<[^>]+>", " ", text.split("<body>")[1]))
    assert plan.theme == "sharing" and words.count("shar") >= 3
    assert f"{plan.hero}, {plan.hero_look}," in words
    pictures = re.findall(r'src="data:image/png;base64,([^"]+)"', text)
    assert len(pictures) == 3
    for data in pictures:
        img = Image.open(io.BytesIO(base64.b64decode(data)))
        assert img.format == "PNG" and img.size == (640, 427)


def test_the_safety_verdict_its_source_and_reason_are_stored_and_shown_by_eg(tmp_path, capsys):
    assert _run(tmp_path, "a bloody murder") == 1  # a rejected topic is no story
    capsys.readouterr()
    with EntityGraph.open(tmp_path / "graph.sqlite") as graph:
        (root,) = graph.roots()
        (check,) = graph.children(root.id)
        assert check.data["verdict"] == "unsafe"
        assert check.data["verdict_source"] == "offline rules"
        assert "murder" in check.data["verdict_reason"]
        assert check.output["source"] == "offline rules" and check.output["reason"]
    assert main(["eg", "tree", root.id, "--graph", str(tmp_path / "graph.sqlite")]) == 0
    tree = capsys.readouterr().out
    assert "verdict: unsafe by offline rules: violence" in tree


# -- a story keeps its seed --------------------------------------------------------


def _picture_keys(graph_file) -> dict[str, str | None]:
    with EntityGraph.open(graph_file, create=False) as graph:
        (root,) = graph.roots()
        return {
            c.name: (c.output or {}).get("object_key")
            for c in graph.children(root.id)
            if c.name.startswith("image-")
        }


def _snapshot(graph_file) -> list:
    with EntityGraph.open(graph_file, create=False) as graph:
        return [
            (n.id, n.name, n.status, n.data, n.output)
            for root in graph.roots()
            for n in [root, *graph.descendants(root.id)]
        ]


def test_a_different_seed_for_a_story_that_exists_is_refused_in_one_line(tmp_path, capsys):
    assert _run(tmp_path, "an owl", "--images", "2", "--seed", "3") == 0
    capsys.readouterr()
    graph_file = tmp_path / "graph.sqlite"
    with EntityGraph.open(graph_file, create=False) as graph:
        (root,) = graph.roots()
    assert root.data["seed"] == 3  # kept with the story
    before = _snapshot(graph_file)
    (page,) = (tmp_path / "out").glob("*.html")
    page_bytes = page.read_bytes()

    assert _run(tmp_path, "an owl", "--images", "2", "--seed", "5") == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    line = _one_clear_line(captured.err)
    assert "--seed 5" in line and "made with --seed 3" in line and "'an owl'" in line
    assert f"storylab stories redo {root.name} --seed 5" in line
    assert _snapshot(graph_file) == before and page.read_bytes() == page_bytes

    # The same seed, or none: the story is found and used as it is.
    for again in (["--seed", "3"], []):
        assert _run(tmp_path, "an owl", "--images", "2", *again) == 0
        assert "already finished" in capsys.readouterr().out
    assert _snapshot(graph_file) == before

    # What the refusal points at gives what was asked for.
    argv = ["stories", "redo", root.name, "--images", "2", "--seed", "5", "--graph",
            str(graph_file), "--out", str(tmp_path / "out"), "--time-scale", "0.001"]  # fmt: skip
    assert main(argv) == 0
    with EntityGraph.open(graph_file, create=False) as graph:
        (new,) = graph.roots()
    assert new.id != root.id and new.data["seed"] == 5


def test_a_story_goes_on_with_the_seed_it_was_begun_with(tmp_path, capsys):
    # Begun with --seed 3; picture 2 fails. Run again without --seed: picture 2
    # is drawn with seed 3, the same as in a story drawn whole with seed 3 (a
    # picture's key is the hash of its bytes, and the bytes depend on the seed).
    resumed, whole, default = (tmp_path / name for name in ("resumed", "whole", "default"))
    for folder in (resumed, whole, default):
        folder.mkdir()
    assert _run(resumed, "an owl", "--images", "2", "--seed", "3", "--fail", "IMAGE_2") == 1
    assert _picture_keys(resumed / "graph.sqlite")["image-{{IMAGE_2}}"] is None
    assert _run(resumed, "an owl", "--images", "2") == 0
    assert _run(whole, "an owl", "--images", "2", "--seed", "3") == 0
    assert _run(default, "an owl", "--images", "2") == 0
    capsys.readouterr()
    keys = {d.name: _picture_keys(d / "graph.sqlite") for d in (resumed, whole, default)}
    assert keys["resumed"] == keys["whole"]
    assert keys["default"]["image-{{IMAGE_2}}"] != keys["whole"]["image-{{IMAGE_2}}"]
    # A story made with the default seed resumes with it too; redo keeps the seed.
    argv = ["stories", "redo", "an owl", "--images", "2", "--graph", str(whole / "graph.sqlite"),
            "--out", str(whole / "out"), "--time-scale", "0.001"]  # fmt: skip
    assert main(argv) == 0
    assert _picture_keys(whole / "graph.sqlite") == keys["whole"]


def test_stories_made_with_different_seeds_are_not_run_together(tmp_path, capsys):
    assert _run(tmp_path, "an owl", "--images", "1", "--seed", "3") == 0
    assert _run(tmp_path, "a fox", "--images", "1") == 0
    capsys.readouterr()
    assert _run(tmp_path, "an owl", "a fox", "--images", "1") == 2
    line = _one_clear_line(capsys.readouterr().err)
    assert "different seeds" in line and "--seed 0: story-pipeline-a-fox" in line
    assert "--seed 3: story-pipeline-an-owl" in line


def test_a_story_that_never_began_takes_the_seed_of_the_run_that_begins_it(tmp_path, capsys):
    from storylab.story.entities import create_story

    graph_file = tmp_path / "graph.sqlite"
    with EntityGraph.open(graph_file) as graph:  # stopped before its first step
        story = create_story(graph, "an owl", {"illustration_count": 1})
        graph.merge_data(story.id, {"seed": 7})
    assert _run(tmp_path, "an owl", "--images", "1", "--seed", "2") == 0
    assert "completed: 1 picture" in capsys.readouterr().out
    with EntityGraph.open(graph_file, create=False) as graph:
        (root,) = graph.roots()
    assert root.id == story.id and root.data["seed"] == 2
