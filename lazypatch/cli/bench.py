"""``lazypatch bench STORE``: measure random-access throughput of a store side by side
with baselines."""

from __future__ import annotations


def add_arguments(parser) -> None:
    from ._bench import add_arguments as add

    add(parser)


def run(args) -> int:
    from ._bench import run as bench

    return bench(args)
