"""``storylab`` as a real child process, and a look at a SQLite graph's write lock.

The child imports storylab from this checkout (the repository root goes first
on its ``PYTHONPATH``), whatever is installed.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOPIC = "an owl who counts the stars"
IMAGES = 4


def cli_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment, the checkout first on ``PYTHONPATH``, plus ``extra``."""
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, **(extra or {})}


def storylab_run(
    graph: Path,
    out: Path,
    *argv: str,
    time_scale: str = "0.02",
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen:
    """Start ``storylab run`` on the story of :data:`TOPIC` with :data:`IMAGES` pictures.

    ``argv`` is added to the command line and ``env`` to the environment; the
    process's output is piped as text (read it with ``communicate``).
    """
    cmd = [sys.executable, "-m", "storylab.cli", "run", TOPIC, "--images", str(IMAGES)]
    cmd += ["--graph", str(graph), "--out", str(out), "--time-scale", time_scale, "--no-tree"]
    return subprocess.Popen(
        [*cmd, *argv],
        env=cli_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def write_lock_is_free(path: str | Path) -> bool:
    """Whether no connection holds the write lock of the SQLite file at ``path`` right now."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()
