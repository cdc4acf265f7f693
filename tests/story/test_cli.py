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
    assert "Generated 5/5 images" in out and "image-{{IMAGE_3}} done" in out
    assert "StoryPipelineEntity (story-pipeline-a-brave-kitten" in out
    assert "└── ImageGenerationEntity (image-{{IMAGE_5}})" in out
    (page,) = (tmp_path / "out").glob("*.html")
    assert page.read_text().count("<img ") == 5


def test_run_again_resumes_from_the_stored_result(tmp_path, capsys):
    assert _run(tmp_path, "an owl", "--images", "2", "--fail", "IMAGE_2") == 1
    first = capsys.readouterr().out
    assert "image-{{IMAGE_2}} FAILED" in first and "completed_with_errors" in first
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
    assert "image-{{IMAGE_2}} started" in out and "image-{{IMAGE_2}} done" in out
    assert "image-{{IMAGE_1}} started" not in out and "completed: 3 images" in out
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
    assert "completed_with_errors: 2 images, 1 failed" in capsys.readouterr().out
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
    assert "image-{{IMAGE_1}} FAILED" in captured.out and "completed" not in captured.out
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
    assert "resuming (Failed)" in out and "completed: 2 images" in out
    assert "image-{{IMAGE_1}} done" in out and "image-{{IMAGE_2}} done" in out
    (path,) = (tmp_path / "out").glob("*.html")
    assert len(read_page(path.read_text()).having("img")) == 2


def test_a_placeholder_typed_in_a_topic_is_printed_on_the_page_not_drawn(tmp_path, capsys):
    topic = "a cat {{IMAGE_2}} who sings {{IMAGE_7}}"
    assert _run(tmp_path, topic, "--images", "2") == 0
    out = capsys.readouterr().out
    assert "image-{{IMAGE_7}}" not in out and "└── ImageGenerationEntity (image-{{IMAGE_2}})" in out
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
    assert "[an owl] Generated 3/3 images" in out and "[a shy dragon] Generated 3/3 images" in out
    assert len(list((tmp_path / "out").glob("*.html"))) == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["   "], "Topic is required"),
        (["owl", "--style", "pastel"], "Invalid style. Must be one of: watercolor, digital-art"),
        (["owl", "--quality", "ultra"], "Invalid image_quality. Must be one of: low, medium, high"),
        (["owl", "--aspect", "5:4"], "Invalid aspect_ratio. Must be one of: 1:1, 3:2, 2:3"),
        (["owl", "--images", "0"], "illustration_count must be between 1 and 10"),
        (["owl", "--backend", "dalle"], "Unknown image backend 'dalle'. Must be one of: simulated"),
        (["owl", "--time-scale", "-1"], "time_scale must be a number > 0"),
        (["owl", "--story-limit", "0"], "story_limit must be an integer >= 1"),
    ],
)
def test_bad_input_is_refused_and_stores_nothing(tmp_path, capsys, argv, message):
    assert _run(tmp_path, *argv) == 2
    assert message in capsys.readouterr().err
    if (tmp_path / "graph.sqlite").exists():
        with EntityGraph.open(tmp_path / "graph.sqlite") as graph:
            assert graph.roots() == []
    assert not (tmp_path / "out").exists()


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
        assert "serving simulated images on http://127.0.0.1:" in line
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
    assert done.returncode == 0 and "completed: 5 images" in done.stdout
