"""QuPath / GeoJSON polygon annotations rasterized into label masks, band by band.

Who uses it: ``lazypatch build --annotations DIR --classes tumor=1,stroma=2``
(:mod:`.folder` pairs each image with its annotation file by stem and hands
an :class:`AnnotationMask` to the writer as that image's mask), and users
(``classes={"tumor": 1, ...}`` in Python).

- :func:`parse_classes`: the ``--classes`` map, ``"tumor=1,stroma=2"`` or a dict.
- :func:`read_annotations`: what QuPath's *Export objects as GeoJSON* writes,
  as polygons in level-0 pixel coordinates (x right, y down), each with its
  class name.
- :class:`AnnotationMask`: the label map of one image on its stored grid, a
  read-only array-like whose bands ``mask[r0:r1]`` are rasterized when read,
  from the polygons that meet the band only: a 100,000 x 80,000 slide's mask
  is never whole in memory.

Shapely (the ``wsi`` extra) reads and repairs the geometry; no GDAL. A pixel
is labelled by its centre (NOTE [pixel-centre rule] below).
"""

from __future__ import annotations

import json
import math
import operator
import os
from typing import Mapping, NamedTuple

import numpy as np

from ..errors import ImageReadError, ParameterError, ParameterTypeError
from ..grid import is_int

__all__ = ["Annotation", "Annotations", "AnnotationMask", "UNCLASSIFIED", "parse_classes",
           "read_annotations"]

# The key of ``classes`` that labels annotations without a class (QuPath's own name for
# the null class).
UNCLASSIFIED = "Unclassified"

_UINT64_MAX = 2**64 - 1
# rows of a band rasterized at once: bounds the (edge, row) crossings held in memory
_ROWS_AT_ONCE = 64
_FORMAT = "GeoJSON as QuPath's 'Export objects as GeoJSON' writes it"

# NOTE [pixel-centre rule]: a stored pixel (r, c) gets a class when its centre lies inside
# the polygon. Its centre is at level-0 ((r + 0.5) / sy, (c + 0.5) / sx), so a vertex (x, y)
# goes to (y * sy - 0.5, x * sx - 0.5) in pixel-index units, where pixel (r, c) has its centre
# at (r, c) as in skimage.draw. Inside is the crossing (even-odd) test: an edge a -> b, a its
# end of smaller y, counts for row r when y_a <= r < y_b, and c is inside when an odd number
# of those crossings lie right of it, c < x_a + (x_b - x_a) * (r - y_a) / (y_b - y_a); holes
# are rings like the exterior, so they count out. A centre exactly on the outline is inside
# on the polygon's top and left edges and outside on its bottom and right ones (the top-left
# rule of graphics rasterizers): polygons sharing an edge give each centre on it to exactly
# one of them (the edge's crossing is computed from its lower end whichever polygon owns it,
# so both compute the same number), and a rectangle [y0, y1) x [x0, x1) in stored pixel
# units gets exactly the centres in it, no row more. Off the outline the result equals
# skimage.draw.polygon (tested); skimage also paints centres on the outline, which would
# give the shared edges of adjacent annotations to both and a rectangle one row too many.
# skimage.draw.polygon is not called: it tests every pixel of the bounding box against every
# edge (16 s for one 1,800-pixel-wide outline of 2,000 vertices, half an hour for a
# 20,000-pixel tumour region); _paint runs the same test as a scanline, O(crossings) per row, and paints the
# runs between crossing pairs. Every row is computed from global coordinates, so a band's
# pixels do not depend on where the band starts: any split into bands gives the mask read
# whole, bit for bit.


def _shapely():
    """shapely, or an ImportError that says what to install."""
    try:
        import shapely
    except ImportError as exc:
        raise ImportError(
            f"annotations need shapely (import of 'shapely' failed: {exc}); install it with: "
            'pip install "lazypatch[wsi]"'
        ) from exc
    return shapely


class Annotation(NamedTuple):
    """One annotated region: its class name (None when the feature has none) and its
    polygonal geometry (a shapely Polygon or MultiPolygon, valid) in level-0 pixel
    coordinates, x right and y down."""

    name: str | None
    geometry: object


