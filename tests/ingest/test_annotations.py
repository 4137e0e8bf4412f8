"""QuPath / GeoJSON annotations rasterized into label masks (lazypatch.ingest.annotations).

Matrix:
- reading: FeatureCollection, bare list of Features, single Feature; class from
  ``classification.name`` (QuPath 0.3+), ``classification.names``, a classification
  string, ``properties.name`` without a classification, none; Polygon, Polygon with a
  hole, MultiPolygon, GeometryCollection, self-intersecting outline (repaired);
  points, lines and null geometries skipped and counted.
- rasterizing against a brute-force oracle (shapely ``contains_xy`` at every pixel
  centre, classes painted in ``classes`` order, centres within 1e-7 of an outline
  allowed either way): hypothesis over random polygons with holes, scales (level 0,
  pyramid levels, non-integer resamples, upsampling) and band splits (any split into row
  bands, and column windows, equals the mask read whole, bit for bit); skimage.draw.polygon
  pixel for pixel off the outline; the top-left rule on the outline (two triangles sharing
  a diagonal through pixel centres tile without gap or overlap; a rectangle at pyramid
  level 1 gets exactly its rows); a pyramid's level 2 equals level 0 subsampled for
  rectangles on the level-2 grid.
- overlap: the later class of ``classes`` wins, whichever order the file has.
- the array-like: dtype from the classes and ignore value (uint8/16/32), labels,
  skipped, outside, integer, stepped and negative-step keys equal numpy on the whole
  mask; nothing rasterized at construction.
- bad input, one table (call, exception type, message regex): missing class (file,
  names, classes given, fix; case-sensitivity hint), unclassified features, bad JSON,
  not UTF-8, wrong structure, non-finite coordinates, unknown geometry, malformed ring,
  empty / negative / bool / duplicate / malformed classes, bad shape, scale, ignore_value;
  shapely missing names the extra.
- memory: one 256-row band of a 100,000 x 80,000 mask allocates the band (tracemalloc).
"""

import json
import sys
import tracemalloc

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

shapely = pytest.importorskip("shapely")

from lazypatch.errors import ImageReadError, ParameterError, ParameterTypeError  # noqa: E402
from lazypatch.ingest.annotations import (AnnotationMask, parse_classes,  # noqa: E402
                                          read_annotations)

TOLERANCE = 1e-7  # level-0 pixels: a centre this close to an outline may fall either way


def feature(label, geometry, **properties):
    """A Feature as QuPath exports it, classified as ``label`` (None: no classification)."""
    if label is not None:
        properties["classification"] = {"name": label, "color": [200, 0, 0]}
    return {"type": "Feature", "id": "x", "geometry": geometry,
            "properties": {"objectType": "annotation", **properties}}


def polygon(ring, *holes):
    return {"type": "Polygon", "coordinates": [list(map(list, ring)) + [list(ring[0])]]
            + [list(map(list, hole)) + [list(hole[0])] for hole in holes]}


def square(x0, y0, x1, y1):
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def write(folder, document, name="slide.geojson"):
    path = folder / name
    path.write_text(json.dumps(document))
    return str(path)


def collection(*features):
    return {"type": "FeatureCollection", "features": list(features)}


def oracle_accepts(mask, annotations, classes, shape, scale, ignore_value=0):
    """Whether ``mask`` is a labelling the pixel-centre rule allows, and how many pixels
    were ambiguous (centre within TOLERANCE of an outline), by brute force over every
    pixel centre with the classes painted in ``classes`` order."""
    rows, columns = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    ys, xs = (rows + 0.5) / scale[0], (columns + 0.5) / scale[1]
    values = sorted(set(classes.values()) | {ignore_value})
    possible = np.zeros((max(values) + 1,) + shape, dtype=bool)
    possible[ignore_value] = True
    near_any = np.zeros(shape, dtype=bool)
    ranks = list(classes)
    for name, geometry in sorted(annotations, key=lambda a: ranks.index(a[0])):
        value = classes[name]
        inside = shapely.contains_xy(geometry, xs, ys)
        near = shapely.distance(geometry.boundary, shapely.points(xs, ys)) < TOLERANCE
        sure = inside & ~near
        possible[:, sure] = False
        possible[value, sure] = True
        possible[value, near] = True
        near_any |= near
    accepted = np.take_along_axis(possible, mask[None].astype(np.int64), axis=0)[0]
    return bool(accepted.all()), int(near_any.sum())


