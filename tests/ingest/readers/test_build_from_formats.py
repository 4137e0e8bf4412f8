"""``lazypatch build`` from the field's files, with the source libraries as oracles.

Matrix:
- slides (JPEG-tiled generic TIFF pyramids, an Aperio SVS through OpenSlide):
  level 0 as stored equals tifffile's / OpenSlide's read; ``--level`` equals
  the level's read; ``--mpp`` picks the coarsest level at or finer than the
  target and resamples it (within 1 of scikit-image's resize of that level),
  masks nearest; mixed mpp without ``--mpp`` is an error; ``--assume-mpp``;
- NIfTI folders (auto 3-D, masks by stem with ``.nii.gz`` as one suffix):
  voxels and world coordinates equal nibabel's; ``--spacing`` resamples
  (within 1 of scikit-image; masks nearest; the affine maps each stored
  voxel centre where the source's does);
- a DICOM series folder is one image named by its folder;
- a GeoTIFF keeps rasterio's CRS and transform;
- bad input: each a clear error naming the file or both options, nothing written.
"""

import json
import os

import nibabel
import numpy as np
import pytest
import skimage.transform
import tifffile
from PIL import Image

from lazypatch import ImageStore, build
from lazypatch.cli import main
from lazypatch.errors import ImageReadError, ParameterError

from test_pydicom import write_series  # noqa: E402 - the pydicom reader tests' series writer


def stored(store, image_id, masks=False):
    shape = tuple(int(n) for n in store.shapes[image_id])
    read = store.read_mask_region if masks else store.read_region
    data = np.asarray(read(image_id, (0,) * len(shape), shape))
    return data if masks or store.channel_axis else data[..., 0]


def tiff_level(path, level):
    with tifffile.TiffFile(path) as tif:
        return tif.series[0].levels[level].asarray()


def resized(image, out_shape):
    result = skimage.transform.resize(image.astype(np.float64), out_shape, order=1, anti_aliasing=True,
                                      preserve_range=True)
    return np.clip(np.rint(result), 0, 255)


@pytest.fixture
def slides(tmp_path, tissue, write_pyramid):
    """Two JPEG-tiled pyramids, at 0.25 and 0.26 um per pixel."""
    folder = tmp_path / "slides"
    folder.mkdir()
    write_pyramid(str(folder / "a.tif"), tissue, levels=3, mpp=0.25)
    write_pyramid(str(folder / "b.tif"), np.ascontiguousarray(tissue[::-1]), levels=3, mpp=0.26)
    return folder


def test_a_jpeg_tiled_slide_builds_equal_to_tifffile_with_its_geometry(tmp_path, slide_pyramid):
    store = build(slide_pyramid, tmp_path / "s.h5", progress=False)
    np.testing.assert_array_equal(stored(store, 0), tiff_level(slide_pyramid, 0))
    geometry = store.geometry(0)
    assert geometry["spacing"] == pytest.approx((0.25, 0.25)) and geometry["unit"] == "um"
    assert geometry["source"]["reader"] == "tifffile"
    store.close()


def test_level_stores_that_level_as_the_library_reads_it(tmp_path, slide_pyramid):
    store = build(slide_pyramid, tmp_path / "s.h5", level=1, progress=False)
    np.testing.assert_array_equal(stored(store, 0), tiff_level(slide_pyramid, 1))
    geometry = store.geometry(0)
    assert geometry["level"] == 1 and geometry["downsample"] == pytest.approx(2.0)
    assert geometry["spacing"] == pytest.approx((0.5, 0.5))
    assert geometry["source_shape"] == [600, 900]
    store.close()


def test_mpp_picks_the_level_and_resamples_to_exactly_the_target(tmp_path, slides):
    store = build(slides, tmp_path / "s.h5", mpp=0.5, progress=False)
    # a.tif: level 1 is exactly 0.5 um: stored as it is
    np.testing.assert_array_equal(stored(store, 0), tiff_level(slides / "a.tif", 1))
    # b.tif: level 1 is 0.52 um, coarser: level 0 (0.26 um) resampled to round(600 * 0.26 / 0.5)
    level0 = tiff_level(slides / "b.tif", 0)
    out = (round(600 * 0.26 / 0.5), round(900 * 0.26 / 0.5))
    assert tuple(store.shapes[1]) == out
    assert np.abs(stored(store, 1).astype(np.int64) - resized(level0, out)).max() <= 1
    for image_id in range(2):
        geometry = store.geometry(image_id)
        assert geometry["spacing"] == pytest.approx((0.5, 0.5), rel=2e-3)
        assert geometry["source_shape"] == [600, 900]
    assert store.geometry(1)["spacing"] == pytest.approx((0.26 * 600 / out[0], 0.26 * 900 / out[1]))
    store.close()


