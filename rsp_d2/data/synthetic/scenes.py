"""Procedural street scenes: the dataset-independent layout shared by the synthetic writers.

A scene is an ordered list of polygons (painter's order, later ones cover earlier ones), exactly
the way Cityscapes annotations are drawn, each tagged with an abstract *kind* ("road", "rider",
...). The Cityscapes and COCO writers map kinds to their own label sets; ``textures.render_image``
paints the pixels.

Context property built into the layout: ``person`` and ``rider`` are the *same* figure (same
outline, same appearance distribution). A rider is a figure whose legs overlap a bicycle or a
motorcycle drawn just before it; a person stands apart, separated from every other group by a
margin, so no person pixel touches a two-wheeler. Telling the two apart requires seeing beyond
the figure itself.
"""

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from ._geometry import bbox, CAR_OUTLINE, figure, Ground, GROUP_MARGIN, overlaps, poly, two_wheeler

__all__ = [
    "KINDS",
    "Scene",
    "SceneObject",
    "make_street_scene",
    "rasterize",
]

# Background kinds first, in the order they are drawn.
KINDS = (
    "sky",
    "building",
    "sidewalk",
    "terrain",
    "road",
    "vegetation",
    "pole",
    "traffic_sign",
    "car",
    "bicycle",
    "motorcycle",
    "person",
    "rider",
    "ego_vehicle",
)

_MAX_TRIES = 300


@dataclass(frozen=True)
class SceneObject:
    """One polygon of a scene.

    Attributes:
        kind: one of ``KINDS``.
        polygon: ((x, y), ...) integer pixel coordinates inside the image.
        group: objects sharing a non-negative group are one physical unit (a rider and its
            vehicle); -1 for background.
        style: seed of the object's texture, so rendering is a pure function of the scene.
        attrs: kind-specific geometry for the texture (wheel circles, facing direction).
    """

    kind: str
    polygon: tuple
    group: int = -1
    style: int = 0
    attrs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Scene:
    """A height x width image described by ``objects`` in painter's order."""

    height: int
    width: int
    objects: tuple
    style: int = 0


def _seed(rng):
    return int(rng.integers(0, 2**31 - 1))


def _background(rng, ground, poles):
    """Sky, buildings, ground, road, terrain, vegetation and street furniture."""
    H, W, hz = ground.height, ground.width, ground.horizon
    objs = [SceneObject("sky", poly([(0, 0), (W - 1, 0), (W - 1, H - 1), (0, H - 1)], H, W))]
    base = hz + int(0.04 * H)
    x = -int(rng.integers(0, int(0.08 * W) + 1))
    first = True
    while x < W:
        bw = int(rng.uniform(0.1, 0.28) * W)
        if first or rng.random() > 0.22:  # gaps let the sky reach the horizon
            top = rng.uniform(0.04 * H, hz - 0.12 * H)
            pts = [(x, base), (x, top), (x + bw, top), (x + bw, base)]
            if rng.random() < 0.4:  # pitched roof
                pts = [(x, base), (x, top + 0.06 * H), (x + bw / 2, top), (x + bw, top + 0.06 * H),
                       (x + bw, base)]  # fmt: skip
            objs.append(SceneObject("building", poly(pts, H, W), style=_seed(rng)))
            first = False
        x += bw
    ground_rect = [(0, hz), (W - 1, hz), (W - 1, H - 1), (0, H - 1)]
    objs.append(SceneObject("sidewalk", poly(ground_rect, H, W), style=_seed(rng)))
    for side in (-1, 1):
        if rng.random() < 0.5:
            objs.append(SceneObject("terrain", _terrain_wedge(rng, ground, side), style=_seed(rng)))
    (tl, tr), (bl, br) = ground.road_top, ground.road_bottom
    road = [(tl, hz + 1), (tr, hz + 1), (br, H - 1), (bl, H - 1)]
    objs.append(SceneObject("road", poly(road, H, W), style=_seed(rng)))
    if rng.random() < 0.5:
        objs.append(SceneObject("vegetation", _hedge(rng, ground), style=_seed(rng)))
    for _ in range(int(rng.integers(1, 4))):
        objs.extend(_tree(rng, ground))
    if poles:
        for _ in range(int(rng.integers(1, 3))):
            objs.extend(_pole(rng, ground))
    return objs


def _terrain_wedge(rng, ground, side):
    """Grass between the image border and a line converging to the vanishing area."""
    H, W, hz = ground.height, ground.width, ground.horizon
    reach = rng.uniform(0.08, 0.25) * W
    slope = rng.uniform(0.15, 0.5) * (H - 1 - hz)  # rows per `reach` pixels towards the border
    y_border = min(H - 1, hz + 1 + slope)
    if side < 0:
        pts = [(0, hz + 1), (reach, hz + 1), (0, y_border)]
    else:
        pts = [(W - 1, hz + 1), (W - 1 - reach, hz + 1), (W - 1, y_border)]
    return poly(pts, H, W)