# -- classes ------------------------------------------------------------------------------

def test_parse_classes_keeps_order_and_exact_names():
    assert parse_classes("tumor=1,stroma=2") == {"tumor": 1, "stroma": 2}
    assert list(parse_classes(" stroma = 2 , tumor=1, ")) == ["stroma", "tumor"]
    assert parse_classes({"Tumor": 1, "Immune cells": 1, "Tumor: Positive": 3}) == {
        "Tumor": 1, "Immune cells": 1, "Tumor: Positive": 3}
    assert parse_classes("Immune cells=4") == {"Immune cells": 4}
    assert parse_classes({"big": 2**64 - 1}) == {"big": 2**64 - 1}


# -- reading ------------------------------------------------------------------------------

def test_read_feature_collection_as_qupath_writes_it(tmp_path):
    hole = polygon(square(0, 0, 10, 10), square(3, 3, 6, 6))
    multi = {"type": "MultiPolygon", "coordinates": [polygon(square(20, 0, 22, 2))["coordinates"],
                                                      polygon(square(30, 0, 31, 4))["coordinates"]]}
    bundle = {"type": "GeometryCollection", "geometries": [
        polygon(square(40, 0, 42, 2)), {"type": "LineString", "coordinates": [[0, 0], [5, 5]]}]}
    path = write(tmp_path, collection(
        feature("Tumor", hole, isLocked=False, measurements={"Area": 91}),
        feature("Stroma", multi),
        feature(None, polygon(square(0, 20, 1, 21)), name="Region 1"),
        {"type": "Feature", "geometry": polygon(square(0, 30, 2, 32)),
         "properties": {"classification": {"names": ["Tumor", "Positive"], "color": [1, 2, 3]}}},
        feature("Necrosis", bundle),
        feature("Tumor", {"type": "Point", "coordinates": [1, 1]}),
        feature("Tumor", {"type": "MultiLineString", "coordinates": [[[0, 0], [1, 1]]]}),
        feature("Tumor", None),
        feature(None, polygon(square(0, 40, 1, 41))),
    ))
    annotations = read_annotations(path)
    assert annotations.path == path and annotations.skipped == 3
    assert [a.name for a in annotations] == ["Tumor", "Stroma", "Region 1", "Tumor: Positive",
                                             "Necrosis", None]
    assert [a.geometry.area for a in annotations] == [91.0, 8.0, 1.0, 4.0, 4.0, 1.0]
    assert annotations[0].geometry.geom_type == "Polygon"
    assert len(annotations[0].geometry.interiors) == 1
    assert annotations[1].geometry.geom_type == "MultiPolygon"
    assert annotations[0].geometry.bounds == (0.0, 0.0, 10.0, 10.0)  # x, y: level-0 pixels


def test_read_bare_list_single_feature_and_class_sources(tmp_path):
    ring = polygon(square(0, 0, 2, 2))
    listed = write(tmp_path, [
        {"type": "Feature", "geometry": ring, "properties": {"classification": "Stroma"}},
        {"type": "Feature", "geometry": ring,
         "properties": {"classification": {"name": "Tumor"}, "name": "my region"}},
        {"type": "Feature", "geometry": ring, "properties": None},
    ], "listed.json")
    assert [a.name for a in read_annotations(listed)] == ["Stroma", "Tumor", None]
    single = write(tmp_path, feature("Tumor", ring), "single.geojson")
    assert [a.name for a in read_annotations(single)] == ["Tumor"]


def test_self_intersecting_outline_is_repaired_keeping_both_lobes(tmp_path):
    bowtie = {"type": "Polygon", "coordinates": [[[0, 0], [4, 4], [4, 0], [0, 4], [0, 0]]]}
    path = write(tmp_path, [feature("Tumor", bowtie)])
    (annotation,) = read_annotations(path)
    assert annotation.geometry.is_valid and annotation.geometry.area == 8.0
    mask = AnnotationMask(path, (4, 4), {"Tumor": 1})[...]
    assert mask.sum() == 8  # both triangles, 4 centres each (top-left rule on the diagonals)


