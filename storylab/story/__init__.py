"""The illustrated-story pipeline: the worked example built on the layers below.

``models`` holds the request/result types, validation and deterministic
names; ``html`` the assembly of the final page; ``backends`` the image and
text backends (simulated by default, HTTP optionally); ``settings`` which
backends and limits the entities use.
"""