class Annotations(list):
    """The :class:`Annotation` list of one file, in file order, with ``path`` and
    ``skipped``: the features that carry no area (points, lines, no geometry, polygons of
    zero area), left out."""

    def __init__(self, items=(), *, path: str = "", skipped: int = 0):
        super().__init__(items)
        self.path = path
        self.skipped = skipped


def parse_classes(value) -> dict:
    """The ``--classes`` map: annotation class name -> label value, in the order given.

    Names are case-sensitive, exactly as QuPath writes them ("Tumor" is not
    "tumor"): a class missing from the map is an error that names the spelling
    found (see :class:`AnnotationMask`) rather than a silent case-insensitive
    match. The order matters: where annotations of two classes overlap, the
    class given later wins. Two names may share a value. ``"Unclassified"``
    labels the annotations that have no class.

    Parameters
    ----------
    value : str or mapping
        ``"tumor=1,stroma=2"`` (the command line's form: pairs separated by
        commas, spaces around names and values ignored; a name holding a comma
        needs the dict form) or ``{"tumor": 1, "stroma": 2}``.

    Returns
    -------
    dict
        ``{name: value}``; values are non-negative integers (at most 2**64 - 1).

    Raises
    ------
    ParameterTypeError
        ``value`` is neither a string nor a mapping, a name is not a string or
        a value is not an integer (bool included).
    ParameterError
        No class, a pair without ``=``, an empty name, a name given twice, a
        value that is not a non-negative integer.

    Examples
    --------
    >>> parse_classes("tumor=1, stroma=2")
    {'tumor': 1, 'stroma': 2}
    >>> parse_classes({"Tumor": 1, "Unclassified": 0})
    {'Tumor': 1, 'Unclassified': 0}
    >>> parse_classes("tumor=-1")
    Traceback (most recent call last):
    ...
    lazypatch.errors.ParameterError: --classes (classes=) values must be non-negative integers, got tumor=-1
    """
    where = "--classes (classes=)"
    if isinstance(value, str):
        pairs = []
        for part in value.split(","):
            if not part.strip():
                continue
            name, sep, number = part.rpartition("=")
            name = name.strip()
            if not sep or not name:
                raise ParameterError(f"{where} takes NAME=VALUE pairs separated by commas, e.g. "
                                     f"tumor=1,stroma=2; got {part.strip()!r} in {value!r}")
            try:
                number = int(number.strip())
            except ValueError:
                raise ParameterError(f"{where} values must be non-negative integers, got "
                                     f"{name}={number.strip()!r}") from None
            pairs.append((name, number))
    elif isinstance(value, Mapping):
        pairs = list(value.items())
    else:
        raise ParameterTypeError(f"{where} must be a string like 'tumor=1,stroma=2' or a dict "
                                 f"{{name: value}}, got {type(value).__name__} {value!r}")
    if not pairs:
        raise ParameterError(f"{where} must name at least one class, e.g. tumor=1,stroma=2; got {value!r}")
    classes = {}
    for name, number in pairs:
        if not isinstance(name, str) or not name:
            raise ParameterTypeError(f"{where} names must be non-empty strings (the class names "
                                     f"QuPath writes), got {name!r}")
        if not is_int(number):
            raise ParameterTypeError(f"{where} values must be integers, got {name}={number!r}")
        if not 0 <= number <= _UINT64_MAX:
            raise ParameterError(f"{where} values must be non-negative integers, got {name}={number}"
                                 + (" (more than 2**64 - 1)" if number > 0 else ""))
        if name in classes:
            raise ParameterError(f"{where} names each class once, got {name!r} twice in {value!r}")
        classes[name] = int(number)
    return classes


