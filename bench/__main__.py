"""``python -m bench``: run a benchmark and print its results as a Markdown table."""

from __future__ import annotations

import argparse
import sys

from bench import http, throughput


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
    args = parser.parse_args(argv)
    if args.command == "http":
        return http.main(args)
    return throughput.main(args)


if __name__ == "__main__":
    sys.exit(main())