# -- rasterizing ----------------------------------------------------------------------------

def test_multipolygon_with_hole_pixel_by_pixel(tmp_path):
    shape_with_hole = {"type": "MultiPolygon", "coordinates": [
        polygon(square(0, 0, 6, 6), square(2, 2, 4, 4))["coordinates"],
        polygon(square(7, 1, 8, 3))["coordinates"]]}
    path = write(tmp_path, collection(feature("Tumor", shape_with_hole)))
    mask = AnnotationMask(path, (7, 9), {"Tumor": 3}, ignore_value=9)
    expected = np.full((7, 9), 9, dtype=np.uint8)
    expected[0:6, 0:6] = 3
    expected[2:4, 2:4] = 9
    expected[1:3, 7:8] = 3
    np.testing.assert_array_equal(mask[...], expected)
    assert mask.labels == (3, 9)


def test_overlap_the_later_class_wins(tmp_path):
    path = write(tmp_path, collection(feature("stroma", polygon(square(2, 0, 6, 4))),
                                      feature("tumor", polygon(square(0, 0, 4, 4)))))
    tumor_last = AnnotationMask(path, (4, 6), "stroma=2,tumor=1")[...]
    stroma_last = AnnotationMask(path, (4, 6), "tumor=1,stroma=2")[...]
    np.testing.assert_array_equal(tumor_last[0], [1, 1, 1, 1, 2, 2])
    np.testing.assert_array_equal(stroma_last[0], [1, 1, 2, 2, 2, 2])


def test_unclassified_mapped_and_painted_over(tmp_path):
    path = write(tmp_path, [feature(None, polygon(square(0, 0, 4, 2))),
                            feature("tumor", polygon(square(2, 0, 4, 2)))])
    mask = AnnotationMask(path, (2, 5), {"Unclassified": 7, "tumor": 1})[...]
    np.testing.assert_array_equal(mask, [[7, 7, 1, 1, 0]] * 2)


@st.composite
def scenes(draw):
    """(features, classes, shape, scale, row splits, column window)."""
    shape = (draw(st.integers(1, 18)), draw(st.integers(1, 18)))
    scale = draw(st.sampled_from([(1.0, 1.0), (0.5, 0.5), (0.25, 0.25), (2.0, 2.0), (0.37, 0.61),
                                  (150 / 600, 225 / 900), (1.3, 0.75)]))
    extent = (shape[0] / scale[0], shape[1] / scale[1])  # level-0 size
    grid = st.integers(-4, 68).map(lambda k: k / 64)  # fractions of the extent, dyadic

    def ring(count):
        return [(draw(grid) * extent[1], draw(grid) * extent[0]) for _ in range(count)]

    names = ["tumor", "stroma", "necrosis"]
    features = []
    for _ in range(draw(st.integers(1, 4))):
        # random outlines cross themselves: repaired here, the hole cut, and repaired again
        # by read_annotations when an invalid one goes in as it is
        outline = shapely.Polygon(ring(draw(st.integers(3, 7))))
        if draw(st.booleans()):
            hole = shapely.make_valid(shapely.Polygon(ring(draw(st.integers(3, 5)))))
            outline = shapely.make_valid(outline).difference(hole)
        features.append(feature(draw(st.sampled_from(names)), shapely.geometry.mapping(outline)))
    order = draw(st.permutations(names))
    values = draw(st.lists(st.integers(1, 5), min_size=3, max_size=3))
    classes = dict(zip(order, values))
    cuts = sorted(draw(st.lists(st.integers(0, shape[0]), max_size=4)))
    c0 = draw(st.integers(0, shape[1] - 1))
    c1 = draw(st.integers(c0 + 1, shape[1]))
    return features, classes, shape, scale, cuts, (c0, c1)


@given(scenes())
@example(([feature("tumor", polygon([(0.5, 0.5), (8.5, 0.5), (0.5, 8.5)]))], {"tumor": 1}, (9, 9),
          (1.0, 1.0), [3, 3, 7], (2, 9)))