def test_mixed_mpp_without_mpp_is_an_error_naming_both_slides(tmp_path, slides):
    with pytest.raises(ParameterError, match=r"different pixel sizes: .*b\.tif.* 0\.26.*a\.tif.*--mpp"):
        build(slides, tmp_path / "s.h5", progress=False)
    assert not os.path.exists(tmp_path / "s.h5")


def test_masks_are_resampled_nearest_with_their_slide(tmp_path, tissue, write_pyramid):
    (tmp_path / "slides").mkdir()
    (tmp_path / "masks").mkdir()
    write_pyramid(str(tmp_path / "slides" / "a.tif"), tissue, levels=1, mpp=0.3)
    mask = np.zeros(tissue.shape[:2], np.uint8)
    mask[100:400, 200:700] = 2
    mask[::7] = 1
    Image.fromarray(mask).save(tmp_path / "masks" / "a.png")
    store = build(tmp_path / "slides", tmp_path / "s.h5", masks=tmp_path / "masks", mpp=0.5, progress=False)
    out = (360, 540)
    assert tuple(store.shapes[0]) == out
    expected = skimage.transform.resize(mask, out, order=0, anti_aliasing=False, preserve_range=True)
    np.testing.assert_array_equal(stored(store, 0, masks=True), expected.astype(np.uint8))
    store.close()


def test_assume_mpp_gives_files_without_one_a_pixel_size(tmp_path, tissue):
    (tmp_path / "src").mkdir()
    Image.fromarray(tissue).save(tmp_path / "src" / "a.png")
    with pytest.raises(ParameterError, match=r"a\.png.* records no pixel size .*--assume-mpp"):
        build(tmp_path / "src", tmp_path / "s.h5", mpp=0.5, progress=False)
    store = build(tmp_path / "src", tmp_path / "s.h5", mpp=0.5, assume_mpp=0.25, progress=False)
    assert tuple(store.shapes[0]) == (300, 450)
    assert np.abs(stored(store, 0).astype(np.int64) - resized(tissue, (300, 450))).max() <= 1
    assert store.geometry(0)["spacing"] == pytest.approx((0.5, 0.5))
    store.close()
    store = build(tmp_path / "src", tmp_path / "t.h5", assume_mpp=0.25, progress=False)
    assert store.geometry(0)["spacing"] == pytest.approx((0.25, 0.25)) and store.geometry(0)["unit"] == "um"
    store.close()


def test_an_aperio_slide_through_openslide(tmp_path, aperio_svs):
    openslide = pytest.importorskip("openslide")
    store = build(aperio_svs, tmp_path / "s.h5", progress=False)
    with openslide.OpenSlide(aperio_svs) as slide:
        expected = np.asarray(slide.read_region((0, 0), 0, slide.level_dimensions[0]))[..., :3]
    np.testing.assert_array_equal(stored(store, 0), expected)
    geometry = store.geometry(0)
    assert geometry["source"]["reader"] == "openslide"
    assert geometry["spacing"] == pytest.approx((0.499, 0.499))
    store.close()


def nifti_pair(folder, seg, name, affine, shape=(40, 48, 20), seed=0):
    volume = np.random.default_rng(seed).normal(0, 300, shape).astype(np.int16)
    nibabel.save(nibabel.Nifti1Image(volume, affine), str(folder / f"{name}.nii.gz"))
    nibabel.save(nibabel.Nifti1Image((volume > 100).astype(np.uint8) + (volume > 400), affine),
                 str(seg / f"{name}.nii.gz"))
    return volume


OBLIQUE = np.array([[-0.8, 0.1, 0.0, 90.0], [0.05, 0.8, 0.0, -100.0], [0.0, 0.0, 2.5, -50.0], [0, 0, 0, 1]])


@pytest.fixture
def ct(tmp_path):
    (tmp_path / "ct").mkdir()
    (tmp_path / "seg").mkdir()
    volumes = [nifti_pair(tmp_path / "ct", tmp_path / "seg", f"p{k}", OBLIQUE, seed=k) for k in range(2)]
    return tmp_path / "ct", tmp_path / "seg", volumes


def test_nifti_volumes_are_3d_with_nibabels_voxels_and_world(tmp_path, ct):
    images, masks, volumes = ct
    store = build(images, tmp_path / "s.h5", masks=masks, progress=False)
    assert store.spatial_ndim == 3 and store.names == ["p0.nii.gz", "p1.nii.gz"]
    np.testing.assert_array_equal(stored(store, 1), volumes[1].transpose(2, 1, 0))
    np.testing.assert_array_equal(stored(store, 1, masks=True),
                                  ((volumes[1] > 100).astype(np.uint8) + (volumes[1] > 400)).transpose(2, 1, 0))
    affine = np.array(store.geometry(0)["affine"])
    for z, y, x in [(0, 0, 0), (19, 47, 39), (3, 5, 7)]:
        np.testing.assert_allclose(affine @ [z, y, x, 1], OBLIQUE @ [x, y, z, 1])
    store.close()


