"""Paint a ``Scene``: one procedural texture per kind, so that classes are learnable from
appearance but not from colour alone (road and sidewalk share greys and differ by pattern,
vegetation and terrain share greens and differ by structure, car bodies take any colour).

``person`` and ``rider`` use the same texture function and the same random draws: their
appearance distributions are identical by construction.
"""

import cv2
import numpy as np

from .scenes import rasterize

__all__ = ["render_image"]


def _smooth_noise(rng, h, w, cell):
    """Value noise in [0, 1] with features about ``cell`` pixels wide."""
    grid = rng.random((h // cell + 2, w // cell + 2)).astype(np.float32)
    return np.clip(cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC), 0.0, 1.0)


def _fine_noise(rng, h, w, sigma):
    return rng.normal(0.0, sigma, size=(h, w, 1)).astype(np.float32)


def _fill(h, w, color):
    return np.broadcast_to(np.asarray(color, np.float32), (h, w, 3)).copy()


def _jitter(rng, color, amount):
    return np.asarray(color, np.float32) + rng.uniform(-amount, amount, size=3)


def _pick(rng, palette):
    return palette[int(rng.integers(0, len(palette)))]


def _sky(rng, h, w, obj, origin):
    top = _jitter(rng, (110, 165, 220), 25)
    bottom = _jitter(rng, (215, 228, 240), 12)
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    img = top * (1 - t) + bottom * t + np.zeros((1, w, 1), np.float32)
    clouds = np.clip(_smooth_noise(rng, h, w, 24) * 2.0 - 1.0, 0, 1)[..., None]
    img = img * (1 - 0.6 * clouds) + 245.0 * 0.6 * clouds
    return img + _fine_noise(rng, h, w, 2)


_WALLS = ((200, 180, 150), (150, 150, 150), (150, 85, 65), (220, 210, 190), (95, 95, 105))


def _building(rng, h, w, obj, origin):
    img = _fill(h, w, _jitter(rng, _pick(rng, _WALLS), 15))
    img += (_smooth_noise(rng, h, w, 16)[..., None] - 0.5) * 25
    sx, sy = int(rng.integers(9, 18)), int(rng.integers(11, 20))
    wx, wy = int(sx * rng.uniform(0.45, 0.7)), int(sy * rng.uniform(0.45, 0.7))
    ox, oy = int(rng.integers(2, sx)), int(rng.integers(4, sy))
    rows = ((np.arange(h) - oy) % sy < wy) & (np.arange(h) >= oy)
    cols = (np.arange(w) - ox) % sx < wx
    windows = rows[:, None] & cols[None, :]
    glass = (
        _jitter(rng, (55, 70, 95), 15) + np.linspace(25, -10, h, dtype=np.float32)[:, None, None]
    )
    img = np.where(windows[..., None], glass + np.zeros_like(img), img)
    return img + _fine_noise(rng, h, w, 5)


def _road(rng, h, w, obj, origin):
    img = _fill(h, w, _jitter(rng, (rng.uniform(80, 120),) * 3, 6))
    img += (_smooth_noise(rng, h, w, 12)[..., None] - 0.5) * 18
    return img + _fine_noise(rng, h, w, 11)


def _sidewalk(rng, h, w, obj, origin):
    img = _fill(h, w, _jitter(rng, (rng.uniform(105, 145),) * 3 + np.array([8, 0, -6]), 8))
    period = int(rng.integers(6, 12))
    y = np.arange(h) + origin[1]
    x = np.arange(w) + origin[0]
    joints = ((y % period) == 0)[:, None] | ((x % period) == 0)[None, :]
    img -= 28.0 * joints[..., None]
    return img + _fine_noise(rng, h, w, 4)


def _vegetation(rng, h, w, obj, origin):
    img = _fill(h, w, _jitter(rng, (60, 115, 45), 18))
    leaves = 0.6 * _smooth_noise(rng, h, w, 3) + 0.4 * _smooth_noise(rng, h, w, 9)
    img *= (0.55 + 0.9 * leaves)[..., None]
    return img + _fine_noise(rng, h, w, 10)


def _terrain(rng, h, w, obj, origin):
    img = _fill(h, w, _jitter(rng, (125, 145, 75), 18))
    period = rng.uniform(3.0, 7.0)
    stripes = np.sin(2 * np.pi * (np.arange(h) + origin[1]) / period).astype(np.float32)
    img += 12.0 * stripes[:, None, None]
    return img + _fine_noise(rng, h, w, 6)


def _pole(rng, h, w, obj, origin):
    shade = np.cos(np.linspace(-1.3, 1.3, w, dtype=np.float32))[None, :, None]
    return (
        _jitter(rng, (rng.uniform(90, 160),) * 3, 8) * (0.6 + 0.5 * shade)
        + np.zeros((h, 1, 1), np.float32)
        + _fine_noise(rng, h, w, 3)
    )


_SIGNS = ((30, 70, 170), (200, 40, 40), (235, 200, 40), (240, 240, 240))


def _traffic_sign(rng, h, w, obj, origin):
    img = _fill(h, w, _jitter(rng, _pick(rng, _SIGNS), 15))
    b = max(1, min(h, w) // 5)
    img[b:-b, b:-b] = img[b:-b, b:-b] * 0.4 + 150
    return img + _fine_noise(rng, h, w, 3)


_CAR_PAINT = ((200, 30, 30), (30, 60, 160), (235, 235, 235), (30, 30, 35), (150, 150, 155),
              (110, 110, 115), (200, 180, 40), (40, 110, 60))  # fmt: skip


def _wheel_disc(h, w, origin, wheels, inner):
    """Boolean masks (tyre, hub) for the wheel circles given in image coordinates."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    tyre = np.zeros((h, w), bool)
    hub = np.zeros((h, w), bool)
    for cx, cy, r in wheels:
        d = np.hypot(xx - (cx - origin[0]), yy - (cy - origin[1]))
        tyre |= (d <= r) & (d > inner * r)
        hub |= d <= 0.3 * r
    return tyre, hub


def _car(rng, h, w, obj, origin):
    paint = _jitter(rng, _pick(rng, _CAR_PAINT), 12)
    img = _fill(h, w, paint) * np.linspace(1.15, 0.8, h, dtype=np.float32)[:, None, None]
    glass_rows = (np.arange(h) > 0.08 * h) & (np.arange(h) < 0.4 * h)
    glass_cols = (
        (np.arange(w) > 0.3 * w)
        & (np.arange(w) < 0.72 * w)
        & (np.abs(np.arange(w) - 0.52 * w) > 0.02 * w)
    )
    glass = glass_rows[:, None] & glass_cols[None, :]
    img[glass] = _jitter(rng, (45, 55, 70), 10)
    tyre, hub = _wheel_disc(h, w, origin, obj.attrs["wheels"], 0.0)
    img[tyre] = 25.0
    img[hub] = 140.0
    return img + _fine_noise(rng, h, w, 4)


def _two_wheeler(rng, h, w, obj, origin, body, inner, spokes):
    img = _fill(h, w, body) + (_smooth_noise(rng, h, w, 5)[..., None] - 0.5) * 40
    tyre, hub = _wheel_disc(h, w, origin, obj.attrs["wheels"], inner)
    if spokes:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        for cx, cy, r in obj.attrs["wheels"]:
            ang = np.arctan2(yy - (cy - origin[1]), xx - (cx - origin[0]))
            inside = np.hypot(xx - (cx - origin[0]), yy - (cy - origin[1])) < inner * r
            img[inside & (np.cos(8 * ang) > 0.85)] = 190.0
    img[tyre] = 20.0
    img[hub] = 160.0
    return img + _fine_noise(rng, h, w, 4)


def _bicycle(rng, h, w, obj, origin):
    return _two_wheeler(rng, h, w, obj, origin, _jitter(rng, (90, 80, 75), 20), 0.8, True)


def _motorcycle(rng, h, w, obj, origin):
    body = _jitter(rng, _pick(rng, ((180, 30, 30), (30, 30, 30), (40, 60, 170))), 15)
    return _two_wheeler(rng, h, w, obj, origin, body, 0.6, False)


_SKIN = ((230, 190, 160), (200, 150, 110), (150, 100, 70), (100, 70, 50))
_SHIRTS = ((200, 40, 40), (40, 90, 200), (230, 230, 230), (40, 40, 40), (220, 190, 40),
           (60, 150, 70), (150, 60, 150))  # fmt: skip
_TROUSERS = ((40, 50, 90), (30, 30, 30), (110, 90, 60), (120, 120, 120))


def _figure(rng, h, w, obj, origin):
    """Shared by person and rider: the appearance carries no hint of the class."""
    v = np.arange(h, dtype=np.float32)[:, None] / max(h - 1, 1)
    skin = _jitter(rng, _pick(rng, _SKIN), 10)
    shirt = _jitter(rng, _pick(rng, _SHIRTS), 20)
    trousers = _jitter(rng, _pick(rng, _TROUSERS), 12)
    if rng.random() < 0.5:  # striped shirt
        stripes = (np.arange(h) // int(rng.integers(2, 5))) % 2 == 0
        shirt_img = np.where(stripes[:, None, None], shirt, shirt * 0.6)
    else:
        shirt_img = np.broadcast_to(shirt, (h, 1, 3))
    img = np.where(
        (v < 0.19)[..., None], skin, np.where((v < 0.57)[..., None], shirt_img, trousers)
    )
    img = img + np.zeros((1, w, 1), np.float32)
    img *= (0.8 + 0.4 * _smooth_noise(rng, h, w, 4))[..., None]
    return img + _fine_noise(rng, h, w, 5)


def _ego_vehicle(rng, h, w, obj, origin):
    img = _fill(h, w, _jitter(rng, (35, 35, 40), 10))
    img += np.linspace(50, 0, h, dtype=np.float32)[:, None, None]
    return img + _fine_noise(rng, h, w, 3)


_PAINTERS = {
    "sky": _sky,
    "building": _building,
    "road": _road,
    "sidewalk": _sidewalk,
    "vegetation": _vegetation,
    "terrain": _terrain,
    "pole": _pole,
    "traffic_sign": _traffic_sign,
    "car": _car,
    "bicycle": _bicycle,
    "motorcycle": _motorcycle,
    "person": _figure,
    "rider": _figure,
    "ego_vehicle": _ego_vehicle,
}


def render_image(scene, index_map=None):
    """RGB uint8 image (H, W, 3) of ``scene``; ``index_map`` is ``rasterize(scene)`` if given.

    Each object's texture is computed over its polygon's full bounding box (so occlusion does
    not shift patterns) from its own ``style`` seed, then pasted where the object is visible.
    """
    if index_map is None:
        index_map = rasterize(scene)
    H, W = scene.height, scene.width
    img = np.zeros((H, W, 3), np.float32)
    for i, obj in enumerate(scene.objects):
        xs = [p[0] for p in obj.polygon]
        ys = [p[1] for p in obj.polygon]
        x0, y0, x1, y1 = min(xs), min(ys), max(xs), max(ys)
        visible = index_map[y0 : y1 + 1, x0 : x1 + 1] == i
        if not visible.any():
            continue
        rng = np.random.default_rng(obj.style)
        patch = _PAINTERS[obj.kind](rng, y1 - y0 + 1, x1 - x0 + 1, obj, (x0, y0))
        region = img[y0 : y1 + 1, x0 : x1 + 1]
        region[visible] = patch[visible]
    rng = np.random.default_rng(scene.style)
    # Global exposure and white balance, then mild optics blur and sensor noise.
    img = img * rng.uniform(0.85, 1.15) * rng.uniform(0.95, 1.05, size=3) + rng.uniform(-10, 10)
    img = cv2.GaussianBlur(img, (3, 3), 0.6)
    img += rng.normal(0.0, 2.0, size=img.shape).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)