def test_rasterization_matches_the_oracle_and_any_band_split(tmp_path_factory, scene):
    features, classes, shape, scale, cuts, (c0, c1) = scene
    path = write(tmp_path_factory.mktemp("scene"), features)
    annotations = read_annotations(path)
    mask = AnnotationMask(path, shape, classes, scale=scale)
    whole = mask[...]
    assert whole.shape == shape and whole.dtype == np.uint8
    accepted, ambiguous = oracle_accepts(whole, [(a.name, a.geometry) for a in annotations],
                                         classes, shape, scale)
    assert accepted
    assert ambiguous <= whole.size // 2 + 2  # the oracle decides most pixels itself
    assert set(np.unique(whole).tolist()) <= set(mask.labels)
    edges = [0] + cuts + [shape[0]]
    banded = np.concatenate([mask[a:b] for a, b in zip(edges[:-1], edges[1:])])
    np.testing.assert_array_equal(banded, whole)
    np.testing.assert_array_equal(mask[edges[1]:, c0:c1], whole[edges[1]:, c0:c1])


def test_equals_skimage_draw_polygon_off_the_outline(tmp_path):
    from skimage.draw import polygon as draw_polygon  # a test dependency (setup.cfg [test])

    rng = np.random.default_rng(7)
    compared = 0
    for trial in range(60):
        vertices = np.round(rng.uniform(-3, 27, (rng.integers(3, 10), 2)) * 8) / 8
        centre = vertices.mean(axis=0)  # star-shaped around it: a simple polygon mostly
        vertices = vertices[np.argsort(np.arctan2(*(vertices - centre).T))]
        outline = shapely.Polygon(vertices)
        if not outline.is_valid or outline.area == 0:
            continue
        path = write(tmp_path, [feature("t", polygon(vertices.tolist()))], f"p{trial}.json")
        mask = AnnotationMask(path, (24, 24), {"t": 1})[...]
        reference = np.zeros((24, 24), dtype=np.uint8)
        rows, columns = draw_polygon(vertices[:, 1] - 0.5, vertices[:, 0] - 0.5, (24, 24))
        reference[rows, columns] = 1
        centres_y, centres_x = np.mgrid[0:24, 0:24] + 0.5
        on_outline = shapely.distance(outline.boundary, shapely.points(centres_x, centres_y)) < TOLERANCE
        np.testing.assert_array_equal(mask[~on_outline], reference[~on_outline])
        # on the outline skimage paints every centre; the top-left rule a subset of them
        assert (mask[on_outline] <= reference[on_outline]).all()
        compared += 1
    assert compared > 45


def test_top_left_rule_tiles_without_gap_or_overlap(tmp_path):
    corners = [(0.5, 0.5), (20.5, 0.5), (20.5, 20.5), (0.5, 20.5)]  # pixel centres 0 and 20
    upper = write(tmp_path, [feature("a", polygon([corners[0], corners[1], corners[2]]))], "a.json")
    lower = write(tmp_path, [feature("b", polygon([corners[0], corners[2], corners[3]]))], "b.json")
    a = AnnotationMask(upper, (24, 24), {"a": 1})[...]
    b = AnnotationMask(lower, (24, 24), {"b": 1})[...]
    both = a.astype(int) + b
    assert both.max() == 1
    np.testing.assert_array_equal(both[:20, :20], 1)  # the half-open square [0, 20)
    assert both.sum() == 400
    # a 10-row rectangle at pyramid level 1 (scale 1/2) gets 5 rows, its top edge on centres
    rectangle = write(tmp_path, [feature("r", polygon(square(3, 11, 9, 21)))], "r.json")
    level1 = AnnotationMask(rectangle, (12, 6), {"r": 1}, scale=(0.5, 0.5))[...]
    assert np.flatnonzero(level1.any(axis=1)).tolist() == [5, 6, 7, 8, 9]
    # x from 3 to 9 is [1, 4) in stored pixel units: the left edge on centre 1 counts, the right
    # edge on centre 4 does not
    assert np.flatnonzero(level1.any(axis=0)).tolist() == [1, 2, 3]


