"""The ``lazypatch`` command line: one module per command, all through the public API.

``main(argv=None) -> int`` is testable in-process; ``python -m lazypatch``
and the ``lazypatch`` console script both call it. Each command module has
``add_arguments(parser)`` and ``run(args) -> int``; shared argument helpers
live in ``_args`` below them. Command modules import what a command needs when
it runs, so ``lazypatch --help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys

from .. import _compat
from .._version import __version__
from ..errors import LazypatchError

__all__ = ["main", "build_parser"]

# (command, help); each is the module lazypatch.cli.<command>
COMMANDS = (
    ("build", "write a store (or shards) from a folder of image files"),
    ("info", "describe a store"),
    ("index", "compute label statistics or a foreground filter into a sidecar file"),
    ("show", "draw an image with its patch grid and a grid of sample patches (PNG)"),
    ("verify", "re-read every image and compare with the checksums written at build time"),
    ("manifest", "name shards built separately (build --shard-index) as one store"),
    ("export", "write stitched predictions as NIfTI, OME-TIFF or GeoTIFF with their geometry"),
    ("bench", "measure random-access throughput side by side with baselines"),
    ("demo", "build a store from sample images and read patches from it"),
)


def _modules() -> dict:
    from . import bench, build, demo, export, index, info, manifest, show, verify

    return {"build": build, "info": info, "index": index, "show": show, "verify": verify,
            "manifest": manifest, "export": export, "bench": bench, "demo": demo}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lazypatch",
        description="Random-access training patches from image collections larger than RAM.",
    )
    parser.add_argument("--version", action="version", version=f"lazypatch {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    modules = _modules()
    for name, text in COMMANDS:
        sub = commands.add_parser(name, help=text)
        modules[name].add_arguments(sub)
        sub.set_defaults(func=modules[name].run)
    return parser


def _message(exc: BaseException) -> str:
    """An error as a line: OSErrors without their ``[Errno N]`` prefix."""
    if isinstance(exc, OSError) and exc.strerror and exc.errno is not None:
        return exc.strerror + (f": {exc.filename!r}" if exc.filename else "")
    return str(exc)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    import warnings

    def one_line(message, category, filename, lineno, line=None):
        return f"lazypatch {args.command}: warning: {message}\n"

    previous, warnings.formatwarning = warnings.formatwarning, one_line  # printed like the errors
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # `lazypatch info ... | head`: the reader left; stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (LazypatchError, OSError, ValueError, TypeError, ImportError) as exc:
        print(f"lazypatch {args.command}: error: {_message(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"lazypatch {args.command}: interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:  # SIGTERM or SIGHUP while writing (NOTE [termination] in lazypatch.ingest._signals)
        signum = getattr(exc, "signum", None)
        if signum is None:
            raise
        print(f"lazypatch {args.command}: {exc}; temporary files removed", file=sys.stderr)
        return 128 + signum
    finally:
        warnings.formatwarning = previous


def __getattr__(name):  # names of lazypatch 0.1's cli module (cmd_*: the command modules)
    return _compat.moved(__name__, name)
