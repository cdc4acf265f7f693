"""``storylab serve-images``: the simulated models behind a real OpenAI-compatible API.

Starts a server on loopback with ``POST /v1/images/generations`` (the
simulated image generator), ``POST /v1/chat/completions`` (the offline
writer) and ``POST /v1/moderations`` (the offline safety rules), answering
``429`` past ``--max-concurrent`` requests in flight. Point ``storylab run
--backend http --text-backend http`` (or a notebook) at it to run the whole
HTTP path offline and see what the capacity limits save. Stop it with Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys

from storylab.cli.args import (
    EXIT_FAILED,
    EXIT_USAGE,
    flag_message,
    non_negative_float,
    port,
    positive_float,
    positive_int,
    probability,
)

__all__ = ["configure", "main"]

MAX_BODY = 1 << 20  # the server's own defaults (storylab.story.backends.server),
IDLE_TIMEOUT = 30.0  # repeated here so that `--help` does not import the server


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument(
        "--port", type=port, default=8765, help="port, 1-65535 (default 8765; 0 picks a free one)"
    )
    parser.add_argument(
        "--max-concurrent", type=positive_int, default=4, help="requests served at once before 429"
    )
    parser.add_argument(
        "--retry-after",
        type=non_negative_float,
        default=1.0,
        help="seconds announced in Retry-After",
    )
    parser.add_argument(
        "--time-scale", type=positive_float, default=0.05, help="real seconds per model second"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulated generator")
    parser.add_argument(
        "--fail", action="append", default=[], metavar="IMAGE_N", help="make this image fail"
    )
    parser.add_argument(
        "--fail-probability", type=probability, default=0.0, help="chance each request fails, 0-1"
    )
    parser.add_argument(
        "--max-body",
        type=positive_int,
        default=MAX_BODY,
        metavar="BYTES",
        help=f"refuse a request body larger than this with 413 (default {MAX_BODY})",
    )
    parser.add_argument(
        "--idle-timeout",
        type=positive_float,
        default=IDLE_TIMEOUT,
        metavar="SECONDS",
        help="close a connection that sends nothing for this long, between requests or "
        f"within one (default {IDLE_TIMEOUT:g})",
    )
    parser.add_argument(
        "--require-api-key",
        action="store_true",
        help="require $STORYLAB_IMAGES_API_KEY as a bearer token",
    )


_IMAGE_NAME = re.compile(r"(?:\{\{)?IMAGE_([1-9]\d*)(?:\}\})?|[1-9]\d*")


def _failing_images(items: list[str]) -> list[str]:
    # The server does not know how many images a story has: only the form is checked.
    names = [p.strip() for item in items for p in item.split(",") if p.strip()]
    for name in names:
        if not _IMAGE_NAME.fullmatch(name):
            raise ValueError(f"--fail {name}: not an image name; allowed: IMAGE_1, IMAGE_2, ...")
    return names


def main(args: argparse.Namespace) -> int:
    from storylab.story.backends.images import SimulatedImageBackend
    from storylab.story.backends.server import ImageServer
    from storylab.story.backends.text import SimulatedTextBackend

    try:
        api_key = None
        if args.require_api_key:
            api_key = os.environ.get("STORYLAB_IMAGES_API_KEY")
            if not api_key:
                raise ValueError("--require-api-key needs STORYLAB_IMAGES_API_KEY to be set")
        text = SimulatedTextBackend(time_scale=args.time_scale, seed=args.seed)
        generator = SimulatedImageBackend(
            time_scale=args.time_scale,
            seed=args.seed,
            fail=_failing_images(args.fail),
            fail_probability=args.fail_probability,
        )
        server = ImageServer(
            generator,
            text=text,
            host=args.host,
            port=args.port,
            max_concurrent=args.max_concurrent,
            retry_after=args.retry_after,
            api_key=api_key,
            max_body=args.max_body,
            idle_timeout=args.idle_timeout,
        )
    except ValueError as exc:
        print(f"storylab serve-images: error: {flag_message(str(exc))}", file=sys.stderr)
        return EXIT_USAGE

    async def serve() -> int:
        try:
            await server.start()
        except OSError as exc:  # in use, not ours to bind, or no such address
            # asyncio rewords the error; the errno's own text is the clear part.
            # (A name lookup failure has a negative errno and its own text.)
            errno = exc.errno or 0
            reason = os.strerror(errno) if errno > 0 else (exc.strerror or str(exc))
            print(
                f"storylab serve-images: error: cannot listen on {args.host} port {args.port} "
                f"(--host/--port): {reason}",
                file=sys.stderr,
            )
            return EXIT_FAILED
        print(
            f"serving simulated models on {server.url} (POST /v1/images/generations, "
            "/v1/chat/completions and /v1/moderations; "
            f"at most {server.max_concurrent} at once, then 429)",
            flush=True,
        )
        try:
            await server.serve_forever()
        finally:
            await server.close()
        return 0

    try:
        return asyncio.run(serve())
    except KeyboardInterrupt:  # the normal way to stop a server: exit 0
        s = server.statistics()
        print(f"stopped: {s.served} served, {s.rejected} refused with 429", file=sys.stderr)
    return 0
