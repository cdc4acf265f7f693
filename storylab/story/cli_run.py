"""``storylab run``: generate illustrated stories from the command line.

Each topic becomes a story pipeline in the entity graph (by default
``./.storylab/graph.sqlite``), named from the topic and the options, so the
same command run again picks up where it stopped, or just re-writes the
finished page. Several topics run at once and share the global image limit.
Progress is printed one line per event; the HTML goes to ``--out`` and the
entity tree is printed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
from contextlib import aclosing
from pathlib import Path
from typing import Any, TextIO

from storylab.story.backends import IMAGE_BACKENDS, check_time_scale, make_image_backend
from storylab.story.backends.text import SimulatedTextBackend
from storylab.story.models import StoryValidationError, validate_story_request

__all__ = ["DEFAULT_TIME_SCALE", "DEFAULT_TOPIC", "configure", "main"]

DEFAULT_TOPIC = "a brave kitten who learns to share"
DEFAULT_TIME_SCALE = 0.05  # 10 model seconds per image -> half a second


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "topics", nargs="*", metavar="TOPIC", help=f"story topic(s) (default: {DEFAULT_TOPIC!r})"
    )
    parser.add_argument("--images", type=int, metavar="N", help="number of illustrations, 1-10")
    parser.add_argument("--style", help="watercolor, digital-art, colored-pencil, ...")
    parser.add_argument("--quality", help="image quality: low, medium, high")
    parser.add_argument("--aspect", help="aspect ratio: 1:1, 3:2, 2:3, 4:3, 16:9")
    parser.add_argument("--age-range", help='reader ages, e.g. "3-8"')
    parser.add_argument(
        "--fail",
        action="append",
        default=[],
        metavar="IMAGE_N",
        help="make this image fail (simulated backend; repeat or separate with commas)",
    )
    parser.add_argument(
        "--fail-probability", type=float, default=0.0, help="chance each image fails (simulated)"
    )
    parser.add_argument(
        "--time-scale",
        type=float,
        default=DEFAULT_TIME_SCALE,
        metavar="X",
        help=f"real seconds per model second (default {DEFAULT_TIME_SCALE})",
    )
    parser.add_argument(
        "--backend",
        default="simulated",
        metavar="NAME",
        help=f"image backend: {' or '.join(IMAGE_BACKENDS)} (default simulated)",
    )
    parser.add_argument(
        "--images-url",
        metavar="URL",
        help="base URL of the HTTP image service (default $STORYLAB_IMAGES_URL or a local "
        "`storylab serve-images`)",
    )
    parser.add_argument("--graph", metavar="PATH", help="entity graph file or folder")
    parser.add_argument("--out", default="out", metavar="DIR", help="folder for the HTML pages")
    parser.add_argument("--story-limit", type=int, default=3, help="images at once per story")
    parser.add_argument("--global-limit", type=int, default=10, help="images at once in total")
    parser.add_argument(
        "--sequential", action="store_true", help="one image after another (for comparison)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulated backends")
    parser.add_argument("--no-tree", action="store_true", help="do not print the entity tree")
    parser.add_argument(
        "--no-retry",
        action="store_true",
        help="if the story already finished with failed images, only show it (by default "
        "running it again draws the failed images again)",
    )


def _customization(args: argparse.Namespace) -> dict[str, Any] | None:
    # Only what the user chose, in a fixed order, so the pipeline name is stable.
    chosen = {
        "style": args.style,
        "image_quality": args.quality,
        "age_range": args.age_range,
        "illustration_count": args.images,
        "aspect_ratio": args.aspect,
    }
    cust = {k: v for k, v in chosen.items() if v is not None}
    return cust or None


def _fail(message: str) -> int:
    print(f"storylab run: error: {message}", file=sys.stderr)
    return 2


def main(args: argparse.Namespace) -> int:
    from storylab._sync import run_sync
    from storylab.story.settings import StorySettings

    topics = list(args.topics) or [DEFAULT_TOPIC]
    try:
        time_scale = check_time_scale(args.time_scale)
        if args.backend == "simulated":
            fail = [p for item in args.fail for p in item.split(",") if p.strip()]
            images = make_image_backend(
                "simulated",
                time_scale=time_scale,
                seed=args.seed,
                fail=fail,
                fail_probability=args.fail_probability,
            )
        else:
            if args.fail or args.fail_probability:
                raise ValueError("--fail and --fail-probability need --backend simulated")
            images = make_image_backend(args.backend, base_url=args.images_url)
        settings = StorySettings(
            images=images,
            text=SimulatedTextBackend(time_scale=time_scale, seed=args.seed),
            story_limit=args.story_limit,
            global_limit=args.global_limit,
            image_mode="sequential" if args.sequential else "parallel",
        )
    except ValueError as exc:
        return _fail(str(exc))
    return run_sync(_run(topics, _customization(args), settings, args, sys.stdout))


async def _run(topics, customization, settings, args, out: TextIO) -> int:
    from storylab.entities import EntityGraph, GraphFileGoneError
    from storylab.story.entities import create_story
    from storylab.story.settings import use_settings

    # Image failures are reported on the progress lines; keep the library's
    # warnings for them out of the terminal.
    logging.getLogger("storylab.story").addHandler(logging.NullHandler())
    graph = EntityGraph.open(args.graph)
    try:
        # Validate every request before anything runs or is stored.
        try:
            for t in topics:
                validate_story_request(t, customization)
        except StoryValidationError as exc:
            return _fail(str(exc))
        # Running a request again finishes it: pictures that failed last time
        # are drawn again, finished ones are kept (unless --no-retry).
        retry = not args.no_retry
        pipelines = [create_story(graph, t, customization, retry_failed=retry) for t in topics]
        unique = list({p.id: p for p in pipelines}.values())
        out_dir = Path(args.out)
        print(f"graph: {graph.path}", file=out)
        with use_settings(settings):
            results = await asyncio.gather(
                *(_one(graph, p, out_dir, out) for p in unique), return_exceptions=True
            )
        code = 0
        gone = False
        for pipeline, result in zip(unique, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, Exception) or isinstance(result, BrokenPipeError):
                    raise result  # the reader of our output left: nothing more to say
                print(f"{pipeline.name}: failed: {result}", file=sys.stderr)
                gone = gone or isinstance(result, GraphFileGoneError)
                code = 1
            elif result.get("stage") != "completed":
                code = 1
        if not args.no_tree and not gone:  # a deleted graph has no tree worth showing
            for pipeline in unique:
                print(file=out)
                print(_tree(graph, pipeline.id), file=out)
        return code
    finally:
        graph.close()
        aclose = getattr(settings.images, "aclose", None)
        if aclose is not None:  # the HTTP backend's connection pool
            await aclose()


def _label(topic: str) -> str:
    topic = " ".join(topic.split())
    return topic if len(topic) <= 24 else topic[:23] + "…"


def _report(env, pipeline, started: set[str], say) -> None:
    """One progress line for the envelopes a person wants to see."""
    if env.entity_id == pipeline.id:
        if env.type == "STATUS" and env.status == "RUNNING":
            say(env.message)
    elif env.entity_type == "ImageGenerationEntity":
        if env.type == "STATUS" and env.status == "STARTED":
            started.add(env.entity_id)
            say(f"{env.entity_name} started")
        elif env.type == "STATUS" and env.status == "COMPLETED":
            say(f"{env.entity_name} done")
        elif env.type == "VALUE" and env.sub_type == "return":
            if env.entity_id not in started:  # a finished child hands back its output
                say(f"{env.entity_name} already done")
        elif env.type == "ERROR":
            say(f"{env.entity_name} FAILED: {env.message}")


async def _one(graph, pipeline, out_dir: Path, out: TextIO) -> dict[str, Any]:
    from storylab.story.entities import story_html

    label = _label(pipeline.data["topic"])

    def say(text: str) -> None:
        print(f"[{label}] {text}", file=out, flush=True)

    if pipeline.status == "Completed":
        say("already finished; using the stored result")
    elif pipeline.status != "Pending":
        lease = graph.lease(pipeline.id)
        if lease is None or graph.lease_state(lease) != "live":
            say(f"resuming ({pipeline.status})")
        # else: another process runs it, and the run says it is waiting for it
    started: set[str] = set()
    run = pipeline.start()
    # aclosing: if printing fails (a closed pipe), the run is closed here,
    # while the graph is still open, and stays resumable.
    async with aclosing(run):
        async for env in run:
            _report(env, pipeline, started, say)
    result = run.result
    # Nothing is "done" until it is stored: a failed commit or a deleted graph
    # file is raised here, not discovered by the next run.
    graph.flush()
    stage = result.get("stage")
    if stage == "rejected":
        reasons = "; ".join((result.get("safety_result") or {}).get("concerns") or [])
        say(f"rejected by the safety check: {reasons}")
        return result
    html = story_html(graph, result)
    summary = f"{stage}: {result.get('image_count')} images"
    if result.get("failed_images"):
        summary += f", {result['failed_images']} failed"
    if html is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{pipeline.name}.html"
        try:
            _write_atomically(path, html)
        except OSError as exc:
            raise OSError(
                exc.errno,
                f"could not write the page to {path} ({exc.strerror or exc}); the story is "
                "stored: run the same command again to write it",
            ) from exc
        summary += f" -> {path}"
    say(summary)
    return result


def _write_atomically(path: Path, text: str) -> None:
    """Write ``path`` through a temporary file renamed into place, so that a
    reader (or another run writing the same page) never sees half a page."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _tree(graph, node_id: str) -> str:
    from storylab.entities.cli import format_tree

    return format_tree(graph, node_id)