def _hedge(rng, ground):
    H, W, hz = ground.height, ground.width, ground.horizon
    x0 = rng.uniform(0, 0.6) * W
    x1 = min(W - 1, x0 + rng.uniform(0.2, 0.5) * W)
    xs = np.linspace(x0, x1, 8)
    tops = [(x, hz - rng.uniform(0.03, 0.08) * H) for x in xs]
    return poly(tops + [(x1, hz + 0.02 * H), (x0, hz + 0.02 * H)], H, W)


def _off_road_x(rng, ground, y, half_width):
    """An x where an object of the given half width stands beside the road, or None."""
    left, right = ground.road_span(y)
    choices = []
    if left - half_width - 3 > half_width + 1:
        choices.append((half_width + 1, left - half_width - 3))
    if right + half_width + 3 < ground.width - 2 - half_width:
        choices.append((right + half_width + 3, ground.width - 2 - half_width))
    if not choices:
        return None
    lo, hi = choices[int(rng.integers(0, len(choices)))]
    return rng.uniform(lo, hi)


def _tree(rng, ground):
    H, W, hz = ground.height, ground.width, ground.horizon
    y = hz + rng.uniform(0.02, 0.12) * (H - hz)
    d = max(ground.depth(y), 0.05)
    trunk_w = max(2.0, 0.05 * d * H)
    x = _off_road_x(rng, ground, y, trunk_w)
    if x is None:
        return []
    trunk_h = (0.12 + 0.5 * d) * H * rng.uniform(0.7, 1.1)
    crown_r = (0.06 + 0.25 * d) * H * rng.uniform(0.8, 1.2)
    cy = y - trunk_h - 0.5 * crown_r
    trunk = [
        (x - trunk_w / 2, y),
        (x - trunk_w / 2, cy),
        (x + trunk_w / 2, cy),
        (x + trunk_w / 2, y),
    ]
    angles = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    radii = crown_r * rng.uniform(0.75, 1.1, size=angles.size)
    crown = [(x + r * np.cos(a), cy + 0.85 * r * np.sin(a)) for a, r in zip(angles, radii)]
    return [
        SceneObject("vegetation", poly(trunk, H, W), style=_seed(rng)),
        SceneObject("vegetation", poly(crown, H, W), style=_seed(rng)),
    ]


def _pole(rng, ground):
    H, W, hz = ground.height, ground.width, ground.horizon
    y = hz + rng.uniform(0.1, 0.45) * (H - hz)
    d = ground.depth(y)
    half = max(1.0, 0.012 * d * W)
    x = _off_road_x(rng, ground, y, half)
    if x is None:
        return []
    top = max(1.0, y - 2.4 * ground.figure_height(y) * rng.uniform(0.9, 1.2))
    objs = [SceneObject("pole", poly([(x - half, y), (x - half, top), (x + half, top),
                                       (x + half, y)], H, W), style=_seed(rng))]  # fmt: skip
    if rng.random() < 0.6:
        s = max(3.0, 0.18 * ground.figure_height(y))
        sign = [(x - s, top), (x + s, top), (x + s, top + 1.6 * s), (x - s, top + 1.6 * s)]
        objs.append(SceneObject("traffic_sign", poly(sign, H, W), style=_seed(rng)))
    return objs


def _foot_row(rng, ground, lo, hi, bottom):
    """A ground row whose depth lies in [lo, hi], above the reserved bottom band."""
    y = ground.horizon + rng.uniform(lo, hi) * (ground.height - 1 - ground.horizon)
    return min(y, bottom)


def _place_car(rng, ground, bottom):
    foot = _foot_row(rng, ground, 0.3, 0.8, bottom)
    fh = ground.figure_height(foot)
    length, height = 2.4 * fh, 0.8 * fh
    left, right = ground.road_span(foot)
    if right - left < length + 4:
        return None
    x0 = rng.uniform(left + 2, right - length - 2)
    facing = 1 if rng.random() < 0.5 else -1
    pts = [(x0 + (u if facing > 0 else 1 - u) * length, foot - v * height) for u, v in CAR_OUTLINE]
    r = 0.16 * height
    wheels = [(x0 + f * length, foot - r, r) for f in (0.2, 0.8)]
    return [("car", pts, {"wheels": wheels, "facing": facing})]


def _place_figure(rng, ground, bottom):
    foot = _foot_row(rng, ground, 0.4, 0.95, bottom)
    fh = ground.figure_height(foot)
    cx = rng.uniform(0.25 * fh + 2, ground.width - 3 - 0.25 * fh)
    return [("person", figure(cx, foot, fh), {})]


