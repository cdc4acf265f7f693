from __future__ import annotations

import hashlib

import pytest

from storylab.entities import BlobStore, EntityGraph, UnknownBlobError

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))


def test_blobs_are_content_addressed_beside_the_graph(tmp_path):
    with EntityGraph.open(tmp_path / "graph.sqlite") as g:
        key = g.blobs.put(PNG, "image/png")
        assert key == hashlib.sha256(PNG).hexdigest() + ".png"
        assert g.blobs.put(PNG, "image/png") == key  # stored once
        assert g.blobs.get(key) == PNG
        path = g.blobs.path_for(key)
        assert path.is_file() and path.is_relative_to(tmp_path / "graph.blobs")
        assert g.blobs.content_type(key) == "image/png"
        assert [p.name for p in path.parent.iterdir()] == [key]  # no temp files left


def test_bad_blob_input_gets_clear_errors(tmp_path):
    with EntityGraph.open(tmp_path / "graph.sqlite") as g:
        with pytest.raises(ValueError, match="content_type must be one of .*image/png"):
            g.blobs.put(PNG, "image/bmp")
        with pytest.raises(TypeError, match="blob data must be bytes"):
            g.blobs.put("text", "text/plain")
        with pytest.raises(UnknownBlobError, match="not a blob key"):
            g.blobs.get("../../etc/passwd")
        with pytest.raises(UnknownBlobError, match="no blob"):
            g.blobs.get("0" * 64 + ".png")
        assert not (tmp_path / "graph.blobs").exists()


def test_a_blob_cut_short_under_its_key_is_written_whole_again(tmp_path):
    store = BlobStore(tmp_path / "blobs")
    data = b"\x89PNG" + bytes(range(256)) * 40
    key = store.put(data, "image/png")
    store.path_for(key).write_bytes(data[:100])  # as a crash mid-write in place would leave it
    assert store.put(data, "image/png") == key
    assert store.get(key) == data
    assert [p.name for p in store.path_for(key).parent.iterdir()] == [key]  # no temporary left


def test_a_blob_refused_just_before_its_rename_leaves_no_file(tmp_path):
    store = BlobStore(tmp_path / "blobs")
    calls = []

    def refuse():
        calls.append(sorted(p.name for p in store.root.rglob("*")))  # the bytes are on disk
        raise RuntimeError("lease lost meanwhile")

    with pytest.raises(RuntimeError, match="lease lost meanwhile"):
        store.put(b"late picture", "image/png", before_rename=refuse)
    assert len(calls) == 1 and any(name.endswith(".tmp") for name in calls[0])
    assert [p for p in store.root.rglob("*") if p.is_file()] == []  # neither file nor temp
    key = store.put(b"late picture", "image/png", before_rename=lambda: None)
    assert store.get(key) == b"late picture"