def read_annotations(path) -> Annotations:
    """The polygon annotations of a QuPath / GeoJSON file, in level-0 pixel coordinates.

    Reads what QuPath's *Export objects as GeoJSON* writes: a FeatureCollection,
    a bare JSON list of Features, or a single Feature (annotations, detections
    and cells alike: every feature with an area counts).

    - Class name: ``properties.classification.name`` (QuPath 0.3 and later;
      ``classification.names`` joined by ": " when there is no ``name``), or
      ``properties.classification`` when it is a string. Without a
      classification, ``properties.name`` (GeoJSON written by other tools
      often puts the class there; a QuPath object's own name only counts when
      it has no class). Neither gives ``None``.
    - Geometry: Polygon, MultiPolygon, and GeometryCollections of them (their
      polygonal members, merged). Coordinates past the second (z) are ignored.
      Points and lines carry no area: such features are skipped and counted
      in ``skipped``, as are features without geometry and polygons of zero
      area.
    - An invalid polygon (a self-intersecting outline, overlapping parts) is
      repaired with ``shapely.make_valid``, which keeps every lobe of a
      bow-tie (``buffer(0)`` would drop one), and its polygonal part kept.

    Parameters
    ----------
    path : str or os.PathLike
        A .geojson / .json file.

    Returns
    -------
    Annotations
        A list of :class:`Annotation` ``(name, geometry)`` in file order, with
        ``path`` and ``skipped`` attributes.

    Raises
    ------
    FileNotFoundError, IsADirectoryError
        ``path`` is not a file.
    ImageReadError
        Not JSON (or not UTF-8), not GeoJSON features, a geometry of an unknown
        type or malformed coordinates, or non-finite coordinates: the message
        names the file and the feature.
    ImportError
        shapely is missing (``pip install "lazypatch[wsi]"``).

    Examples
    --------
    >>> import json, os, shutil, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> path = os.path.join(folder, "slide.geojson")
    >>> square = {"type": "Polygon", "coordinates": [[[0, 0], [4, 0], [4, 4], [0, 4], [0, 0]]]}
    >>> with open(path, "w") as file:
    ...     json.dump({"type": "FeatureCollection", "features": [
    ...         {"type": "Feature", "geometry": square,
    ...          "properties": {"objectType": "annotation", "classification": {"name": "Tumor"}}},
    ...         {"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 1]},
    ...          "properties": {"classification": {"name": "Tumor"}}}]}, file)
    >>> annotations = read_annotations(path)
    >>> [(a.name, a.geometry.area) for a in annotations], annotations.skipped
    ([('Tumor', 16.0)], 1)
    >>> shutil.rmtree(folder)
    """
    path = os.fspath(path)
    shapely = _shapely()
    with open(path, "rb") as file:
        data = file.read()
    try:
        document = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise ImageReadError(f"annotations {path!r} is not UTF-8 text ({exc}); expected {_FORMAT}") from None
    except json.JSONDecodeError as exc:
        raise ImageReadError(f"annotations {path!r} is not valid JSON ({exc}); expected {_FORMAT}") from None
    features = _features(document, path)
    annotations, skipped = [], 0
    for number, feature in enumerate(features):
        where = f"annotations {path!r}, feature {number}"
        if not isinstance(feature, dict) or feature.get("type", "Feature") != "Feature":
            kind = feature.get("type") if isinstance(feature, dict) else type(feature).__name__
            raise ImageReadError(f"{where} is {kind!r}, not a GeoJSON Feature; expected {_FORMAT}")
        name = _class_name(feature.get("properties"), where)
        geometry = feature.get("geometry")
        polygons = [] if geometry is None else _polygons(geometry, where, shapely)
        polygons = [p for polygon in polygons for p in shapely.get_parts(polygon)
                    if not p.is_empty and p.area > 0]
        if not polygons:
            skipped += 1
            continue
        merged = polygons[0] if len(polygons) == 1 else shapely.MultiPolygon(polygons)
        if not merged.is_valid:  # overlapping parts: one outline
            merged = shapely.unary_union(polygons)
        if merged.is_empty or merged.area == 0:
            skipped += 1
            continue
        annotations.append(Annotation(name, merged))
    return Annotations(annotations, path=path, skipped=skipped)


