"""``lazypatch demo``: the main job end to end on real sample images.

Builds a store from the RGB sample photographs scikit-image ships in its
wheel (no download), with a foreground mask per image (Otsu threshold),
prints ``info``, reads an epoch of shuffled patches through a torch
DataLoader, checks them against the source images, and writes a PNG grid of
patches with their masks outlined.
"""

from __future__ import annotations

import os
import time

import numpy as np

SAMPLES = ("astronaut", "coffee", "chelsea", "immunohistochemistry", "rocket",
           "hubble_deep_field", "retina")


DEMO_EXTRA = 'pip install "lazypatch[demo]"'


def sample_images():
    """(name, image, mask) for each bundled RGB sample image."""
    try:
        import skimage.data
        from skimage.color import rgb2gray
        from skimage.filters import threshold_otsu
    except ImportError as exc:  # pragma: no cover - scikit-image is in the demo and test extras
        raise ImportError(f"lazypatch demo uses scikit-image's bundled sample images ({exc}): "
                          f"{DEMO_EXTRA}") from exc
    for name in SAMPLES:
        image = getattr(skimage.data, name)()
        gray = rgb2gray(image)
        mask = (gray > threshold_otsu(gray)).astype(np.uint8)
        yield name, image, mask


def patch_grid(images, masks=None, columns: int = 8, gap: int = 2) -> np.ndarray:
    """One RGB uint8 picture of patches (B, C, H, W) side by side, mask edges in yellow."""
    images = np.asarray(images)
    count, channels, height, width = images.shape
    rows = -(-count // columns)
    grid = np.full((rows * (height + gap) + gap, columns * (width + gap) + gap, 3), 255, np.uint8)
    for k in range(count):
        tile = np.moveaxis(images[k], 0, -1)
        if channels == 1:
            tile = np.repeat(tile, 3, axis=-1)
        tile = tile[..., :3].astype(np.uint8)
        if masks is not None:
            mask = np.asarray(masks[k]).astype(bool)
            edge = mask ^ np.pad(mask, 1, mode="edge")[:-2, 1:-1] | mask ^ np.pad(mask, 1, mode="edge")[1:-1, :-2]
            tile = tile.copy()
            tile[edge] = (255, 220, 0)
        r, c = divmod(k, columns)
        y, x = gap + r * (height + gap), gap + c * (width + gap)
        grid[y:y + height, x:x + width] = tile
    return grid


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="lazypatch-demo", help="folder for the store and the picture")


def run(args) -> int:
    return demo(args.out)


def demo(out: str = "lazypatch-demo") -> int:
    import torch
    from torch.utils.data import DataLoader

    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - Pillow is in the demo and test extras
        raise ImportError(f"lazypatch demo writes its picture with Pillow ({exc}): {DEMO_EXTRA}") from exc

    from ..data.dataset import PatchDataset
    from ..data.samples import collate
    from ..ingest import write_store
    from ..stats.summary import describe

    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "demo.h5")
    started = time.perf_counter()
    samples = list(sample_images())
    store = write_store(
        path,
        (image for _, image, _ in samples),
        masks=(mask for _, _, mask in samples),
        names=[name for name, _, _ in samples],
        meta=[{"source": f"skimage.data.{name}()"} for name, _, _ in samples],
        overwrite=True,
    )
    print(f"wrote {path}: {len(store)} sample images from scikit-image with Otsu masks")
    for key, value in describe(store, patch=64, stride=48).items():
        if key == "grid":
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        print(f"  {key:<16} {value}")

    dataset = PatchDataset(store, patch_size=64, stride=48)
    loader = DataLoader(dataset, batch_size=64, shuffle=True, num_workers=0, collate_fn=collate)
    seen = 0
    tick = time.perf_counter()
    first = None
    for batch in loader:
        if first is None:
            first = batch
        seen += len(batch["index"])
    seconds = time.perf_counter() - tick
    print(f"read one shuffled epoch: {seen} patches of 64x64x3 (stride 48) in "
          f"{seconds * 1e3:.1f} ms through a DataLoader ({seen / seconds:,.0f} patches/s)")

    originals = [image for _, image, _ in samples]
    for k in range(len(first["index"])):
        y, x = first["origin"][k].tolist()
        expected = originals[int(first["image_id"][k])][y:y + 64, x:x + 64]
        got = first["image"][k].permute(1, 2, 0).numpy()
        if not np.array_equal(got, expected):  # pragma: no cover - a bug, loudly
            raise AssertionError(f"patch {int(first['index'][k])} differs from its source image")
    print(f"checked {len(first['index'])} patches against the source images: identical")

    picture = patch_grid(first["image"][:32].numpy(), first["mask"][:32].numpy())
    png = os.path.join(out, "patches.png")
    Image.fromarray(picture).save(png)
    print(f"wrote {png}: 32 random patches, mask outlines in yellow")
    del torch
    print(f"done in {time.perf_counter() - started:.1f} s")
    return 0