def test_spacing_resamples_volumes_and_keeps_the_world(tmp_path, ct):
    images, masks, volumes = ct
    store = build(images, tmp_path / "s.h5", masks=masks, spacing="1,1,1", progress=False)
    source = volumes[0].transpose(2, 1, 0)  # stored order (z, y, x): spacing 2.5, ~0.8, ~0.8
    spacing = np.sqrt((OBLIQUE[:3, :3] ** 2).sum(axis=0))[::-1]
    out = tuple(int(round(n * s)) for n, s in zip(source.shape, spacing))
    assert tuple(store.shapes[0]) == out
    expected = skimage.transform.resize(source.astype(np.float64), out, order=1, anti_aliasing=True,
                                        preserve_range=True)
    assert np.abs(stored(store, 0).astype(np.float64) - np.rint(expected)).max() <= 1
    mask = stored(store, 0, masks=True)
    assert set(np.unique(mask)) <= {0, 1, 2}
    geometry = store.geometry(0)
    assert geometry["spacing"] == pytest.approx(tuple(s * n / m for s, n, m in zip(spacing, source.shape, out)))
    assert geometry["source_shape"] == list(source.shape)
    # stored voxel centre i lies at source index (i + 0.5) * r - 0.5, mapped by nibabel's affine
    affine = np.array(geometry["affine"])
    for index in [(0, 0, 0), (out[0] - 1, out[1] - 1, out[2] - 1), (4, 9, 2)]:
        source_index = [(i + 0.5) * n / m - 0.5 for i, n, m in zip(index, source.shape, out)]
        z, y, x = source_index
        np.testing.assert_allclose(affine @ [*index, 1], OBLIQUE @ [x, y, z, 1], atol=1e-9)
    store.close()


def test_a_mask_on_another_grid_is_an_error(tmp_path, ct):
    images, masks, _ = ct
    shifted = OBLIQUE.copy()
    shifted[0, 3] += 5
    nibabel.save(nibabel.Nifti1Image(np.zeros((40, 48, 20), np.uint8), shifted), str(masks / "p1.nii.gz"))
    with pytest.raises(ParameterError, match=r"p1\.nii\.gz.* not on the grid of its image .*affine"):
        build(images, tmp_path / "s.h5", masks=masks, progress=False)
    assert not os.path.exists(tmp_path / "s.h5")


def test_a_dicom_series_folder_is_one_image_named_by_its_folder(tmp_path):
    write_series(str(tmp_path / "src" / "patient1" / "ct"), rescale=None)
    write_series(str(tmp_path / "src" / "patient2" / "ct"), rescale=None, seed=1)
    store = build(tmp_path / "src", tmp_path / "s.h5", progress=False)
    assert store.names == ["patient1/ct", "patient2/ct"] and store.spatial_ndim == 3
    assert store.geometry(0)["source"]["reader"] == "pydicom" and store.geometry(0)["unit"] == "mm"
    store.close()
    write_series(str(tmp_path / "other"), rescale=None, seed=2)  # a second series into patient2/ct
    for name in os.listdir(tmp_path / "other"):
        os.rename(tmp_path / "other" / name, tmp_path / "src" / "patient2" / "ct" / f"second-{name}")
    with pytest.raises(ImageReadError, match=r"patient2"):
        build(tmp_path / "src", tmp_path / "t.h5", progress=False)
    assert not os.path.exists(tmp_path / "t.h5")


def test_a_geotiff_keeps_rasterios_crs_and_transform(tmp_path, tissue):
    rasterio = pytest.importorskip("rasterio")
    path = tmp_path / "scene.tif"
    transform = rasterio.Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4200000.0)  # 10 m pixels, north up
    with rasterio.open(path, "w", driver="GTiff", height=600, width=900, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=transform) as dataset:
        dataset.write(tissue.transpose(2, 0, 1))
    store = build(path, tmp_path / "s.h5", progress=False)
    geometry = store.geometry(0)
    assert tuple(geometry["transform"]) == pytest.approx(tuple(transform)[:6])
    with rasterio.open(path) as dataset:
        assert rasterio.crs.CRS.from_wkt(geometry["crs"]) == dataset.crs
    np.testing.assert_array_equal(stored(store, 0), tissue)
    store.close()