def _features(document, path: str) -> list:
    """The features of a FeatureCollection, a list of Features or one Feature."""
    if isinstance(document, list):
        return document
    if isinstance(document, dict):
        kind = document.get("type")
        if kind == "FeatureCollection":
            features = document.get("features")
            if not isinstance(features, list):
                raise ImageReadError(f"annotations {path!r}: the FeatureCollection's 'features' must be a "
                                     f"list, got {type(features).__name__}; expected {_FORMAT}")
            return features
        if kind == "Feature":
            return [document]
        raise ImageReadError(f"annotations {path!r} is a GeoJSON object of type {kind!r}; expected a "
                             f"FeatureCollection, a list of Features or a Feature ({_FORMAT})")
    raise ImageReadError(f"annotations {path!r} holds a JSON {type(document).__name__}; expected a "
                         f"FeatureCollection, a list of Features or a Feature ({_FORMAT})")


def _class_name(properties, where: str):
    """The class of a feature (see read_annotations), or None."""
    if properties is None:
        return None
    if not isinstance(properties, dict):
        raise ImageReadError(f"{where}: 'properties' must be an object, got {type(properties).__name__}")
    classification = properties.get("classification")
    if isinstance(classification, dict):
        name = classification.get("name")
        names = classification.get("names")
        if name is None and isinstance(names, list) and names and all(isinstance(n, str) for n in names):
            name = ": ".join(names)
    elif classification is None:
        name = properties.get("name")
        return name if isinstance(name, str) and name else None
    else:
        name = classification
    if not isinstance(name, str):
        raise ImageReadError(f"{where}: properties.classification must be an object with a 'name' string "
                             f"(QuPath) or a string, got {classification!r}")
    return name or None


def _polygons(geometry, where: str, shapely) -> list:
    """The shapely polygons of a GeoJSON geometry; [] for points and lines."""
    if not isinstance(geometry, dict):
        raise ImageReadError(f"{where}: 'geometry' must be a GeoJSON geometry object, got "
                             f"{type(geometry).__name__}")
    kind = geometry.get("type")
    if kind in ("Point", "MultiPoint", "LineString", "MultiLineString"):
        return []
    if kind == "GeometryCollection":
        members = geometry.get("geometries")
        if not isinstance(members, list):
            raise ImageReadError(f"{where}: a GeometryCollection needs a 'geometries' list, got {members!r}")
        return [p for member in members for p in _polygons(member, where, shapely)]
    if kind not in ("Polygon", "MultiPolygon"):
        raise ImageReadError(f"{where} has a geometry of type {kind!r}; annotations are Polygon, "
                             "MultiPolygon or GeometryCollection (points and lines are skipped)")
    coordinates = geometry.get("coordinates")
    parts = [coordinates] if kind == "Polygon" else coordinates
    if not isinstance(parts, list):
        raise ImageReadError(f"{where}: a {kind}'s coordinates must be a list, got {coordinates!r}")
    polygons = []
    for part in parts:
        if not isinstance(part, list):
            raise ImageReadError(f"{where}: a polygon must be a list of rings (exterior, then holes), "
                                 f"got {part!r}")
        if not part:  # an empty polygon: no area
            continue
        rings = [_ring(ring, where) for ring in part]
        try:
            polygon = shapely.Polygon(rings[0], rings[1:])
        except (ValueError, TypeError, shapely.errors.GEOSException) as exc:
            raise ImageReadError(f"{where}: not a polygon ({exc})") from None
        if not polygon.is_valid:
            polygon = _polygonal(shapely.make_valid(polygon), shapely)
        if polygon is not None:
            polygons.append(polygon)
    return polygons


def _ring(ring, where: str) -> np.ndarray:
    """A ring's (n, 2) float64 x, y coordinates, finite, at least three positions."""
    try:
        array = np.asarray(ring, dtype=np.float64)
    except (ValueError, TypeError):
        array = None
    if array is None or array.ndim != 2 or array.shape[1] < 2:
        shown = repr(ring)
        raise ImageReadError(f"{where}: a ring must be a list of [x, y] positions, got "
                             f"{shown[:80] + '...' if len(shown) > 80 else shown}")
    array = array[:, :2]
    if not np.isfinite(array).all():
        bad = array[~np.isfinite(array).all(axis=1)][0].tolist()
        raise ImageReadError(f"{where} has a non-finite coordinate {bad}; coordinates must be finite "
                             "numbers (level-0 pixels)")
    if len(array) < 3:
        raise ImageReadError(f"{where}: a ring needs at least 3 positions, got {len(array)}")
    return array