def test_pyramid_level_2_is_level_0_subsampled_for_aligned_rectangles(tmp_path):
    path = write(tmp_path, collection(
        feature("stroma", polygon(square(0, 8, 64, 40))),
        feature("tumor", polygon(square(16, 0, 36, 60), square(20, 20, 28, 28))),
        feature("tumor", polygon(square(200, 200, 240, 240)))))  # outside the image
    classes = {"stroma": 2, "tumor": 1}
    level0 = AnnotationMask(path, (64, 80), classes)
    level2 = AnnotationMask(path, (16, 20), classes, scale=(0.25, 0.25))
    np.testing.assert_array_equal(level2[...], level0[...][::4, ::4])
    assert level0.outside == level2.outside == 1 and level0.num_annotations == 3
    # a non-integer resample (0.37 um/px to 0.5): by the oracle
    scale = (0.37 / 0.5, 0.37 / 0.5)
    resampled = AnnotationMask(path, (47, 59), classes, scale=scale)
    accepted, _ = oracle_accepts(resampled[...], [(a.name, a.geometry) for a in read_annotations(path)],
                                 classes, (47, 59), scale)
    assert accepted


# -- the array-like -------------------------------------------------------------------------

def test_array_like_attributes_and_keys(tmp_path):
    path = write(tmp_path, [feature("tumor", polygon([(1, 1), (11, 2), (6, 9)])),
                            feature("stroma", polygon(square(0, 5, 4, 8))),
                            feature("tumor", {"type": "Point", "coordinates": [3, 3]}),
                            feature("stroma", polygon(square(-9, -9, -5, -5)))])
    mask = AnnotationMask(path, (9, 12), "tumor=1,stroma=2")
    assert (mask.shape, mask.ndim, mask.dtype, mask.nbytes, len(mask)) == ((9, 12), 2, np.uint8, 108, 9)
    assert (mask.skipped, mask.outside, mask.num_annotations) == (1, 1, 3)
    assert mask.labels == (0, 1, 2)
    whole = mask[...]
    np.testing.assert_array_equal(np.asarray(mask), whole)
    assert np.asarray(mask, dtype=np.int32).dtype == np.int32
    for key in [slice(None), (slice(2, 7), slice(3, None)), (Ellipsis, slice(1, 5)), 4, -1, (3, 5),
                (slice(None, None, 2), slice(1, None, 3)), (slice(None, None, -1), slice(8, 2, -2)),
                (slice(5, 2),), (Ellipsis, 3)]:
        np.testing.assert_array_equal(mask[key], whole[key])
    with pytest.raises(IndexError, match="too many indices"):
        mask[1, 2, 3]
    with pytest.raises(IndexError, match="out of bounds"):
        mask[9]
    with pytest.raises(ParameterTypeError, match="integers, slices and"):
        mask[1.5]
    assert AnnotationMask(path, (2, 2), {"tumor": 300, "stroma": 2}).dtype == np.uint16
    assert AnnotationMask(path, (2, 2), {"tumor": 1, "stroma": 2}, ignore_value=70000).dtype == np.uint32
    assert AnnotationMask(path, (2, 2), {"tumor": 1, "stroma": 2}, ignore_value=255).dtype == np.uint8


def test_a_file_without_areas_gives_the_ignore_value(tmp_path):
    path = write(tmp_path, collection(feature("tumor", {"type": "Point", "coordinates": [1, 1]}),
                                      feature("tumor", {"type": "Polygon", "coordinates": []})))
    mask = AnnotationMask(path, (3, 4), {"tumor": 1}, ignore_value=5)
    assert (mask.skipped, mask.outside, mask.num_annotations, mask.labels) == (2, 0, 0, (5,))
    np.testing.assert_array_equal(mask[...], np.full((3, 4), 5, dtype=np.uint8))


def test_nothing_is_rasterized_at_construction(tmp_path, monkeypatch):
    path = write(tmp_path, [feature("tumor", polygon(square(0, 0, 5, 5)))])
    calls = []
    original = AnnotationMask._paint
    monkeypatch.setattr(AnnotationMask, "_paint", lambda self, *a: calls.append(a) or original(self, *a))
    mask = AnnotationMask(path, (300, 300), {"tumor": 1})
    assert calls == []
    assert mask[0:10].sum() == 25 and len(calls) == 1


# -- bad input --------------------------------------------------------------------------------

GOOD = collection(feature("Tumor", polygon(square(0, 0, 4, 4))),
                  feature("Stroma", polygon(square(2, 2, 6, 6))))


