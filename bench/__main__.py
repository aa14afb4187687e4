"""``python -m bench``: run a benchmark and print its results as a Markdown table."""

from __future__ import annotations

import argparse
import sys

from bench import authz, http, throughput, w3, w4
from bench.peers import command as peers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmarks of the aragora control plane, printed as Markdown tables "
        "with ratios against a floor measured in the same run.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    throughput.add_arguments(
        commands.add_parser(
            "throughput",
            help="tasks per second through submit -> claim -> complete, per store",
            description=throughput.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    http.add_arguments(
        commands.add_parser(
            "http",
            help="requests per second through aragora serve: submit, claim + complete",
            description=http.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    authz.add_arguments(
        commands.add_parser(
            "authz",
            help="microseconds per submit in authentication, policy and rate limiting",
            description=authz.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    peers.add_arguments(
        commands.add_parser(
            "peers",
            help="our control plane against peer task queues (celery, rq, arq, saq, ...)",
            description=peers.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    w3.add_arguments(
        commands.add_parser(
            "w3",
            help="W1 and W2 through aragora serve and the SDK agent, against the library",
            description=w3.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    w4.add_arguments(
        commands.add_parser(
            "w4",
            help="scale: claim latency at 1k vs 1M pending, heartbeat cost, bytes per task",
            description=w4.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    args = parser.parse_args(argv)
    if args.command == "w4":
        return w4.main(args)
    if args.command == "w3":
        return w3.main(args)
    if args.command == "http":
        return http.main(args)
    if args.command == "peers":
        return peers.main(args)
    if args.command == "authz":
        return authz.main(args)
    return throughput.main(args)


if __name__ == "__main__":
    sys.exit(main())