def _polygonal(geometry, shapely):
    """The polygonal part of a geometry (what make_valid returned), or None."""
    parts = [part for part in shapely.get_parts(geometry)
             if part.geom_type in ("Polygon", "MultiPolygon") and not part.is_empty]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else shapely.unary_union(parts)


class AnnotationMask:
    """The label map of one 2-D image drawn from its annotation file, read band by band.

    A read-only array-like of shape ``shape`` (H, W), the image's stored grid:
    stored pixel (r, c) gets the value of an annotation's class when its
    centre, at level-0 ((r + 0.5) / sy, (c + 0.5) / sx), lies inside the
    annotation (its exterior minus its holes; a centre exactly on the outline
    counts on its top and left edges, not on its bottom and right ones: see
    NOTE [pixel-centre rule] in the module source); where annotations overlap,
    the class given later in ``classes`` wins; other pixels are
    ``ignore_value``. Nothing is rasterized
    at construction: ``mask[r0:r1]`` rasterizes the rows asked for, from the
    polygons whose bounds meet them, so memory holds the band and the
    polygons, never the whole mask.

    Parameters
    ----------
    path : str or os.PathLike
        The annotation file (see :func:`read_annotations`).
    shape : (int, int)
        The stored image's spatial shape (H, W).
    classes : str or mapping
        Class name -> value, as :func:`parse_classes` takes it. Every class in
        the file must be there, spelled as in the file (case-sensitive).
        Annotations without a class are an error unless ``classes`` has an
        ``"Unclassified"`` entry, which labels them (put it first to let every
        class paint over them).
    scale : (float, float)
        Stored pixels per level-0 pixel along (y, x): 1 at level 0, ``1 /
        downsample`` at a pyramid level, stored_shape / level0_shape for a
        resampled build.
    ignore_value : int
        The value of unannotated pixels (default 0).

    Attributes
    ----------
    path, shape, dtype, ndim, nbytes
        As an array's; ``dtype`` is the smallest unsigned integer type that
        holds every value of ``classes`` and ``ignore_value``, so every image
        of a collection built with one ``classes`` gets the same dtype.
    labels : tuple of int
        The sorted values that can appear: ``ignore_value`` and the values of
        the classes with an annotation over the image.
    skipped : int
        Features of the file without area (points, lines), left out.
    outside : int
        Annotations entirely outside the image (allowed; they draw nothing).
    num_annotations : int
        Annotations read from the file, ``outside`` included.

    Raises
    ------
    ParameterError
        A class of the file is not in ``classes`` (the message names the
        file, the missing names, the classes given and the fix), annotations
        without a class and no ``"Unclassified"`` entry, or a bad ``shape``,
        ``scale`` or ``ignore_value``.
    ImageReadError, FileNotFoundError
        As :func:`read_annotations`.

    Examples
    --------
    >>> import json, os, shutil, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> path = os.path.join(folder, "slide.geojson")
    >>> def feature(name, ring):
    ...     return {"type": "Feature", "properties": {"classification": {"name": name}},
    ...             "geometry": {"type": "Polygon", "coordinates": [ring]}}
    >>> with open(path, "w") as file:  # level-0 pixels; "stroma" overlaps "tumor"
    ...     json.dump([feature("tumor", [[0, 0], [8, 0], [8, 4], [0, 4], [0, 0]]),
    ...                feature("stroma", [[4, 0], [12, 0], [12, 8], [4, 8], [4, 0]])], file)
    >>> mask = AnnotationMask(path, (4, 8), "tumor=1,stroma=2", scale=(0.5, 0.5))
    >>> mask.dtype, mask.labels
    (dtype('uint8'), (0, 1, 2))
    >>> mask[...]
    array([[1, 1, 2, 2, 2, 2, 0, 0],
           [1, 1, 2, 2, 2, 2, 0, 0],
           [0, 0, 2, 2, 2, 2, 0, 0],
           [0, 0, 2, 2, 2, 2, 0, 0]], dtype=uint8)
    >>> AnnotationMask(path, (4, 8), {"tumor": 1})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    lazypatch.errors.ParameterError: annotations '...slide.geojson' have class 'stroma', which --classes (classes=) does not map ({'tumor': 1}): every annotation class needs a value; add it, e.g. --classes tumor=1,stroma=VALUE
    >>> shutil.rmtree(folder)
    """

    def __init__(self, path, shape, classes, *, scale=(1.0, 1.0), ignore_value: int = 0):
        self.path = os.fspath(path)
        self.shape = _check_shape(shape)
        self.scale = _check_scale(scale)
        if not is_int(ignore_value):
            raise ParameterTypeError(f"--ignore-value (ignore_value=) must be an integer, got {ignore_value!r}")
        if not 0 <= ignore_value <= _UINT64_MAX:
            raise ParameterError(f"--ignore-value (ignore_value=) must be a non-negative integer, got "
                                 f"{ignore_value}")
        self.ignore_value = int(ignore_value)
        self.classes = parse_classes(classes)
        top = max(max(self.classes.values()), self.ignore_value)
        self.dtype = np.dtype(next(t for t in (np.uint8, np.uint16, np.uint32, np.uint64)
                                   if top <= np.iinfo(t).max))

        annotations = read_annotations(self.path)
        self.skipped = annotations.skipped
        self.num_annotations = len(annotations)
        self._check_classes(annotations)

        self._prepare(annotations)

    def _prepare(self, annotations) -> None:
        """The polygons as flat vertex arrays in stored pixel-index units, in painting
        order (by the rank of their class in ``classes``, stable), with their bounds."""
        shapely = _shapely()
        ranks = {name: rank for rank, name in enumerate(self.classes)}
        keys = [UNCLASSIFIED if a.name is None else a.name for a in annotations]
        order = sorted(range(len(annotations)), key=lambda k: ranks[keys[k]])
        geometries = np.array([annotations[k].geometry for k in order] or [None], dtype=object)
        parts, part_owner = shapely.get_parts(geometries, return_index=True)
        rings, ring_part = shapely.get_rings(parts, return_index=True)  # exterior, then holes
        points, point_ring = shapely.get_coordinates(rings, return_index=True)
        sy, sx = self.scale
        # NOTE [pixel-centre rule]: pixel-index units, where pixel (r, c) has its centre at (r, c)
        y, x = points[:, 1] * sy - 0.5, points[:, 0] * sx - 0.5
        point_part = ring_part[point_ring]
        starts = np.searchsorted(point_part, np.arange(len(parts) + 1))
        bounds = np.empty((len(parts), 4))
        if len(parts):
            for column, (function, values) in enumerate(((np.minimum, y), (np.maximum, y),
                                                         (np.minimum, x), (np.maximum, x))):
                bounds[:, column] = function.reduceat(values, starts[:-1])
        height, width = self.shape
        # a margin of one pixel: no rounding of a crossing reaches past it
        low_y, high_y, low_x, high_x = bounds.T
        meets = (high_y >= -1) & (low_y <= height) & (high_x >= -1) & (low_x <= width)
        annotation_values = np.array([self.classes[keys[k]] for k in order], dtype=np.uint64)
        drawn = np.zeros(len(order), dtype=bool)
        drawn[part_owner[meets]] = True
        self.outside = int(len(order) - drawn.sum())
        self.labels = tuple(sorted({int(v) for v in annotation_values[drawn]} | {self.ignore_value}))
        # keep the polygons that meet the image; polygon p owns vertices [_starts[p],
        # _starts[p + 1]), a vertex opens a ring when _first says so, and every other
        # vertex k closes the edge (k - 1, k)
        kept_points = meets[point_part]
        first = np.ones(len(points), dtype=bool)
        first[1:] = point_ring[1:] != point_ring[:-1]
        self._y, self._x, self._first = y[kept_points], x[kept_points], first[kept_points]
        lengths = np.diff(starts)[meets]
        self._starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self._values = annotation_values[part_owner[meets]].astype(self.dtype)
        self._bounds = bounds[meets]

    def _check_classes(self, annotations) -> None:
        names = {a.name for a in annotations}
        where = "--classes (classes=)"
        if None in names and UNCLASSIFIED not in self.classes:
            count = sum(1 for a in annotations if a.name is None)
            raise ParameterError(
                f"annotations {self.path!r} have {count} annotation(s) without a class (no "
                f"properties.classification or properties.name), which {where} does not map "
                f"({self.classes}): classify them in QuPath, or label them with --classes "
                f"{UNCLASSIFIED}=VALUE (first, for the other classes to paint over them)"
            )
        missing = sorted(name for name in names - {None} if name not in self.classes)
        if missing:
            lowered = {}
            for name in self.classes:
                lowered.setdefault(name.lower(), []).append(name)
            close = [f"{name!r} is not {lowered[name.lower()][0]!r}" for name in missing
                     if name.lower() in lowered]
            given = ",".join(f"{name}={value}" for name, value in self.classes.items())
            raise ParameterError(
                f"annotations {self.path!r} have class{'es' if len(missing) > 1 else ''} "
                f"{', '.join(repr(name) for name in missing)}, which {where} does not map "
                f"({self.classes}): every annotation class needs a value; add "
                f"{'them' if len(missing) > 1 else 'it'}, e.g. --classes {given},"
                + ",".join(f"{name}=VALUE" for name in missing)
                + (f" (names are case-sensitive, as QuPath writes them: {'; '.join(close)})" if close else "")
            )

    # -- the array-like --------------------------------------------------------------------
    ndim = 2

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self.shape[1] * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        ellipses = [k for k, item in enumerate(key) if item is Ellipsis]
        if len(ellipses) > 1:
            raise IndexError("an index can only have a single ellipsis ('...')")
        if ellipses:
            at = ellipses[0]
            key = key[:at] + (slice(None),) * (2 - len(key) + 1) + key[at + 1:]
        if len(key) > 2:
            raise IndexError(f"too many indices: the annotation mask of {self.path!r} is 2-D, got {len(key)}")
        key = key + (slice(None),) * (2 - len(key))
        (r0, r1, rows), (c0, c1, columns) = (_axis(item, n, axis)
                                             for axis, (item, n) in enumerate(zip(key, self.shape)))
        return self._band(r0, r1, c0, c1)[rows, columns]

    def __array__(self, dtype=None, copy=None):
        array = self[...]
        return array if dtype is None else array.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return (f"AnnotationMask({self.path!r}, shape={self.shape}, dtype={self.dtype}, "
                f"classes={self.classes}, scale={self.scale}, ignore_value={self.ignore_value})")

    # -- rasterizing -----------------------------------------------------------------------
    def _band(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """Rows [r0, r1) x columns [c0, c1) of the mask, rasterized now."""
        out = np.full((r1 - r0, c1 - c0), self.ignore_value, dtype=self.dtype)
        if out.size == 0 or not len(self._values):
            return out
        low_y, high_y, low_x, high_x = self._bounds.T
        meets = (low_y < r1) & (high_y > r0 - 1) & (low_x < c1) & (high_x > c0 - 1)
        polygons = np.flatnonzero(meets)
        if not len(polygons):
            return out
        # every vertex of those polygons but the ring openers: edge (k - 1, k) ends at k
        starts, stops = self._starts[polygons], self._starts[polygons + 1]
        lengths = stops - starts
        owner = np.repeat(polygons, lengths)
        ends = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths - starts, lengths)
        keep = ~self._first[ends]
        ends, owner = ends[keep], owner[keep]
        for top in range(r0, r1, _ROWS_AT_ONCE):
            self._paint(out, ends, owner, top, min(top + _ROWS_AT_ONCE, r1), r0, c0, c1)
        return out

    def _paint(self, out, ends, owner, top, bottom, r0, c0, c1) -> None:
        """Paint rows [top, bottom) of ``out`` (whose first row is r0, first column c0).
        See NOTE [pixel-centre rule]."""
        yi, yj = self._y[ends], self._y[ends - 1]
        low, high = np.minimum(yi, yj), np.maximum(yi, yj)
        # the integer rows r with low <= r < high, within [top, bottom)
        first = np.clip(np.ceil(low), top, bottom).astype(np.int64)
        count = np.clip(np.ceil(high), top, bottom).astype(np.int64) - first
        spans = np.flatnonzero(count > 0)
        if not len(spans):
            return
        count = count[spans]
        edge = np.repeat(spans, count)
        rows = np.repeat(first[spans] - np.cumsum(count) + count, count) + np.arange(int(count.sum()))
        polygon = owner[edge]
        k = ends[edge]
        xi, yi, xj, yj = self._x[k], self._y[k], self._x[k - 1], self._y[k - 1]
        # from the end of smaller y, so that two polygons sharing the edge compute one number
        lower = yi < yj
        xa, ya = np.where(lower, xi, xj), np.where(lower, yi, yj)
        xb, yb = np.where(lower, xj, xi), np.where(lower, yj, yi)
        cross = xa + (xb - xa) * (rows.astype(np.float64) - ya) / (yb - ya)
        # column c is left of the crossing when c < cross, i.e. c < ceil(cross)
        edges = np.clip(np.ceil(cross), c0, c1).astype(np.int64)
        # per polygon and row the crossings pair up (a closed ring crosses a row an even
        # number of times); between the two of a pair the row is inside
        order = np.lexsort((edges, rows, polygon))
        edges, rows, polygon = edges[order], rows[order], polygon[order]
        run_starts, run_stops = edges[0::2], edges[1::2]
        rows, polygon = rows[0::2] - r0, polygon[0::2]
        runs = np.flatnonzero(run_stops > run_starts)
        values = self._values
        for run in runs.tolist():  # in polygon order, so the later class paints last
            out[rows[run], run_starts[run] - c0:run_stops[run] - c0] = values[polygon[run]]


