"""Pictures of a store: an image with its patch grid, and a grid of sample patches.

(Being written: ``add_arguments`` and ``run`` are the command line's hooks.)
"""


def add_arguments(parser) -> None:
    parser.add_argument("store")


def run(args) -> int:
    raise NotImplementedError("lazypatch show is being written")