def _place_two_wheeler(rng, ground, bottom, kind, with_rider):
    foot = _foot_row(rng, ground, 0.4, 0.95, bottom)
    fh = ground.figure_height(foot)
    length = 1.2 * fh
    x0 = rng.uniform(2, ground.width - 3 - length)
    facing = 1 if rng.random() < 0.5 else -1
    pts, wheels, seat_x, _ = two_wheeler(kind, x0, foot, fh, facing)
    parts = [(kind, pts, {"wheels": wheels, "facing": facing})]
    if with_rider:
        # Same figure as a pedestrian, feet at hub height so the legs overlap the frame.
        parts.append(("rider", figure(seat_x, wheels[0][1] + 0.2 * wheels[0][2], fh), {}))
    return parts


def make_street_scene(rng, height, width, *, poles=True, ego_vehicle=True):
    """Lay out a random street scene.

    Every scene contains sky, building, sidewalk, road, at least one car, at least one standing
    person and at least one rider (on a bicycle when ``rng`` draws it, else a motorcycle; scenes
    with two riders have one of each), plus optional terrain, vegetation, parked bicycles,
    poles with traffic signs (``poles``) and the recording car's hood at the bottom
    (``ego_vehicle``).

    Args:
        rng: a ``numpy.random.Generator``; the scene is a pure function of its state.
        height, width: image size in pixels (at least 64 x 64).
        poles: include poles and traffic signs.
        ego_vehicle: include the ego vehicle's hood along the bottom edge.

    Returns:
        A ``Scene``.
    """
    if height < 64 or width < 64:
        raise ValueError(f"scene size {height}x{width} too small (need at least 64x64)")
    H, W = int(height), int(width)
    hz = int(H * rng.uniform(0.38, 0.46))
    vp = W * rng.uniform(0.4, 0.6)
    top_half = W * rng.uniform(0.02, 0.05)
    ground = Ground(
        H, W, hz,
        road_top=(vp - top_half, vp + top_half),
        road_bottom=(W * rng.uniform(0.02, 0.22), W * rng.uniform(0.78, 0.98)),
    )  # fmt: skip
    objects = _background(rng, ground, poles)
    ego_top = H - 1 - int(0.07 * H) if ego_vehicle else H - 1
    bottom = ego_top - GROUP_MARGIN

    kinds = ["bicycle", "motorcycle"]
    rng.shuffle(kinds)
    wanted = [("car", None), ("person", None), ("rider", kinds[0])]  # required ones first
    wanted += [("car", None)] * int(rng.integers(0, 3))
    wanted += [("person", None)] * int(rng.integers(0, 3))
    wanted += [("rider", kinds[1])] * int(rng.integers(0, 2))
    wanted += [("parked", "bicycle")] * int(rng.random() < 0.35)
    placers = {
        "car": lambda k: _place_car(rng, ground, bottom),
        "person": lambda k: _place_figure(rng, ground, bottom),
        "rider": lambda k: _place_two_wheeler(rng, ground, bottom, k, with_rider=True),
        "parked": lambda k: _place_two_wheeler(rng, ground, bottom, k, with_rider=False),
    }
    groups, boxes = [], []
    for i, (what, arg) in enumerate(wanted):
        for _ in range(_MAX_TRIES):
            parts = placers[what](arg)
            if parts is None:
                continue
            parts = [(k, poly(p, H, W), a) for k, p, a in parts]
            box = bbox([pt for _, p, _ in parts for pt in p])
            if not overlaps(box, boxes):
                boxes.append(box)
                groups.append(parts)
                break
        else:
            if i < 3:
                raise RuntimeError(f"could not place a required {what} in a {H}x{W} scene")
    # Far groups first, so nearer ones would cover them (they are disjoint anyway).
    order = sorted(range(len(groups)), key=lambda g: (boxes[g][3], g))
    for gid, g in enumerate(order):
        for kind, pts, attrs in groups[g]:
            objects.append(SceneObject(kind, pts, group=gid, style=_seed(rng), attrs=attrs))
    if ego_vehicle:
        xs = np.linspace(0, W - 1, 9)
        arc = [(x, ego_top + 0.6 * (H - 1 - ego_top) * ((2 * x / (W - 1)) - 1) ** 2) for x in xs]
        objects.append(SceneObject("ego_vehicle", poly(arc + [(W - 1, H - 1), (0, H - 1)], H, W),
                                   style=_seed(rng)))  # fmt: skip
    return Scene(H, W, tuple(objects), style=_seed(rng))


def rasterize(scene):
    """Index of the visible object at every pixel (int32, -1 where no polygon covers it).

    Uses PIL's polygon fill in painter's order, the same rasterisation cityscapesscripts'
    ``json2labelImg`` applies to the polygons, so both agree pixel for pixel.
    """
    canvas = Image.new("I", (scene.width, scene.height), 0)
    draw = ImageDraw.Draw(canvas)
    for i, obj in enumerate(scene.objects):
        draw.polygon(list(obj.polygon), fill=i + 1)
    return np.asarray(canvas, dtype=np.int32) - 1
