"""What makes the offline simulation look real, with no model and no network.

* :mod:`~storylab.story.offline.safety`: the rule-based safety check of a topic;
* :mod:`~storylab.story.offline.prompt`: the one structure of an image prompt
  (who, where, doing what, with which things, framed how), which the writer
  renders into prompt text and the drawer parses back;
* :mod:`~storylab.story.offline.themes`: the plots (ten beats, each with the frame
  of its picture) and the subjects a story can teach about (volcanoes, rain...);
* :mod:`~storylab.story.offline.writing`: the offline writer (cast, plot, page text);
* :mod:`~storylab.story.offline.drawing`: the offline illustrator (Pillow, imported
  only when a picture is drawn).

Nothing here is imported by ``import storylab``; the simulated backends import
it, and Pillow is imported only when a picture is drawn.
"""
