"""The viz layer reads traces and graph stores: it never loads the story
pipeline, and its drawing libraries load only when something is drawn."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

VIZ = Path(__file__).resolve().parents[2] / "storylab" / "viz"
HEAVY = ("matplotlib", "networkx", "ipywidgets", "IPython", "PIL", "httpx", "nh3")
_IMPORT_OF_STORY = re.compile(r"^\s*(?:from|import)\s+storylab\.story\b", re.MULTILINE)


def _loaded_after(code: str) -> list[str]:
    probe = (
        f"import json, sys\n{code}\n"
        "print(json.dumps(sorted(m for m in sys.modules "
        f"if m.split('.')[0] in {HEAVY!r} or m.startswith('storylab.story'))))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_every_viz_module_loads_neither_story_nor_a_drawing_library():
    modules = sorted(
        ".".join(p.relative_to(VIZ).with_suffix("").parts).removesuffix(".__init__")
        for p in VIZ.rglob("*.py") if p.name != "__init__.py" or p.parent != VIZ
    )
    assert {"progress", "progress.model", "progress.panel", "progress.replay",
            "progress.text", "progress.widget", "readings", "sweep_plots",
            "timeline"} <= set(modules)
    code = "\n".join(f"import storylab.viz.{m}" for m in modules)
    assert _loaded_after(code) == []


def test_the_layering_probe_sees_a_story_import():
    assert "storylab.story" in _loaded_after("import storylab.story")


def test_no_viz_source_imports_the_story_layer():
    offenders = [p.name for p in VIZ.rglob("*.py") if _IMPORT_OF_STORY.search(p.read_text())]
    assert offenders == []
    assert _IMPORT_OF_STORY.search("    from storylab.story.entities import x\n")
