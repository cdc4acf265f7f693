"""``storylab run``: generate illustrated stories from the command line.

Each topic becomes a story pipeline in the entity graph (by default
``./.storylab/graph.sqlite``), named from the topic and the options, so the
same command run again picks up where it stopped, or just re-writes the
finished page. Several topics run at once and share the global image limit.
Progress is printed by the text form of the viz layer's progress panel, one
line per event; the HTML goes to ``--out`` and the entity tree is printed at
the end.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import re
import sqlite3
import sys
from contextlib import ExitStack, aclosing
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, cast

from storylab.cli.args import (
    EXIT_FAILED,
    EXIT_USAGE,
    age_range,
    flag_message,
    graph_location,
    http_url,
    int_in_range,
    positive_float,
    positive_int,
    probability,
)
from storylab.story.backends import (
    IMAGE_BACKENDS,
    TEXT_BACKENDS,
    check_time_scale,
    make_image_backend,
    make_text_backend,
)
from storylab.story.models import (
    DEFAULT_ILLUSTRATION_COUNT,
    MAX_ILLUSTRATIONS,
    MIN_ILLUSTRATIONS,
    AspectRatioOption,
    IllustrationStyle,
    ImageQualityLevel,
    normalized_customization,
    validate_story_request,
)

if TYPE_CHECKING:  # pragma: no cover
    from storylab.viz.progress import ProgressPanel

__all__ = ["DEFAULT_TIME_SCALE", "DEFAULT_TOPIC", "configure", "main"]

DEFAULT_TOPIC = "a brave kitten who learns to share"
DEFAULT_TIME_SCALE = 0.05  # 10 model seconds per image -> half a second


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "topics", nargs="*", metavar="TOPIC", help=f"story topic(s) (default: {DEFAULT_TOPIC!r})"
    )
    parser.add_argument(
        "--images",
        type=int_in_range(MIN_ILLUSTRATIONS, MAX_ILLUSTRATIONS),
        metavar="N",
        help=f"number of illustrations, {MIN_ILLUSTRATIONS}-{MAX_ILLUSTRATIONS} "
        f"(default {DEFAULT_ILLUSTRATION_COUNT})",
    )
    parser.add_argument(
        "--style", choices=[s.value for s in IllustrationStyle], help="default watercolor"
    )
    parser.add_argument(
        "--quality", choices=[q.value for q in ImageQualityLevel], help="default medium"
    )
    parser.add_argument(
        "--aspect", choices=[r.value for r in AspectRatioOption], help="aspect ratio (default 3:2)"
    )
    parser.add_argument(
        "--age-range", type=age_range, metavar="LO-HI", help='reader ages (default "3-10")'
    )
    parser.add_argument(
        "--fail",
        action="append",
        default=[],
        metavar="IMAGE_N",
        help="make this image fail (simulated backend; repeat or separate with commas)",
    )
    parser.add_argument(
        "--fail-probability",
        type=probability,
        default=0.0,
        help="chance each image fails, 0 to 1 (simulated)",
    )
    parser.add_argument(
        "--time-scale",
        type=positive_float,
        default=DEFAULT_TIME_SCALE,
        metavar="X",
        help=f"real seconds per model second (default {DEFAULT_TIME_SCALE})",
    )
    parser.add_argument(
        "--backend",
        default="simulated",
        choices=IMAGE_BACKENDS,
        metavar="NAME",
        help=f"image backend: {' or '.join(IMAGE_BACKENDS)} (default simulated)",
    )
    parser.add_argument(
        "--images-url",
        type=http_url,
        metavar="URL",
        help="base URL of the HTTP image service, with or without /v1 (default "
        "$STORYLAB_IMAGES_URL, $OPENAI_BASE_URL or a local `storylab serve-images`)",
    )
    parser.add_argument(
        "--images-model",
        type=_model_name,
        metavar="NAME",
        help="HTTP backend: the image model, e.g. gpt-image-1.5, gpt-image-1-mini or dall-e-3 "
        "(default gpt-image-1.5); only the parameters and sizes it accepts are sent",
    )
    parser.add_argument(
        "--text-backend",
        default="simulated",
        choices=TEXT_BACKENDS,
        metavar="NAME",
        help=f"story writer and safety check: {' or '.join(TEXT_BACKENDS)} (an "
        "OpenAI-compatible chat service; default simulated)",
    )
    parser.add_argument(
        "--text-url",
        type=http_url,
        metavar="URL",
        help="base URL of the chat service, with or without /v1, e.g. "
        "http://localhost:11434/v1 for Ollama (default $STORYLAB_TEXT_URL, $OPENAI_BASE_URL "
        "or a local `storylab serve-images`)",
    )
    parser.add_argument(
        "--text-model",
        type=_model_name,
        metavar="NAME",
        help="--text-backend http: the chat model, e.g. gpt-5.4-mini or llama3.2 "
        "(default $STORYLAB_TEXT_MODEL or gpt-5.4-mini)",
    )
    parser.add_argument(
        "--attempt-timeout",
        type=_positive("a number of seconds"),
        metavar="SECONDS",
        help="HTTP backend: give up one attempt (connect, wait, whole answer) after this long; "
        "it is then retried (default 180)",
    )
    parser.add_argument(
        "--image-timeout",
        type=_positive("a number of seconds"),
        metavar="SECONDS",
        help="HTTP backend: give up one picture after this long, every attempt and wait "
        "included; the other pictures go on (default 600)",
    )
    parser.add_argument(
        "--max-response-mb",
        type=_positive("a number of MiB"),
        metavar="MIB",
        help="HTTP backend: refuse an answer larger than this many MiB (default 32)",
    )
    parser.add_argument(
        "--graph",
        type=graph_location,
        metavar="PATH",
        help="entity graph file or folder (its folder must exist; default "
        "$STORYLAB_HOME/graph.sqlite or ./.storylab/graph.sqlite, created as needed), or a "
        "postgresql:// URL",
    )
    parser.add_argument("--out", default="out", metavar="DIR", help="folder for the HTML pages")
    parser.add_argument(
        "--story-limit", type=positive_int, default=3, help="images at once per story"
    )
    parser.add_argument(
        "--global-limit", type=positive_int, default=10, help="images at once in total"
    )
    parser.add_argument(
        "--sequential", action="store_true", help="one image after another (for comparison)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed of the simulated backends (default 0); it is kept with the story, and a "
        "story that exists goes on with its own (`storylab stories redo` makes it anew)",
    )
    parser.add_argument("--no-tree", action="store_true", help="do not print the entity tree")
    parser.add_argument(
        "--open",
        action="store_true",
        help="open each written page in the web browser ($BROWSER, or the system's own)",
    )
    parser.add_argument(
        "--cluster",
        type=_cluster_spec,
        metavar="SPEC",
        help="run the stories on Dask worker processes under one global limit: local:N "
        "(N processes on this machine) or tcp://host:port (a running scheduler whose workers "
        'share this machine\'s graph file); needs pip install "storylab[dask]"',
    )
    parser.add_argument(
        "--lease-timeout",
        type=_positive("a number of seconds"),
        default=None,
        metavar="SECONDS",
        help="--cluster: a dead or stopped worker's global units come back after this long; "
        "at least twice --attempt-timeout (default 10, or twice --attempt-timeout if that is more)",
    )
    parser.add_argument(
        "--no-retry",
        action="store_true",
        help="if the story already finished with failed images, only show it (by default "
        "running it again draws the failed images again)",
    )


def _positive(what: str):
    """An argparse type: a finite number > 0 (argparse names the flag in its error)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (value > 0 and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"must be {what} > 0, got {text!r}")
        return value

    return parse


