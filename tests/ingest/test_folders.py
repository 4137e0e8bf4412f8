"""lazypatch build from folders as users have them: masks beside images, many bad files, other files.

Matrix: masks beside their images {x_mask, x-label, x_seg} x {no --masks:
an error naming the flags; --masks FOLDER --mask-suffix: built; --masks
FOLDER alone: an error naming --mask-suffix; masks in a subfolder}; a header
pass with {3 bad masks + 1 unreadable image: all four in one error, each
naming its own file; 25 unreadable files: 20 listed and "and 5 more"};
files lazypatch skips {text, PDF, GIF: named; .DS_Store, Thumbs.db, hidden:
counted} and BMP and WebP images read through Pillow.
"""

import os

import numpy as np
import pytest
import skimage.data
from PIL import Image

from lazypatch import ImageStore, build
from lazypatch.cli import main
from lazypatch.errors import ImageReadError, ParameterError


def photos_with_masks(folder, suffix="_mask", count=3):
    folder.mkdir(exist_ok=True)
    images, masks = {}, {}
    for k in range(count):
        image = skimage.data.astronaut()[k * 50:k * 50 + 120, :160]
        mask = (np.arange(120 * 160).reshape(120, 160) // (97 + k) % 3).astype(np.uint8)
        Image.fromarray(image).save(folder / f"p{k}.png")
        Image.fromarray(mask).save(folder / f"p{k}{suffix}.png")
        images[f"p{k}.png"], masks[f"p{k}.png"] = image, mask
    return images, masks


# -- masks beside images --------------------------------------------------------------
@pytest.mark.parametrize("suffix", ["_mask", "-label", "_seg"])
def test_masks_beside_images_are_named_then_built(tmp_path, capsys, suffix):
    photos = tmp_path / "photos"
    images, masks = photos_with_masks(photos, suffix)
    out = str(tmp_path / "s.h5")
    assert main(["build", str(photos), out]) == 1
    err = capsys.readouterr().err
    assert f"3 of the 6 files in {str(photos)!r} look like masks of the others" in err
    assert f"'p0{suffix}.png' beside 'p0.png'" in err
    flag = f"--mask-suffix={suffix}" if suffix.startswith("-") else f"--mask-suffix {suffix}"
    assert f"--masks {photos} {flag}" in err and f"mask_suffix={suffix!r}" in err
    assert not os.path.exists(out)

    assert main(["build", str(photos), out, "--masks", str(photos), f"--mask-suffix={suffix}",
                 "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "masks: 3 paired by stem (uint8)" in text and "matching no image" not in text
    store = ImageStore(out)
    assert store.names == ["p0.png", "p1.png", "p2.png"]
    for k, name in enumerate(store.names):
        assert np.array_equal(store.read(k), images[name]) and np.array_equal(store.read_mask(k), masks[name])
    store.close()


def test_the_image_folder_as_masks_needs_a_suffix(tmp_path):
    photos = tmp_path / "photos"
    photos_with_masks(photos)
    with pytest.raises(ParameterError, match=r"holds the images of .* themselves; give --mask-suffix .*"
                                             r"e\.g\. --mask-suffix _mask for x_mask\.png beside x\.png"):
        build(photos, tmp_path / "s.h5", masks=photos)


def test_masks_in_a_subfolder_of_the_images(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for k in range(2):
        Image.fromarray(np.full((20, 30, 3), k, np.uint8)).save(photos / f"p{k}.png")
    (photos / "masks").mkdir()
    for k in range(2):
        Image.fromarray(np.full((20, 30), k + 1, np.uint8)).save(photos / "masks" / f"p{k}.png")
    store = build(photos, tmp_path / "s.h5", masks=photos / "masks", progress=False)
    assert store.names == ["p0.png", "p1.png"] and int(store.read_mask(1)[0, 0]) == 2
    store.close()


# -- every problem at once ------------------------------------------------------------
def test_the_header_pass_reports_every_bad_file_naming_it(tmp_path):
    images, masks = tmp_path / "img", tmp_path / "mask"
    images.mkdir()
    masks.mkdir()
    for k in range(5):
        Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(images / f"{k}.png")
        shape = (40, 50) if k in (0, 4) else (40 + k, 50)  # masks 1, 2, 3 have the wrong shape
        Image.fromarray(np.zeros(shape, np.uint8)).save(masks / f"{k}.png")
    (images / "4.png").write_bytes(b"not a PNG at all")
    with pytest.raises(ParameterError) as caught:
        build(images, tmp_path / "s.h5", masks=masks)
    message = str(caught.value)
    lines = message.splitlines()
    assert lines[0] == f"4 problems with the files of {str(images)!r} (nothing was written):"
    assert len(lines) == 5
    for k in (1, 2, 3):  # each about the mask file, naming its image
        line = next(line for line in lines if f"mask{os.sep}{k}.png" in line)
        assert line.strip().startswith(repr(str(masks / f"{k}.png")))
        assert f"has shape ({40 + k}, 50), its image has spatial shape (40, 50)" in line
        assert f"its image is {str(images / f'{k}.png')!r}" in line
    assert any("cannot read image" in line and "4.png" in line for line in lines)
    assert os.listdir(tmp_path) == ["img", "mask"]


def test_many_bad_files_are_listed_up_to_twenty(tmp_path):
    (tmp_path / "src").mkdir()
    for k in range(25):
        (tmp_path / "src" / f"{k:02d}.png").write_bytes(b"broken")
    with pytest.raises(ImageReadError) as caught:
        build(tmp_path / "src", tmp_path / "s.h5")
    lines = str(caught.value).splitlines()
    assert lines[0].startswith("25 problems with the files of")
    assert len(lines) == 22 and lines[-1].strip() == "... and 5 more"
    assert "00.png" in lines[1] and "19.png" in lines[20]


# -- files lazypatch skips, BMP and WebP --------------------------------------------------
def test_skipped_files_are_named_and_bmp_and_webp_are_read(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    photo = skimage.data.chelsea()[:100, :120]
    Image.fromarray(photo).save(src / "a.png")
    Image.fromarray(photo).save(src / "b.bmp")
    Image.fromarray(photo).save(src / "c.webp", lossless=True)
    Image.fromarray(photo).save(src / "d.gif")
    (src / "notes.txt").write_text("labels: cat")
    (src / "scan.pdf").write_bytes(b"%PDF-1.4")
    for junk in (".DS_Store", "Thumbs.db", ".hidden.png"):
        (src / junk).write_bytes(b"junk")
    out = str(tmp_path / "s.h5")
    assert main(["build", str(src), out, "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert ("skipped 3 file(s) that are not PNG, JPEG, TIFF, BMP, WebP, .npy, slide, NIfTI or DICOM images (.gif, .pdf, .txt): "
            "d.gif, notes.txt, scan.pdf; 3 hidden or system file(s)") in text
    store = ImageStore(out)
    assert store.names == ["a.png", "b.bmp", "c.webp"]
    for k in range(3):
        assert np.array_equal(store.read(k), photo)
    store.close()
    plan = build(src, out, dry_run=True)
    assert plan["skipped"] == {"files": ["d.gif", "notes.txt", "scan.pdf"], "hidden": 3}


def test_a_folder_without_images_says_what_it_holds(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.gif").write_bytes(b"GIF89a")
    (tmp_path / "src" / ".DS_Store").write_bytes(b"")
    assert main(["build", str(tmp_path / "src"), str(tmp_path / "s.h5")]) == 1
    err = capsys.readouterr().err
    assert "no image files (PNG, JPEG, TIFF, BMP, WebP, .npy, slide, NIfTI or DICOM) in" in err
    assert "skipped 1 file(s) that are not PNG, JPEG, TIFF, BMP, WebP, .npy, slide, NIfTI or DICOM images (.gif): a.gif; " \
           "1 hidden or system file(s)" in err


def test_first_hour_review_fixes(tmp_path, capsys):
    """From the repeated new-user run: an existing output is refused before the scan, without
    an [Errno N] prefix; labels are listed most frequent first; --pages z in 2-D is an error;
    warnings print on one line."""
    import tifffile
    from PIL import Image

    from lazypatch.cli import main

    photos = tmp_path / "photos"
    photos.mkdir()
    for k in range(2):
        Image.fromarray(np.full((40, 50, 3), 10 * k, np.uint8)).save(photos / f"p{k}.png")
        mask = np.zeros((40, 50), np.uint8)
        mask[:30] = 255
        Image.fromarray(mask).save(photos / f"p{k}_mask.png")
    out = tmp_path / "s.h5"
    assert main(["build", str(photos), str(out), "--masks", str(photos), "--mask-suffix", "_mask",
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "mask labels: 255 (" in printed and printed.index("255 (") < printed.index("0 (", printed.index("mask labels"))
    assert main(["build", str(photos), str(out), "--masks", str(photos), "--mask-suffix", "_mask"]) == 1
    captured = capsys.readouterr()
    assert "the output exists; pass overwrite=True (--overwrite)" in captured.err
    assert "[Errno" not in captured.err and "images in" not in captured.out  # refused before the plan
    stack = tmp_path / "stack"
    stack.mkdir()
    tifffile.imwrite(stack / "q.tif", np.zeros((4, 20, 30), np.uint8), photometric="minisblack")
    assert main(["build", str(stack), str(tmp_path / "q.h5"), "--pages", "z", "--no-progress"]) == 1
    assert "needs spatial_ndim=3 (--spatial-ndim 3)" in capsys.readouterr().err
    volumes = tmp_path / "volumes"
    volumes.mkdir()
    np.save(volumes / "v.npy", np.zeros((16, 40, 40), np.uint8))  # looks like a volume
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "lazypatch", "build", str(volumes), str(tmp_path / "v.h5"),
                             "--no-progress"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("lazypatch build: warning: ") and "LazypatchWarning" not in result.stderr
