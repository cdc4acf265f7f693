"""Build hook: ship the tutorial notebooks inside the package.

The notebooks stay where learners and editors expect them, in the
repository's ``notebooks/`` folder. When a wheel is built (from the
repository or from the sdist, which carries ``notebooks/``), they are copied
into the built package as ``storylab/notebooks/``, where
``storylab notebooks`` finds them. An editable install has no built copy and
reads ``notebooks/`` next to the package instead (storylab/_tutorial_files.py).
All metadata lives in pyproject.toml.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "notebooks"


class build_py_with_notebooks(build_py):  # noqa: N801 (setuptools' naming)
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        notebooks = sorted(SOURCE.glob("*.ipynb"))
        if not notebooks:
            raise SystemExit(f"setup.py: no notebooks found in {SOURCE}; the tutorial must ship")
        target = Path(self.build_lib) / "storylab" / "notebooks"
        target.mkdir(parents=True, exist_ok=True)
        for path in notebooks:
            shutil.copyfile(path, target / path.name)


setup(cmdclass={"build_py": build_py_with_notebooks})