def _model_name(text: str) -> str:
    """An argparse type: a model's name (no spaces, not empty)."""
    name = text.strip()
    if not name or any(c.isspace() for c in name):
        raise argparse.ArgumentTypeError(
            f"must be a model's name without spaces, like gpt-image-1; got {text!r}"
        )
    return name


def _text_backend(args: argparse.Namespace, time_scale: float):
    """The writer and safety check the flags ask for (``--text-*``)."""
    if args.text_backend == "simulated":
        if args.text_url or args.text_model:
            raise ValueError("--text-url and --text-model need --text-backend http")
        return make_text_backend("simulated", time_scale=time_scale, seed=_seed(args))
    options: dict[str, Any] = {}
    model = args.text_model or os.environ.get("STORYLAB_TEXT_MODEL")
    if model:
        options["model"] = model
    try:
        return make_text_backend("http", base_url=args.text_url, **options)
    except ValueError as exc:  # a URL from the environment that is no URL
        raise ValueError(
            f"--text-url (or $STORYLAB_TEXT_URL / $OPENAI_BASE_URL): {exc}".replace("base_url ", "")
        ) from None


def _cluster_spec(text: str) -> str:
    """An argparse type: ``local:N`` or ``tcp://host:port``."""
    from storylab.story.cluster import CLUSTER_HELP, parse_cluster

    try:
        parse_cluster(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {CLUSTER_HELP}; got {text!r}") from None
    return text


def _http_options(args: argparse.Namespace) -> dict[str, Any]:
    """The HTTP backend's deadline and size options that were given."""
    options: dict[str, Any] = {}
    if args.attempt_timeout is not None:
        options["attempt_timeout"] = args.attempt_timeout
    if args.image_timeout is not None:
        options["image_timeout"] = args.image_timeout
    if args.max_response_mb is not None:
        options["max_response_bytes"] = max(1, round(args.max_response_mb * 2**20))
    return options


def _customization(args: argparse.Namespace) -> dict[str, Any] | None:
    # Only what the user chose, in a fixed order, so the pipeline name is
    # stable; a value equal to the default is the default (same story).
    chosen = {
        "style": args.style,
        "image_quality": args.quality,
        "age_range": args.age_range,
        "illustration_count": args.images,
        "aspect_ratio": args.aspect,
    }
    return normalized_customization({k: v for k, v in chosen.items() if v is not None})


_IMAGE_NAME = re.compile(r"(?:\{\{)?IMAGE_(\d+)(?:\}\})?|(\d+)")


def _failing_images(args: argparse.Namespace) -> list[str]:
    """The ``--fail`` placeholders, each checked against the story's ``--images``."""
    count = DEFAULT_ILLUSTRATION_COUNT if args.images is None else args.images
    allowed = "IMAGE_1" if count == 1 else f"IMAGE_1 to IMAGE_{count}"
    names = []
    for item in args.fail:
        for part in (p.strip() for p in item.split(",")):
            if not part:
                continue
            m = _IMAGE_NAME.fullmatch(part)
            n = int(m.group(1) or m.group(2)) if m else 0
            if not 1 <= n <= count:
                raise ValueError(
                    f"--fail {part}: no such image; allowed: {allowed} "
                    f"(the story has --images {count})"
                )
            names.append(f"IMAGE_{n}")
    return names


def _fail(message: str, code: int = EXIT_USAGE) -> int:
    print(f"storylab run: error: {flag_message(message)}", file=sys.stderr)
    return code


DEFAULT_SEED = 0


def _seed(args: argparse.Namespace) -> int:
    return DEFAULT_SEED if args.seed is None else args.seed


def _existing_story(graph, topic: str, customization: Any):
    """The story this request would resume, or None when it would start one."""
    import hashlib

    from storylab.story.models import pipeline_name

    name = pipeline_name(topic, validate_story_request(topic, customization))
    digest = hashlib.sha256(topic.strip().encode("utf-8")).hexdigest()[:8]
    for candidate in (name, f"{name}-t{digest}"):  # as create_story names it
        node = graph.find_root(candidate)
        if node is not None and (node.data or {}).get("topic") == topic.strip():
            return None if node.status == "Pending" else node
    return None


def _story_seeds(graph, topics, customization, given: int | None) -> tuple[int | None, str | None]:
    """The seed this run must use, or a refusal.

    A story keeps the seed it was begun with (in its data; one stored before
    seeds were kept was made with the default): running it again goes on with
    that seed, since pictures drawn with another would not match the story's
    text. A ``--seed`` that differs from a stored story's is refused rather
    than silently ignored, with the way to get what was asked for.
    """
    seeds: dict[int, list[str]] = {}
    for topic in topics:
        node = _existing_story(graph, topic, customization)
        if node is None:
            continue
        stored = (node.data or {}).get("seed", DEFAULT_SEED)
        stored = stored if isinstance(stored, int) else DEFAULT_SEED
        if given is not None and given != stored:
            from storylab._text import printable

            return None, (
                f"--seed {given}: the story {printable(topic, LABEL_WIDTH)!r} ({node.name}) "
                f"exists, made with --seed {stored}, and goes on with that seed; to make it "
                f"again with --seed {given}: storylab stories redo {node.name} --seed {given}"
            )
        seeds.setdefault(stored, []).append(node.name)
    if given is not None:
        return given, None
    if len(seeds) > 1:
        made = "; ".join(f"--seed {s}: {', '.join(names)}" for s, names in sorted(seeds.items()))
        return None, (
            f"these stories exist with different seeds ({made}); run each with its own command"
        )
    return next(iter(seeds), DEFAULT_SEED), None


def main(args: argparse.Namespace) -> int:
    from storylab._sync import run_sync
    from storylab.story.settings import StorySettings

    topics = list(args.topics) or [DEFAULT_TOPIC]
    customization = _customization(args)
    try:
        # Every request is checked before anything runs or is stored (even the graph).
        for t in topics:
            validate_story_request(t, customization)
        time_scale = check_time_scale(args.time_scale)
        http_options = _http_options(args)
        fail = _failing_images(args)
        if args.backend == "simulated":
            if http_options:
                raise ValueError(
                    "--attempt-timeout, --image-timeout and --max-response-mb need --backend http"
                )
            if args.images_model:
                raise ValueError("--images-model needs --backend http")
            images = make_image_backend(
                "simulated",
                time_scale=time_scale,
                seed=_seed(args),
                fail=fail,
                fail_probability=args.fail_probability,
            )
        else:
            if args.fail or args.fail_probability:
                raise ValueError("--fail and --fail-probability need --backend simulated")
            if args.images_model:
                http_options["model"] = args.images_model
            images = make_image_backend(args.backend, base_url=args.images_url, **http_options)
        text = _text_backend(args, time_scale)
        settings = StorySettings(
            images=images,
            text=text,
            # The model named on the command line is the image entities' pool, so
            # each stored picture says which model it was asked of.
            model_pool=args.images_model,
            story_limit=args.story_limit,
            global_limit=args.global_limit,
            image_mode="sequential" if args.sequential else "parallel",
        )
    except ValueError as exc:
        return _fail(str(exc))
    if args.cluster:
        return _run_on_cluster(topics, customization, settings, args, sys.stdout)
    return run_sync(_run(topics, customization, settings, args, sys.stdout))


def _run_on_cluster(topics, customization, settings, args, out: TextIO) -> int:
    """``--cluster``: each story is a Dask task on a worker process; pages and
    the tree are written here from the shared graph once the stories end."""
    try:
        import distributed  # noqa: F401
    except ModuleNotFoundError:
        return _fail('--cluster needs Dask distributed: pip install "storylab[dask]"')
    from storylab.entities import EntityGraph
    from storylab.entities.blobs import write_atomically
    from storylab.story.cluster import (
        cluster_lease_timeout,
        gather_stories,
        open_cluster,
        submit_stories,
    )
    from storylab.story.entities import story_html

    try:
        lease_timeout = cluster_lease_timeout(args.lease_timeout, settings)
    except ValueError as exc:
        return _fail(str(exc))
    # A story keeps its seed on a cluster too: checked before a cluster is
    # started or anything is stored, read from the graph if there is one.
    from storylab.entities import GraphNotFoundError

    try:
        with EntityGraph.open(args.graph, create=False, read_only=True) as graph:
            seed, refusal = _story_seeds(graph, topics, customization, args.seed)
    except GraphNotFoundError:  # a new graph: no story has a seed yet
        seed, refusal = _seed(args), None
    if refusal is not None:
        return _fail(refusal)
    for backend in (settings.images, settings.text):
        if getattr(backend, "seed", seed) != seed:  # a simulated one, built with the default
            backend.seed = seed
    out_dir = Path(args.out)
    code = 0
    with ExitStack() as stack:
        try:
            client = stack.enter_context(open_cluster(args.cluster, lease_timeout=lease_timeout))
        except OSError as exc:  # no scheduler at that address, a refused connection
            return _fail(
                f"--cluster {args.cluster}: cannot reach the scheduler ({exc})", EXIT_FAILED
            )
        workers = len(client.scheduler_info().get("workers", {}))
        print(f"cluster: {client.scheduler.address} ({workers} workers)", file=out, flush=True)
        from storylab.story.entities import create_story

        with EntityGraph.open(args.graph) as graph:
            # Kept with the stories it begins, before any worker draws (as a
            # local run does: a Pending story has drawn nothing yet).
            for topic in topics:
                node = graph.get_node(create_story(graph, topic, customization).id)
                if node.status == "Pending" and (node.data or {}).get("seed") != seed:
                    graph.merge_data(node.id, {"seed": seed})
        futures, path = submit_stories(
            client,
            topics,
            customization,
            graph=args.graph,
            settings=settings,
            retry_failed=not args.no_retry,
            lease_timeout=lease_timeout,
        )
        print(f"graph: {path}", file=out, flush=True)
        with EntityGraph.open(path, create=False) as graph:

            def finished(story) -> None:
                nonlocal code
                result = story.result
                stage = result.get("stage")
                say = f"[{_label(story.topic)}] {stage}: {result.get('image_count')} images"
                if result.get("failed_images"):
                    say += f", {result['failed_images']} failed"
                if stage != "completed":
                    code = EXIT_FAILED
                html = story_html(graph, result)
                if html is not None:
                    out_dir.mkdir(parents=True, exist_ok=True)
                    from storylab.story.words import page_file_name

                    page = out_dir / f"{page_file_name(story.pipeline, story.topic)}.html"
                    write_atomically(page, html.encode("utf-8"))
                    say += f" -> {page}"
                where = f"worker pid {story.pid}"
                if story.restarts:
                    where += (
                        f", run again {story.restarts}x: its worker stood still and lost "
                        "its share of the global limit"
                    )
                from storylab.story.words import user_line

                print(user_line(f"{say} ({where})"), file=out, flush=True)

            try:
                run = gather_stories(client, futures, path, on_story=finished)
            except Exception as exc:  # a story raised on its worker, or its workers kept dying
                print(
                    f"storylab run: error: a story failed on the cluster: {exc!r}; the graph "
                    "keeps what was stored: run the same command again to resume",
                    file=sys.stderr,
                )
                return EXIT_FAILED
            if not args.no_tree:
                for story in run.stories:
                    print(file=out)
                    print(_tree(graph, story.pipeline_id), file=out)
    return code


async def _run(topics, customization, settings, args, out: TextIO) -> int:
    from storylab.entities import EntityGraph, EntityGraphError, GraphFileGoneError
    from storylab.story.entities import acreate_story
    from storylab.story.settings import use_settings
    from storylab.viz.progress import ProgressPanel

    # Image failures are reported on the progress lines, and a graph that
    # cannot be written in one line at the end; keep the library's warnings
    # (and their tracebacks) out of the terminal.
    for name in ("storylab.story", "storylab.entities"):
        logging.getLogger(name).addHandler(logging.NullHandler())
    graph = None
    try:
        try:
            graph = EntityGraph.open(args.graph)
        except EntityGraphError as exc:  # not a graph, a newer one, read-only: nothing changed
            return _fail(str(exc), EXIT_FAILED)
        except (sqlite3.Error, OSError) as exc:  # a full disk while the file is made
            where = args.graph or "the default graph"
            return _fail(f"cannot create or open the entity graph {where}: {exc}", EXIT_FAILED)
        # A damaged file is refused before anything is written to it.
        check = getattr(graph, "integrity_problems", None)  # the SQLite store's
        problems = check() if check is not None else []
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            return _fail(
                f"the entity graph {graph.path} is damaged: {problems[0]}{more}; nothing was "
                "written. `storylab eg check` lists every problem; restore the file from a "
                "copy, or move it away to start a new graph",
                EXIT_FAILED,
            )
        seed, refusal = _story_seeds(graph, topics, customization, args.seed)
        if refusal is not None:  # checked before anything is stored
            return _fail(refusal)
        for backend in (settings.images, settings.text):
            if getattr(backend, "seed", seed) != seed:  # a simulated one, built with the default
                backend.seed = seed
        # Running a request again finishes it: pictures that failed last time
        # are drawn again, finished ones are kept (unless --no-retry).
        retry = not args.no_retry
        pipelines = [
            await acreate_story(graph, t, customization, retry_failed=retry) for t in topics
        ]
        await graph.writable()  # the seeds below are written without waiting on the loop
        for p in pipelines:
            node = graph.get_node(p.id)
            # Kept with the story it begins (a Pending one has drawn nothing yet,
            # so a seed stored by a run stopped before it began is replaced).
            if node.status == "Pending" and (node.data or {}).get("seed") != seed:
                graph.merge_data(p.id, {"seed": seed})
        unique = list({p.id: p for p in pipelines}.values())
        out_dir = Path(args.out)
        print(f"graph: {graph.path}", file=out)
        # Lines, wherever stdout goes (a terminal or a pipe): the outcome and
        # the tree below say how each story ended, so no summary block.
        words = cast(TextIO, _UserWords(out))  # a text stream in all but name
        panel = ProgressPanel(form="text", stream=words, summary_at_end=False)
        with use_settings(settings):
            results = await asyncio.gather(
                *(_one(graph, p, out_dir, panel, args.open) for p in unique), return_exceptions=True
            )
        panel.close()
        code = 0
        gone = False
        for pipeline, result in zip(unique, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, Exception) or isinstance(result, BrokenPipeError):
                    raise result  # the reader of our output left: nothing more to say
                print(f"{pipeline.name}: failed: {_reason(result)}", file=sys.stderr)
                gone = gone or isinstance(result, GraphFileGoneError)
                code = EXIT_FAILED
            elif result.get("stage") != "completed":
                code = EXIT_FAILED
        if not gone and _rate_limited(graph, unique):
            print(
                "hint: the image service answered 429 (too many requests) until pictures gave "
                f"up; lower --global-limit (now {args.global_limit}) or --story-limit (now "
                f"{args.story_limit}) to what it accepts, and run the same command again",
                file=sys.stderr,
            )
        if not args.no_tree and not gone:  # a deleted graph has no tree worth showing
            for pipeline in unique:
                print(file=out)
                print(_tree(graph, pipeline.id), file=out)
        return code
    finally:
        if graph is not None:
            await graph.aclose()
        for backend in (settings.images, settings.text):
            aclose = getattr(backend, "aclose", None)
            if aclose is not None:  # an HTTP backend's connection pool
                await aclose()


def _rate_limited(graph, pipelines) -> bool:
    """Whether a picture of these stories failed on HTTP 429 answers."""
    import json

    for pipeline in pipelines:
        for child in graph.children(pipeline.id):
            if child.status == "Failed" and "HTTP 429" in json.dumps(child.error):
                return True
    return False


def _reason(error: BaseException) -> str:
    """An error in one line, without Python's ``[Errno 28]`` decoration."""
    if isinstance(error, OSError) and error.strerror and not error.filename:
        return error.strerror
    return " ".join(str(error).split()) or type(error).__name__


LABEL_WIDTH = 60  # characters of a topic shown before each progress line


def _label(topic: str) -> str:
    from storylab._text import printable

    return printable(topic, LABEL_WIDTH)


async def _one(
    graph, pipeline, out_dir: Path, panel: ProgressPanel, open_page: bool = False
) -> dict[str, Any]:
    from storylab.story.entities import story_html

    label = _label(pipeline.data["topic"])

    def say(text: str) -> None:
        panel.note(text, root=pipeline.id, label=label)

    if pipeline.status == "Completed":
        say("already finished; using the stored result")
    elif pipeline.status != "Pending":
        lease = graph.lease(pipeline.id)
        if lease is None or graph.lease_state(lease) != "live":
            say(f"resuming ({pipeline.status})")
        # else: another process runs it, and the run says it is waiting for it
    run = pipeline.start()
    # aclosing: if printing fails (a closed pipe), the run is closed here,
    # while the graph is still open, and stays resumable.
    async with aclosing(run):
        result = await panel.watch(run, root=pipeline.id, label=label)
    # Nothing is "done" until it is stored: a failed commit or a deleted graph
    # file is raised here, not discovered by the next run (and another
    # process's write lock is awaited, so the other stories keep moving).
    await graph.settle()
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
        from storylab.story.words import page_file_name

        path = out_dir / f"{page_file_name(pipeline.name, pipeline.data['topic'])}.html"
        try:
            from storylab.entities.blobs import write_atomically

            write_atomically(path, html.encode("utf-8"))
        except OSError as exc:
            raise OSError(
                exc.errno,
                f"could not write the page to {path} ({exc.strerror or exc}); the story is "
                "stored: run the same command again to write it",
            ) from exc
        summary += f" -> {path}"
    say(summary)
    if html is not None and open_page:
        _open_page(path, say)
    return result


def _open_page(path: Path, say) -> None:
    import webbrowser

    try:
        opened = webbrowser.open(path.resolve().as_uri())
    except webbrowser.Error:
        opened = False
    if not opened:
        say(f"could not open a web browser; the page is {path}")


def _tree(graph, node_id: str) -> str:
    from storylab.entities.reading import Words, format_tree
    from storylab.story.words import describe, story_summary, user_line

    return format_tree(graph, node_id, Words(describe, story_summary, user_line))


class _UserWords:
    """A text stream that words progress lines for a reader (``picture 2
    failed``, not ``image-{{IMAGE_2}} FAILED``); the graph keeps its names."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        from storylab.story.words import user_line

        return self._stream.write(user_line(text))

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)
