"""Geometry of the synthetic street scenes: the ground plane's perspective, the outlines of
figures, cars and two-wheelers, and the pixel rounding of polygons (private to ``scenes``)."""
from dataclasses import dataclass

import numpy as np

# Outline of a standing figure, (u, v): u in [-0.5, 0.5] times the figure height, v in [0, 1]
# from head to feet. One simple polygon, because a Cityscapes object is one polygon.
FIGURE_OUTLINE = (
    (-0.05, 0.0), (0.05, 0.0), (0.08, 0.04), (0.08, 0.14), (0.04, 0.19),
    (0.17, 0.22), (0.22, 0.52), (0.15, 0.53), (0.13, 0.33), (0.13, 0.57),
    (0.12, 1.0), (0.03, 1.0), (0.0, 0.62), (-0.03, 1.0), (-0.12, 1.0),
    (-0.13, 0.57), (-0.13, 0.33), (-0.15, 0.53), (-0.22, 0.52), (-0.17, 0.22),
    (-0.04, 0.19), (-0.08, 0.14), (-0.08, 0.04),
)  # fmt: skip

# Side view of a car facing right, (u, v): u along the length, v up from the ground, in [0, 1].
CAR_OUTLINE = (
    (0.0, 0.14), (0.02, 0.5), (0.2, 0.56), (0.32, 0.98), (0.72, 0.98), (0.85, 0.56),
    (0.99, 0.5), (1.0, 0.14), (0.93, 0.0), (0.07, 0.0),
)  # fmt: skip

GROUP_MARGIN = 4  # pixels kept free between distinct groups, so they never touch


@dataclass(frozen=True)
class Ground:
    """Perspective geometry of the ground plane: horizon row and the road trapezoid."""

    height: int
    width: int
    horizon: int
    road_top: tuple  # (x_left, x_right) at the horizon
    road_bottom: tuple  # (x_left, x_right) at the bottom row

    def depth(self, y):
        """0 at the horizon, 1 at the bottom row: the scale of things standing at row y."""
        return (y - self.horizon) / float(self.height - 1 - self.horizon)

    def road_span(self, y):
        t = self.depth(y)
        left = self.road_top[0] + t * (self.road_bottom[0] - self.road_top[0])
        right = self.road_top[1] + t * (self.road_bottom[1] - self.road_top[1])
        return left, right

    def figure_height(self, y):
        return 0.55 * self.depth(y) * (self.height - self.horizon)


def poly(points, height, width):
    """Round to integer pixels and clip into the image, as annotation tools store polygons."""
    return tuple(
        (int(min(max(round(x), 0), width - 1)), int(min(max(round(y), 0), height - 1)))
        for x, y in points
    )


def bbox(points):
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    return min(xs), min(ys), max(xs), max(ys)


def figure(cx, feet_y, fh):
    return [(cx + u * fh, feet_y - fh + v * fh) for u, v in FIGURE_OUTLINE]


def arc(cx, cy, r, start_deg, stop_deg, n=7):
    angles = np.deg2rad(np.linspace(start_deg, stop_deg, n))
    return [(cx + r * np.cos(a), cy + r * np.sin(a)) for a in angles]


def two_wheeler(kind, x0, foot, fh, facing):
    """Outline and wheel circles of a bicycle or motorcycle whose rear wheel starts at x0."""
    if kind == "bicycle":
        length, r, seat, bar, crotch = 1.0 * fh, 0.19 * fh, (0.36, 2.3), (0.78, 2.7), 0.9
    else:
        length, r, seat, bar, crotch = 1.2 * fh, 0.22 * fh, (0.3, 2.5), (0.8, 3.1), 0.6
    rear = (x0 + r, foot - r)
    front = (x0 + length - r, foot - r)
    pts = arc(*rear, r, 90, 270)  # bottom, back, top of the rear wheel (y grows downwards)
    pts += [(x0 + seat[0] * length, foot - seat[1] * r), (x0 + bar[0] * length, foot - bar[1] * r)]
    pts += arc(*front, r, -90, 90)  # top, front, bottom of the front wheel
    pts += [(x0 + 0.5 * length, foot - crotch * r)]
    wheels = [(rear[0], rear[1], r), (front[0], front[1], r)]
    if facing < 0:  # mirror about the vehicle's centre
        mid = x0 + length / 2.0
        pts = [(2 * mid - x, y) for x, y in pts]
        wheels = [(2 * mid - x, y, rr) for x, y, rr in wheels]
    seat_x = x0 + (seat[0] + 0.08) * length if facing > 0 else x0 + (1 - seat[0] - 0.08) * length
    return pts, wheels, seat_x, length


def overlaps(box, boxes):
    x0, y0, x1, y1 = box
    m = GROUP_MARGIN
    return any(
        x0 - m <= bx1 and bx0 - m <= x1 and y0 - m <= by1 and by0 - m <= y1
        for bx0, by0, bx1, by1 in boxes
    )
