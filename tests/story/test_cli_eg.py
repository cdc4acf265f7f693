"""``storylab eg`` on stories made by ``storylab run``: what run prints, eg accepts."""

from __future__ import annotations

import hashlib
import re

import pytest

from storylab.cli import main
from storylab.entities import EntityGraph

# Internal names a reader should never meet in what the command line prints.
INTERNAL = ("{{IMAGE_", "image-{{", "FINAL", "fb-image-gen", " 1 images", "Entity (", "_with_")


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run(tmp_path, *argv: str) -> int:
    base = ["--graph", str(tmp_path / "graph.sqlite"), "--out", str(tmp_path / "out")]
    return main(["run", *base, "--time-scale", "0.001", *argv])


def _eg(capsys, tmp_path, *argv: str) -> tuple[int, str, str]:
    code = main(["eg", "--graph", str(tmp_path / "graph.sqlite"), *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def stories(tmp_path, capsys):
    """Three stories: one with a failed picture, one refused, one whole."""
    assert _run(tmp_path, "an owl who counts stars", "--images", "3", "--fail", "IMAGE_2") == 1
    assert _run(tmp_path, "how to build a bomb") == 1  # refused: not a story
    assert _run(tmp_path, "a shy dragon", "--images", "1") == 0
    out = capsys.readouterr().out
    with EntityGraph.open(tmp_path / "graph.sqlite", read_only=True) as g:
        roots = {r.data["topic"]: r for r in g.roots()}
    return tmp_path, roots, out


def test_what_run_prints_is_in_a_readers_words(stories):
    _, _, out = stories
    for word in INTERNAL:
        assert word not in out, word
    assert "picture 2 failed" in out and "1 picture" in out
    assert "completed with errors: 2 pictures, 1 failed" in out


def test_eg_accepts_a_name_a_unique_id_prefix_or_the_topic(stories, capsys):
    tmp_path, roots, _ = stories
    owl = roots["an owl who counts stars"]
    before = _digest(tmp_path / "graph.sqlite")
    trees = []
    for ref in (owl.id, owl.name, owl.id[:20], "An owl  who counts STARS"):
        code, out, err = _eg(capsys, tmp_path, "tree", ref)
        assert code == 0 and err == "", (ref, err)
        trees.append(out)
    assert len(set(trees)) == 1
    code, out, _ = _eg(capsys, tmp_path, "node", "io", "a shy dragon")
    assert code == 0 and '"topic": "a shy dragon"' in out
    assert _digest(tmp_path / "graph.sqlite") == before


def test_an_ambiguous_prefix_is_refused_with_the_candidates(stories, capsys):
    tmp_path, roots, _ = stories
    with EntityGraph.open(tmp_path / "graph.sqlite", read_only=True) as g:
        every = [roots[t].id for t in roots]
        every += [c.id for r in roots.values() for c in g.children(r.id)]
    prefix = every[0][:4]
    fitting = [i for i in every if i.startswith(prefix)]
    assert len(fitting) > 1  # ids made within a minute share their start
    code, out, err = _eg(capsys, tmp_path, "tree", prefix)
    assert code == 1 and out == "" and "Traceback" not in err
    first, *candidates = err.splitlines()
    assert first == (
        f"storylab eg: error: '{prefix}' fits {len(fitting)} entities; give more of the id:"
    )
    assert len(candidates) == len(fitting)
    for line in candidates:
        short = line.split()[0]
        assert [i for i in fitting if i.startswith(short)] != []
    assert any("story “a shy dragon”" in line for line in candidates)


def test_tree_prints_names_and_short_ids_that_eg_accepts(stories, capsys):
    tmp_path, roots, _ = stories
    owl = roots["an owl who counts stars"]
    code, out, _ = _eg(capsys, tmp_path, "tree", owl.name)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith(f"story “an owl who counts stars” ({owl.name})  ")
    # the entity did its job (Completed); the story's outcome follows in brackets
    assert "Status: Completed  (outcome: completed with errors)" in lines[0]
    assert [re.sub(r"\s+\S+\s+Status:.*", "", ln) for ln in lines[1:]] == [
        "  ├── safety check",
        "  ├── story writer",
        "  ├── picture 1",
        "  ├── picture 2",
        "  └── picture 3",
    ]
    assert "simulated image failure for picture 2" in lines[4]
    for word in INTERNAL:
        assert word not in out, word
    # Each short id is accepted by eg and names that line's node.
    short = lines[4].split()[3]
    code, node, _ = _eg(capsys, tmp_path, "node", short)
    assert code == 0 and '"name": "image-{{IMAGE_2}}"' in node  # stored names unchanged


def _shortest_unique(node_id: str, every: list[str], at_least: int = 8) -> int:
    """Brute force: the fewest characters (``at_least`` or more, not ending on
    a dash) of ``node_id`` that no other id starts with."""
    n = at_least
    while node_id[n - 1] == "-" or any(o != node_id and o.startswith(node_id[:n]) for o in every):
        n += 1
    return n


def test_short_ids_in_a_tree_or_a_list_have_one_length_and_stay_unique(stories, capsys):
    tmp_path, roots, _ = stories
    with EntityGraph.open(tmp_path / "graph.sqlite", read_only=True) as g:
        every = [n.id for r in g.roots() for n in [r, *g.descendants(r.id)]]
        owl = roots["an owl who counts stars"]
        tree_ids = [owl.id, *(c.id for c in g.children(owl.id))]
    code, tree, _ = _eg(capsys, tmp_path, "tree", owl.name)
    assert code == 0
    code, listed, _ = _eg(capsys, tmp_path, "list")
    assert code == 0
    for out, ids in ((tree, tree_ids), (listed, [r.id for r in roots.values()])):
        shown = re.findall(r"\b[0-9a-f]{8}-[0-9a-f-]*\b", out)
        assert len(shown) == len(ids)
        # One length for every row: the longest any of them needs to be unique.
        want = max(_shortest_unique(i, every) for i in ids)
        assert {len(s) for s in shown} == {want}, shown
        for short in shown:
            assert [i for i in every if i.startswith(short)] == [
                next(i for i in ids if i.startswith(short))
            ]
    # Each is accepted by eg and names its row's node.
    for short, node_id in zip(re.findall(r"\b[0-9a-f]{8}-[0-9a-f-]*\b", tree), tree_ids,
                              strict=True):  # fmt: skip
        code, node, _ = _eg(capsys, tmp_path, "node", short)
        assert code == 0 and f'"id": "{node_id}"' in node


def test_list_shows_topic_state_and_counts_of_pictures(stories, capsys):
    tmp_path, roots, _ = stories
    code, out, _ = _eg(capsys, tmp_path, "list")
    assert code == 0
    by_topic = {t: next(ln for ln in out.splitlines() if f"“{t}”" in ln) for t in roots}
    assert "  rejected  " in by_topic["how to build a bomb"]
    assert "pictures: 0 done, 0 failed, 0 reused" in by_topic["how to build a bomb"]
    owl = by_topic["an owl who counts stars"]
    assert "  completed with errors  " in owl and "pictures: 2 done, 1 failed, 0 reused" in owl
    assert "  completed  " in by_topic["a shy dragon"]
    assert "Completed" not in out
    for word in INTERNAL:
        assert word not in out, word

    # A rerun draws the failed picture and keeps the two others.
    assert _run(tmp_path, "an owl who counts stars", "--images", "3", "--no-tree") == 0
    capsys.readouterr()
    code, out, _ = _eg(capsys, tmp_path, "list")
    owl = next(ln for ln in out.splitlines() if "“an owl who counts stars”" in ln)
    assert "  completed  " in owl and "pictures: 1 done, 0 failed, 2 reused" in owl


def test_control_characters_in_a_topic_never_reach_the_terminal(tmp_path, capsys):
    topic = "a \x1b[31mred\x1b[0m fox\x07 who \x1b]0;owned\x07hops"
    code = _run(tmp_path, topic, "--images", "1")
    out, err = capsys.readouterr()
    assert code == 0, err
    code, listed, _ = _eg(capsys, tmp_path, "list")
    for text in (out, err, listed):
        assert "\x1b" not in text and "\x07" not in text
    assert "[a red fox who hops]" in out and "“a red fox who hops”" in listed
    with EntityGraph.open(tmp_path / "graph.sqlite", read_only=True) as g:
        (root,) = g.roots()
    assert root.data["topic"] == topic  # the stored topic is the user's own


def test_a_long_topic_is_printed_whole_where_it_fits(tmp_path, capsys):
    one = "a very small hedgehog who learns to count the stars"
    two = "a very small hedgehog who learns to count the clouds"
    assert _run(tmp_path, one, two, "--images", "1", "--no-tree") == 0
    out = capsys.readouterr().out
    assert f"[{one}] completed" in out and f"[{two}] completed" in out
