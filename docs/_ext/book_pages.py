"""A small Sphinx extension for the storylab book (loaded from _config.yml).

sphinx-thebe 0.3.1 registers its inline configuration script once per read
phase, and a Jupyter Book build has two, so every page declared the same
``const`` twice and the browser reported an error on each page. This keeps
the first of any scripts that are exact duplicates (same file, same inline
body), which is what the page meant to load.
"""

from __future__ import annotations


def _drop_duplicate_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen = set()
    kept = []
    for script in scripts:
        key = (
            # an inline script's filename is None or "", depending on who added it
            str(getattr(script, "filename", script) or ""),
            repr(sorted(getattr(script, "attributes", {}).items())),
        )
        if key in seen:
            continue
        seen.add(key)
        kept.append(script)
    context["script_files"] = kept


def setup(app):
    # Early: the event stops at the first handler that returns a template name.
    app.connect("html-page-context", _drop_duplicate_scripts, priority=100)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