def _check_shape(shape) -> tuple:
    try:
        items = tuple(shape)
    except TypeError:
        items = None
    if items is None or len(items) != 2 or not all(is_int(n) for n in items):
        raise ParameterTypeError(f"shape must be two integers (H, W), the stored image's spatial shape, "
                                 f"got {shape!r}")
    if min(items) < 1:
        raise ParameterError(f"shape must be positive (H, W), got {items}")
    return tuple(int(n) for n in items)


def _check_scale(scale) -> tuple:
    try:
        items = tuple(scale)
    except TypeError:
        items = None
    if (items is None or len(items) != 2
            or not all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
                       for v in items)):
        raise ParameterTypeError(f"scale must be two numbers (y, x): stored pixels per level-0 pixel, got "
                                 f"{scale!r}")
    items = tuple(float(v) for v in items)
    if not all(math.isfinite(v) and v > 0 for v in items):
        raise ParameterError(f"scale must be positive finite numbers (y, x): stored pixels per level-0 "
                             f"pixel (stored shape / level-0 shape), got {items}")
    return items


def _axis(item, length: int, axis: int):
    """(start, stop, residual) of one axis' key: the bounding range to rasterize and what to
    apply to it (an int drops the axis, a slice keeps its step)."""
    if isinstance(item, slice):
        start, stop, step = item.indices(length)
        if step > 0:
            return start, max(start, stop), slice(None, None, step)
        if start <= stop:
            return 0, 0, slice(None)
        low = stop + 1
        return low, start + 1, slice(start - low, None, step)
    if isinstance(item, (bool, np.bool_)) or not hasattr(item, "__index__"):
        raise ParameterTypeError(f"an annotation mask takes integers, slices and ... as indices, got "
                                 f"{type(item).__name__} {item!r} on axis {axis}")
    value = operator.index(item)
    if not -length <= value < length:
        raise IndexError(f"index {value} is out of bounds for axis {axis} with size {length}")
    value %= length
    return value, value + 1, 0