def _mask(document, classes="Tumor=1,Stroma=2", raw=None, **options):
    def call(folder):
        path = folder / "slide.geojson"
        if raw is not None:
            path.write_bytes(raw)
        else:
            path.write_text(json.dumps(document))
        return AnnotationMask(path, options.pop("shape", (8, 8)), classes, **options)
    return call


BAD = [
    (_mask(GOOD, "Tumor=1"), ParameterError,
     r"annotations '.*slide\.geojson' have class 'Stroma', which --classes \(classes=\) does not map "
     r"\(\{'Tumor': 1\}\): every annotation class needs a value; add it, e\.g\. --classes Tumor=1,Stroma=VALUE"),
    (_mask(GOOD, "tumor=1,stroma=2"), ParameterError,
     r"have classes 'Stroma', 'Tumor', .*--classes tumor=1,stroma=2,Stroma=VALUE,Tumor=VALUE "
     r"\(names are case-sensitive, as QuPath writes them: 'Stroma' is not 'stroma'; 'Tumor' is not 'tumor'\)"),
    (_mask([feature(None, polygon(square(0, 0, 2, 2)))]), ParameterError,
     r"'.*slide\.geojson' have 1 annotation\(s\) without a class .*--classes Unclassified=VALUE"),
    (_mask(None, raw=b'{"type": "FeatureCollection", "features": ['), ImageReadError,
     r"annotations '.*slide\.geojson' is not valid JSON \(.*line 1.*\); expected GeoJSON as QuPath"),
    (_mask(None, raw=b"\xff\xfe\x00garbage"), ImageReadError, r"'.*slide\.geojson' is not UTF-8 text"),
    (_mask(polygon(square(0, 0, 1, 1))), ImageReadError,
     r"'.*slide\.geojson' is a GeoJSON object of type 'Polygon'; expected a FeatureCollection, a list"),
    (_mask(42), ImageReadError, r"'.*slide\.geojson' holds a JSON int; expected a FeatureCollection"),
    (_mask({"type": "FeatureCollection", "features": {}}), ImageReadError,
     r"the FeatureCollection's 'features' must be a list, got dict"),
    (_mask([polygon(square(0, 0, 1, 1))]), ImageReadError,
     r"'.*slide\.geojson', feature 0 is 'Polygon', not a GeoJSON Feature"),
    (_mask([feature("Tumor", {"type": "Polygon", "coordinates": [[[0, 0], [float("nan"), 1], [1, 1], [0, 0]]]})]),
     ImageReadError, r"'.*slide\.geojson', feature 0 has a non-finite coordinate \[nan, 1\.0\]"),
    (_mask(None, raw=b'[{"type": "Feature", "properties": {"classification": {"name": "Tumor"}}, "geometry": '
                     b'{"type": "Polygon", "coordinates": [[[0, 0], [1e400, 1], [1, 1], [0, 0]]]}}]'),
     ImageReadError, r"feature 0 has a non-finite coordinate \[inf, 1\.0\]"),
    (_mask([feature("Tumor", polygon(square(0, 0, 1, 1))),
            feature("Tumor", {"type": "Circle", "coordinates": [0, 0]})]), ImageReadError,
     r"'.*slide\.geojson', feature 1 has a geometry of type 'Circle'; annotations are Polygon, MultiPolygon"),
    (_mask([feature("Tumor", {"type": "Polygon", "coordinates": [[0, 1, 2]]})]), ImageReadError,
     r"feature 0: a ring must be a list of \[x, y\] positions, got \[0, 1, 2\]"),
    (_mask([feature("Tumor", {"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]})]),
     ImageReadError, r"feature 0: a ring needs at least 3 positions, got 2"),
    (_mask([{"type": "Feature", "geometry": None, "properties": {"classification": 3}}]), ImageReadError,
     r"feature 0: properties.classification must be an object with a 'name' string"),
    (_mask(GOOD, ""), ParameterError, r"--classes \(classes=\) must name at least one class"),
    (_mask(GOOD, {}), ParameterError, r"--classes \(classes=\) must name at least one class"),
    (_mask(GOOD, "Tumor=-1,Stroma=2"), ParameterError,
     r"--classes \(classes=\) values must be non-negative integers, got Tumor=-1"),
    (_mask(GOOD, {"Tumor": 2**64}), ParameterError, r"got Tumor=18446744073709551616 \(more than 2\*\*64 - 1\)"),
    (_mask(GOOD, "Tumor=one"), ParameterError, r"values must be non-negative integers, got Tumor='one'"),
    (_mask(GOOD, {"Tumor": True}), ParameterTypeError, r"values must be integers, got Tumor=True"),
    (_mask(GOOD, {"Tumor": 1.0}), ParameterTypeError, r"values must be integers, got Tumor=1\.0"),
    (_mask(GOOD, {3: 1}), ParameterTypeError, r"names must be non-empty strings .*got 3"),
    (_mask(GOOD, "Tumor=1,Tumor=2"), ParameterError, r"names each class once, got 'Tumor' twice"),
    (_mask(GOOD, "Tumor"), ParameterError, r"takes NAME=VALUE pairs separated by commas.*got 'Tumor'"),
    (_mask(GOOD, "=3"), ParameterError, r"takes NAME=VALUE pairs .*got '=3'"),
    (_mask(GOOD, ["Tumor"]), ParameterTypeError, r"--classes \(classes=\) must be a string like"),
    (_mask(GOOD, shape=(0, 8)), ParameterError, r"shape must be positive \(H, W\), got \(0, 8\)"),
    (_mask(GOOD, shape=(8, 8, 3)), ParameterTypeError, r"shape must be two integers \(H, W\)"),
    (_mask(GOOD, scale=(0.0, 1.0)), ParameterError, r"scale must be positive finite numbers .*got \(0\.0, 1\.0\)"),
    (_mask(GOOD, scale=(float("inf"), 1.0)), ParameterError, r"scale must be positive finite"),
    (_mask(GOOD, scale=2.0), ParameterTypeError, r"scale must be two numbers \(y, x\)"),
    (_mask(GOOD, ignore_value=-1), ParameterError,
     r"--ignore-value \(ignore_value=\) must be a non-negative integer, got -1"),
    (_mask(GOOD, ignore_value=False), ParameterTypeError, r"--ignore-value \(ignore_value=\) must be an integer"),
]


@pytest.mark.parametrize("call, error, message", BAD)
def test_bad_input(tmp_path, call, error, message):
    with pytest.raises(error, match=message):
        call(tmp_path)


def test_missing_shapely_names_the_extra(tmp_path, monkeypatch):
    path = write(tmp_path, GOOD)
    monkeypatch.setitem(sys.modules, "shapely", None)
    with pytest.raises(ImportError, match=r'annotations need shapely .*pip install "lazypatch\[wsi\]"'):
        read_annotations(path)


def test_missing_file_is_the_builtin_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_annotations(tmp_path / "absent.geojson")


# -- memory ----------------------------------------------------------------------------------

def test_one_band_of_a_slide_sized_mask_allocates_the_band(tmp_path):
    angles = np.linspace(0, 2 * np.pi, 4000, endpoint=False)
    tissue = np.c_[40_000 + 39_000 * np.cos(angles), 50_000 + 49_000 * np.sin(angles)]
    rng = np.random.default_rng(3)
    cells = [feature("tumor", polygon(square(x, y, x + 30, y + 30)))
             for x, y in rng.uniform(0, 79_000, (2000, 2)) * [1, 100_000 / 80_000]]
    path = write(tmp_path, [feature("stroma", polygon(tissue.tolist()))] + cells)
    mask = AnnotationMask(path, (100_000, 80_000), {"stroma": 1, "tumor": 2})
    assert mask.nbytes == 8_000_000_000
    tracemalloc.start()
    try:
        band = mask[50_000:50_256]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert band.shape == (256, 80_000) and band.dtype == np.uint8
    assert peak < band.nbytes + 2 * 2**20, f"peak {peak} for a band of {band.nbytes} bytes"
    # spot checks against shapely: the tissue's outline crosses this band near x = 1,000 and 79,000
    outline = shapely.Polygon(tissue)
    for column in (995, 1005, 40_000, 78_995, 79_005):
        inside = outline.contains(shapely.Point(column + 0.5, 50_000.5))
        assert band[0, column] in ((1, 2) if inside else (0, 2))
