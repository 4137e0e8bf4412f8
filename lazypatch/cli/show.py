"""``lazypatch show STORE``: a PNG of one image with its patch grid, and sample patches."""

from __future__ import annotations

from ..grid import EDGES, describe_shape
from ..show import DEFAULT_PATCH, FIGSIZE, render, save_figure
from ._args import int_list, one_store, store_argument


def add_arguments(parser) -> None:
    store_argument(parser)
    parser.add_argument("--out", default="lazypatch-show.png",
                        help="picture to write (default lazypatch-show.png)")
    parser.add_argument("--image", type=_image, default=0,
                        help="image drawn with its grid: its number, or its name (text that reads "
                             "as an integer is a number) (default 0)")
    parser.add_argument("--patch", type=int_list,
                        help=f"patch size (default: per axis the smaller of {DEFAULT_PATCH} and "
                             "the smallest image's extent)")
    parser.add_argument("--stride", type=int_list, help="grid stride (default: the patch size)")
    parser.add_argument("--edge", default="drop", choices=EDGES)
    parser.add_argument("--samples", type=int, default=16, help="random patches shown (default 16)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample (default 0)")
    parser.add_argument("--dpi", type=float, default=100, help="PNG resolution (default 100)")
    parser.add_argument("--channels", type=int_list,
                        help="channels to display: one (gray) or three (RGB), e.g. 3,2,1 "
                             "(default: the first 3, or the first)")


def _image(text: str):
    """``--image``: a number (an integer, as written) or else an image name."""
    try:
        return int(text)
    except ValueError:
        return text


def run(args) -> int:
    figure, facts = render(one_store(args.store), args.image, args.patch, args.stride, args.edge,
                           args.samples, args.seed, args.dpi, FIGSIZE, args.channels)
    save_figure(figure, args.out, args.dpi)
    grid = "x".join(str(v) for v in facts["grid"])
    print(f"wrote {args.out}: image {facts['image']} ({facts['name']!r}, "
          f"{describe_shape(facts['shape'])}) with a {grid} grid of {facts['patches']} patches of "
          f"{describe_shape(facts['patch_size'])} (stride {describe_shape(facts['stride'])}, "
          f"edge={facts['edge']!r}); {facts['samples']} sample patches of {facts['total']}"
          + (f"; channels {','.join(map(str, facts['channels']))}" if facts["channels"] is not None else ""))
    return 0
