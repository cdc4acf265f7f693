"""Summarise what ``sitecustomize.py`` in this folder recorded:

    python bench/pg_lock_probe/summary.py PREFIX [PREFIX ...]

One line per kind (lock hold, lock wait, lease renewal, row or name lock): count, median,
90th and 99th percentile and maximum, in milliseconds, over every process
whose file starts with a PREFIX.
"""

from __future__ import annotations

import glob
import json
import sys


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(prefixes: list[str]) -> None:
    kinds: dict[str, list[float]] = {"hold": [], "wait": [], "renew": [], "rowlock": []}
    for prefix in prefixes:
        for path in glob.glob(f"{prefix}.*"):
            with open(path) as f:
                for line in f:
                    kind, seconds, *_ = json.loads(line)
                    if kind in kinds:
                        kinds[kind].append(seconds * 1000)
    for kind, values in kinds.items():
        if not values:
            print(f"{kind:6s} none")
            continue
        print(
            f"{kind:6s} n={len(values):5d}  median {_quantile(values, 0.5):7.1f} ms  "
            f"p90 {_quantile(values, 0.9):7.1f}  p99 {_quantile(values, 0.99):7.1f}  "
            f"max {max(values):7.1f}"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
