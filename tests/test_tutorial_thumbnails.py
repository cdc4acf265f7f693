"""story_thumbnails: a finished story's pictures, small, without the page around them."""

from __future__ import annotations

import asyncio
import re

import pytest

from storylab.tutorial import fresh_graph, run_stories, simulated_settings, story_thumbnails


def test_the_thumbnails_are_the_pages_pictures_with_their_alt_text(tmp_path):
    graph = fresh_graph("thumbs", home=tmp_path)
    run = asyncio.run(run_stories(graph, ["a shy hedgehog"], panel=None,
                                  settings=simulated_settings(0.002)))
    strip = story_thumbnails(graph, run.result, width=90).data
    images = re.findall(r'<img src="data:image/png;base64,[^"]+" alt="([^"]+)"', strip)
    assert len(images) == 5 and all(alt.startswith("Illustration") for alt in images), images
    assert strip.count('width="90"') == 5 and "<p" not in strip  # pictures only, no text
    with pytest.raises(ValueError, match="width must be"):
        story_thumbnails(graph, run.result, width=4)
    with pytest.raises(ValueError, match="no story page"):
        story_thumbnails(graph, {"stage": "rejected"})
    graph.close()