@pytest.mark.parametrize("options, message", [
    (dict(level=1, mpp=0.5), r"--level and --mpp .*give one"),
    (dict(mpp=0.5, spacing=1), r"--mpp and --spacing"),
    (dict(masks="x", annotations="y", classes="a=1"), r"--masks and --annotations"),
    (dict(classes="a=1"), r"--classes maps annotation classes: it needs --annotations"),
    (dict(annotations="y"), r"--annotations needs --classes"),
    (dict(reader="gdal"), r"--reader \(reader=\) must be one of openslide, tifffile"),
    (dict(mpp=-1), r"--mpp \(mpp=\) must be a positive number, got -1"),
    (dict(spacing="1,1"), r"--spacing \(spacing=\) takes one number or three"),
    (dict(level=-1), r"--level \(level=\) must be 0 or more"),
])
def test_conflicting_or_bad_options(tmp_path, slide_pyramid, options, message):
    with pytest.raises(ParameterError, match=message):
        build(slide_pyramid, tmp_path / "s.h5", progress=False, **options)
    assert not os.path.exists(tmp_path / "s.h5")


def test_mpp_on_volumes_and_spacing_on_slides_name_both(tmp_path, ct, slide_pyramid):
    with pytest.raises(ParameterError, match=r"--mpp \(mpp=\) applies to 2-D slides"):
        build(ct[0], tmp_path / "s.h5", mpp=0.5, progress=False)
    with pytest.raises(ParameterError, match=r"--spacing \(spacing=\) resamples volumes; .* 2-D"):
        build(slide_pyramid, tmp_path / "s.h5", spacing=1, progress=False)
    with pytest.raises(ParameterError, match=r"is a volume .*must be 3 or left out, got 2"):
        build(ct[0], tmp_path / "s.h5", spatial_ndim=2, progress=False)


def test_a_level_the_slide_lacks_names_the_file(tmp_path, slide_pyramid):
    with pytest.raises(ParameterError, match=r"level must be in 0\.\.2 for .*slide\.tif"):
        build(slide_pyramid, tmp_path / "s.h5", level=5, progress=False)


def test_a_corrupt_slide_is_an_error_naming_it(tmp_path, slide_pyramid):
    (tmp_path / "src").mkdir()
    with open(slide_pyramid, "rb") as handle:
        data = handle.read()
    (tmp_path / "src" / "bad.svs").write_bytes(data[:2000])
    with pytest.raises(ImageReadError, match=r"bad\.svs"):
        build(tmp_path / "src", tmp_path / "s.h5", progress=False)
    assert not os.path.exists(tmp_path / "s.h5")


def test_annotations_become_masks_on_the_stored_grid(tmp_path, tissue, write_pyramid):
    from lazypatch.testing.samples import write_annotations

    for folder in ("slides", "qupath"):
        (tmp_path / folder).mkdir()
    write_pyramid(str(tmp_path / "slides" / "a.tif"), tissue, levels=2, mpp=0.25)
    write_annotations(tmp_path / "qupath" / "a.geojson", [("tumor", [(100, 40), (300, 40), (300, 240), (100, 240)]),
                                                          ("stroma", [(500, 300), (800, 300), (800, 500)])])
    store = build(tmp_path / "slides", tmp_path / "s.h5", annotations=tmp_path / "qupath",
                  classes="tumor=1,stroma=2", mpp=0.5, progress=False)
    mask = stored(store, 0, masks=True)
    assert tuple(store.shapes[0]) == (300, 450) and store.mask_dtype == np.uint8
    ys, xs = np.nonzero(mask == 1)  # level-0 box x 100..300, y 40..240 at half the resolution
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (20, 119, 50, 149)
    assert set(np.unique(mask)) == {0, 1, 2}
    store.close()
    with pytest.raises(ParameterError, match=r"a\.geojson.*stroma"):
        build(tmp_path / "slides", tmp_path / "t.h5", annotations=tmp_path / "qupath", classes="tumor=1",
              progress=False)
    assert not os.path.exists(tmp_path / "t.h5")


def test_the_command_line_flags(tmp_path, slides, capsys):
    assert main(["build", str(slides), str(tmp_path / "s.h5"), "--mpp", "0.5", "--no-progress"]) == 0
    with ImageStore(str(tmp_path / "s.h5")) as store:
        assert store.geometry(1)["spacing"] == pytest.approx((0.5, 0.5), rel=2e-3)
        assert json.loads(store.attrs["provenance"])["mpp"] == 0.5
    assert main(["build", str(slides / "a.tif"), str(tmp_path / "t.h5"), "--level", "2", "--reader",
                 "tifffile", "--no-progress"]) == 0
    with ImageStore(str(tmp_path / "t.h5")) as store:
        assert tuple(store.shapes[0]) == (150, 225)
    assert main(["build", str(slides), str(tmp_path / "u.h5"), "--level", "1", "--mpp", "1"]) == 1
    assert "--level and --mpp" in capsys.readouterr().err
