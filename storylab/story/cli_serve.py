"""``storylab serve-images``: the simulated image generator behind a real HTTP API.

Starts an OpenAI-compatible ``POST /v1/images/generations`` server on
loopback that answers ``429`` past ``--max-concurrent`` requests in flight.
Point ``storylab run --backend http`` (or a notebook) at it to see what the
capacity limits save. Stop it with Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

__all__ = ["configure", "main"]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--port", type=int, default=8765, help="port (0 picks a free one)")
    parser.add_argument(
        "--max-concurrent", type=int, default=4, help="requests served at once before 429"
    )
    parser.add_argument(
        "--retry-after", type=float, default=1.0, help="seconds announced in Retry-After"
    )
    parser.add_argument(
        "--time-scale", type=float, default=0.05, help="real seconds per model second"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulated generator")
    parser.add_argument(
        "--fail", action="append", default=[], metavar="IMAGE_N", help="make this image fail"
    )
    parser.add_argument(
        "--fail-probability", type=float, default=0.0, help="chance each request fails"
    )
    parser.add_argument(
        "--require-api-key",
        action="store_true",
        help="require $STORYLAB_IMAGES_API_KEY as a bearer token",
    )


def main(args: argparse.Namespace) -> int:
    from storylab.story.backends.images import SimulatedImageBackend
    from storylab.story.backends.server import ImageServer

    try:
        api_key = None
        if args.require_api_key:
            api_key = os.environ.get("STORYLAB_IMAGES_API_KEY")
            if not api_key:
                raise ValueError("--require-api-key needs STORYLAB_IMAGES_API_KEY to be set")
        generator = SimulatedImageBackend(
            time_scale=args.time_scale,
            seed=args.seed,
            fail=[p for item in args.fail for p in item.split(",") if p.strip()],
            fail_probability=args.fail_probability,
        )
        server = ImageServer(
            generator,
            host=args.host,
            port=args.port,
            max_concurrent=args.max_concurrent,
            retry_after=args.retry_after,
            api_key=api_key,
        )
    except ValueError as exc:
        print(f"storylab serve-images: error: {exc}", file=sys.stderr)
        return 2

    async def serve() -> None:
        try:
            await server.start()
        except OSError as exc:
            raise SystemExit(f"storylab serve-images: error: cannot listen: {exc}") from None
        print(
            f"serving simulated images on {server.url} (POST /v1/images/generations, "
            f"at most {server.max_concurrent} at once, then 429)",
            flush=True,
        )
        try:
            await server.serve_forever()
        finally:
            await server.close()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        s = server.statistics()
        print(f"stopped: {s.served} served, {s.rejected} refused with 429", file=sys.stderr)
    return 0
