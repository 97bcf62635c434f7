"""A procedurally generated world: one drawn object on a textured background, with captions.

Scenes are parameters, not pixels.  Every pixel is a pure function of its scene's parameters
(noise comes from a hash of a per-scene seed, never from a global RNG), so any subset of scenes
re-renders byte for byte, and a counterfactual such as "the same object on another background"
changes exactly the pixels it should.  That exactness is what lets tasks measure how much a
model, or an explanation of it, depends on the object versus the background.

Two layouts are built from it: a Waterbirds-style one (object kind spuriously correlated with
land/water backgrounds) and an ImageNet-9 backgrounds-challenge-style one (nine classes, each
with a native background, and the challenge's eight test variants).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from fexbench.data.imageset import DataError, ImageSet

# Bump when rendering changes: cache keys include it, so old renders are never reused.
VERSION = 2

SHAPES = ("circle", "ring", "crescent", "square", "triangle", "cross", "star", "bar", "heart")

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (40, 200, 60),
    "blue": (40, 80, 235),
    "yellow": (245, 220, 30),
    "purple": (145, 50, 195),
    "orange": (250, 135, 20),
    "white": (248, 248, 248),
    "pink": (250, 130, 195),
}
COLOUR_NAMES = tuple(COLOURS)

BACKGROUNDS = ("ocean", "lake", "forest", "grass", "sand", "snow", "rock", "brick", "lava")
BACKGROUND_GROUP: dict[str, str | None] = {
    "ocean": "water", "lake": "water", "forest": "land", "grass": "land",
    "sand": None, "snow": None, "rock": None, "brick": None, "lava": None,
}

SIZES = ("small", "large")
SIZE_RANGE = (0.5, 0.85) # object diameter as a fraction of the image side
SIZE_THRESHOLD = sum(SIZE_RANGE) / 2
BORDER = 0.03  # gap between an object and the image edge, as a fraction of the side

# Surface forms for captions; other modules build a concept vocabulary from this.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "disk", "round shape", "dot"),
    "ring": ("ring", "donut", "hoop", "annulus"),
    "crescent": ("crescent", "crescent moon", "sickle shape"),
    "square": ("square", "box", "block"),
    "triangle": ("triangle", "triangular shape", "pyramid shape"),
    "cross": ("cross", "plus sign", "plus shape"),
    "star": ("star", "star shape", "five-pointed star"),
    "bar": ("bar", "stick", "rod", "strip"),
    "heart": ("heart", "heart shape", "love heart"),
    "ocean": ("the ocean", "the sea", "ocean waves", "open water"),
    "lake": ("a lake", "calm water", "a pond"),
    "forest": ("a forest", "the woods", "trees"),
    "grass": ("grass", "a meadow", "a lawn"),
    "sand": ("sand", "a beach", "desert dunes"),
    "snow": ("snow", "a snowfield", "fresh snow"),
    "rock": ("rocks", "gravel", "rocky ground"),
    "brick": ("a brick wall", "bricks", "brickwork"),
    "lava": ("lava", "molten lava", "magma"),
    **{colour: (colour,) for colour in COLOURS},
}

# Waterbirds layout: label 0 = angular objects, 1 = round ones; place 0 = land, 1 = water.
WATERBIRDS_CLASSES = ("angular", "round")
CLASS_SHAPES = ((SHAPES.index("square"), SHAPES.index("triangle"), SHAPES.index("cross")),
                (SHAPES.index("circle"), SHAPES.index("ring"), SHAPES.index("crescent")))
PLACES = ("land", "water")
_BACKGROUND_PLACE = np.array([PLACES.index(BACKGROUND_GROUP[b]) if BACKGROUND_GROUP[b] else -1
                              for b in BACKGROUNDS])
PLACE_BACKGROUNDS = tuple(tuple(BACKGROUNDS.index(b) for b in BACKGROUNDS if BACKGROUND_GROUP[b] == p)
                          for p in PLACES)

# ImageNet-9 layout: class c is SHAPES[c] and its native background is CLASS_BACKGROUND[c].
CLASS_BACKGROUND = tuple(BACKGROUNDS.index(b) for b in
                         ("lake", "snow", "rock", "brick", "sand", "grass", "ocean", "forest", "lava"))
VARIANTS = ("original", "only_bg_b", "only_bg_t", "no_fg", "only_fg",
            "mixed_same", "mixed_rand", "mixed_next")

# Independent random streams derived from one user seed.
_SCENE_STREAM, _CAPTION_STREAM, _VARIANT_STREAM, _SWAP_STREAM = range(4)


@dataclass(frozen=True, eq=False)
class Scenes:
    """Per-scene parameters; centres and size are fractions of the image side, angle in radians."""

    shape: np.ndarray
    colour: np.ndarray
    size: np.ndarray
    cx: np.ndarray
    cy: np.ndarray
    angle: np.ndarray
    background: np.ndarray
    bg_seed: np.ndarray
    obj_seed: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.shape)
        for f in dataclasses.fields(self):
            if len(getattr(self, f.name)) != n:
                raise DataError(f"Scenes: field {f.name!r} has {len(getattr(self, f.name))} rows, expected {n}")
        if n and not (0 <= self.background.min() and self.background.max() < len(BACKGROUNDS)):
            raise DataError(f"Scenes: background codes outside 0..{len(BACKGROUNDS) - 1}")

    def __len__(self) -> int:
        return len(self.shape)

    def subset(self, index: np.ndarray | slice) -> "Scenes":
        return Scenes(**{f.name: getattr(self, f.name)[index] for f in dataclasses.fields(self)})

    def with_background(self, background: np.ndarray, bg_seed: np.ndarray | None = None) -> "Scenes":
        """The same objects on other backgrounds (keeping bg_seed unless one is given)."""
        background = np.broadcast_to(np.asarray(background, dtype=np.int64), self.shape.shape).copy()
        bg_seed = self.bg_seed if bg_seed is None else np.asarray(bg_seed, dtype=np.int64)
        return dataclasses.replace(self, background=background, bg_seed=bg_seed)

    @property
    def size_class(self) -> np.ndarray:
        """Codes into SIZES: the continuous size thresholded at SIZE_THRESHOLD."""
        return (self.size >= SIZE_THRESHOLD).astype(np.int64)


# ---------------------------------------------------------------- hashing: per-scene noise

def _mix(x: np.ndarray) -> np.ndarray:
    """lowbias32, a bijective 32-bit integer hash (C. Wellons): nearby inputs, unrelated outputs."""
    x = x ^ (x >> np.uint32(16))
    x *= np.uint32(0x7FEB352D)
    x ^= x >> np.uint32(15)
    x *= np.uint32(0x846CA68B)
    x ^= x >> np.uint32(16)
    return x


def _unit(h: np.ndarray) -> np.ndarray:
    """uint32 hash -> float32 uniform in [0, 1)."""
    return (h >> np.uint32(8)).astype(np.float32) * np.float32(2.0 ** -24)


def _keys(seeds: np.ndarray, salt: int) -> np.ndarray:
    """Fold int64 seeds into 32-bit keys, one independent stream per salt."""
    s = np.asarray(seeds, dtype=np.int64).view(np.uint64)
    lo = (s & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    hi = (s >> np.uint64(32)).astype(np.uint32)
    return _mix(lo ^ _mix(hi ^ np.uint32((salt * 0x9E3779B9 + 1) & 0xFFFFFFFF)))


def _scene_uniform(keys: np.ndarray, salt: int) -> np.ndarray:
    """One uniform per scene, shaped (n, 1, 1) to broadcast over pixels."""
    return _unit(_mix(keys ^ np.uint32((salt * 0x85EBCA6B + 7) & 0xFFFFFFFF)))[:, None, None]


def _stream(keys: np.ndarray, salt: int) -> np.ndarray:
    """Per-scene keys for one field of per-pixel (or per-lattice-point) hashes."""
    return _mix(keys ^ np.uint32((salt * 0xC2B2AE35 + 3) & 0xFFFFFFFF))


def _hash_uniform(stream: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Uniforms in [0, 1) for (stream key, point index) pairs, broadcast together."""
    return _unit(_mix(_mix(index.astype(np.uint32)) ^ stream))


def _lattice_uniform(keys: np.ndarray, salt: int, rows: int, cols: int) -> np.ndarray:
    """(n, rows, cols) uniforms, one per lattice point (or pixel) per scene."""
    index = np.arange(rows * cols, dtype=np.uint32).reshape(1, rows, cols)
    return _hash_uniform(_stream(keys, salt)[:, None, None], index)


def _value_noise(keys: np.ndarray, salt: int, size: int, cells_y: int, cells_x: int) -> np.ndarray:
    """Smooth noise in [0, 1): a random lattice over the image, smoothstep-interpolated.

    The lattice is in image units, so a texture looks the same at every resolution.
    """
    lattice = _lattice_uniform(keys, salt, cells_y + 1, cells_x + 1)
    gy = (np.arange(size, dtype=np.float32) + 0.5) / size * cells_y
    gx = (np.arange(size, dtype=np.float32) + 0.5) / size * cells_x
    iy = np.minimum(gy.astype(np.int64), cells_y - 1)
    ix = np.minimum(gx.astype(np.int64), cells_x - 1)
    ty, tx = gy - iy.astype(np.float32), gx - ix.astype(np.float32)
    ty = (ty * ty * (3 - 2 * ty))[None, :, None]
    tx = (tx * tx * (3 - 2 * tx))[None, None, :]
    iy, ix = iy[:, None], ix[None, :]
    top = lattice[:, iy, ix] * (1 - tx) + lattice[:, iy, ix + 1] * tx
    bottom = lattice[:, iy + 1, ix] * (1 - tx) + lattice[:, iy + 1, ix + 1] * tx
    return top * (1 - ty) + bottom * ty


def _grain(keys: np.ndarray, salt: int, size: int, amplitude: float) -> np.ndarray:
    """Per-pixel luminance noise in [-amplitude, amplitude), shaped (n, H, W, 1)."""
    return ((_lattice_uniform(keys, salt, size, size) - 0.5) * (2 * amplitude))[..., None]


# ---------------------------------------------------------------- background textures

def _rgb(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


def _paint(base: np.ndarray, *layers: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """base colour + sum of (scalar field (n,H,W) x colour offset)."""
    out = base + layers[0][0][..., None] * layers[0][1]
    for field, colour in layers[1:]:
        out += field[..., None] * colour
    return out


def _ocean(k, x, y, size):
    """Deep blue, tilted travelling waves with foam on the crests."""
    tilt = (_scene_uniform(k, 1) - 0.5) * 0.6
    wobble = 0.05 * np.sin(2 * np.pi * ((2 + 2 * _scene_uniform(k, 2)) * x + _scene_uniform(k, 3)))
    t = y * np.cos(tilt) + x * np.sin(tilt) + wobble
    wave = np.sin(2 * np.pi * ((4 + 3 * _scene_uniform(k, 4)) * t + _scene_uniform(k, 5)))
    foam = np.clip((wave - 0.75) * 4, 0, 1)
    return _paint(_rgb(25, 70, 150), (wave, _rgb(12, 22, 30)), (foam, _rgb(90, 90, 70)))


def _lake(k, x, y, size):
    """Calm teal water: faint concentric ripples and a sky reflection towards the top."""
    cx, cy = _scene_uniform(k, 1), _scene_uniform(k, 2)
    distance = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
    ripple = np.sin(2 * np.pi * ((5 + 4 * _scene_uniform(k, 3)) * distance + _scene_uniform(k, 4)))
    sky = (1 - y) * (0.5 + _scene_uniform(k, 5))
    return _paint(_rgb(70, 145, 160), (ripple, _rgb(10, 14, 14)), (sky, _rgb(25, 30, 30)))


def _forest(k, x, y, size):
    """Dark green foliage behind vertical brown trunks."""
    sway = 0.02 * np.sin(2 * np.pi * (3 * y + _scene_uniform(k, 1)))
    stripes = np.sin(2 * np.pi * ((3 + 2.5 * _scene_uniform(k, 2)) * (x + sway) + _scene_uniform(k, 3)))
    trunk = np.clip((stripes - 0.45) * 6, 0, 1)
    leaves = _value_noise(k, 4, size, 7, 7) - 0.5
    out = _paint(_rgb(35, 90, 40), (leaves, _rgb(30, 70, 25)))
    return out + trunk[..., None] * (_rgb(95, 62, 38) - out)


def _grass(k, x, y, size):
    """Bright green with thin vertical blades and darker patches."""
    blades = _value_noise(k, 1, size, 3, 16) - 0.5
    patches = _value_noise(k, 2, size, 3, 3) - 0.5
    return _paint(_rgb(110, 175, 55), (blades, _rgb(70, 90, 30)), (patches, _rgb(40, 45, 20)))


def _sand(k, x, y, size):
    """Tan dunes: wide wavy light/shadow bands."""
    t = y + 0.08 * np.sin(2 * np.pi * ((1 + _scene_uniform(k, 1)) * x + _scene_uniform(k, 2)))
    dune = np.sin(2 * np.pi * ((2 + 1.5 * _scene_uniform(k, 3)) * t + _scene_uniform(k, 4)))
    return _paint(_rgb(210, 182, 125), (dune, _rgb(25, 22, 15)))


def _snow(k, x, y, size):
    """Pale blue-white with soft shadows and a few grey speckles."""
    shadow = _value_noise(k, 1, size, 3, 3)
    speckle = (_lattice_uniform(k, 2, size, size) > 0.95).astype(np.float32)
    return _paint(_rgb(212, 222, 242), (shadow, _rgb(-35, -25, -5)), (speckle, _rgb(-50, -45, -35)))


def _rock(k, x, y, size):
    """Grey blotchy stone with dark cracks along a noise contour."""
    blotch = 0.6 * _value_noise(k, 1, size, 5, 5) + 0.4 * _value_noise(k, 2, size, 11, 11) - 0.5
    crack = (np.abs(_value_noise(k, 3, size, 4, 4) - 0.5) < 0.04).astype(np.float32)
    return _paint(_rgb(128, 122, 115), (blotch, _rgb(90, 90, 85)), (crack, _rgb(-60, -60, -55)))


def _brick(k, x, y, size):
    """Running-bond red bricks with light mortar; each brick's shade varies."""
    rows = 4 + 3 * _scene_uniform(k, 1)
    row_position = y * rows + _scene_uniform(k, 2) + 1
    row = np.floor(row_position)
    col_position = x * rows / 2 + 0.5 * (row % 2) + _scene_uniform(k, 3) + 1
    col = np.floor(col_position)
    mortar = ((row_position - row) < 0.16) | ((col_position - col) < 0.08)
    shade = _hash_uniform(_stream(k, 4)[:, None, None], row * 64 + col) - 0.5
    bricks = _paint(_rgb(165, 68, 45), (shade, _rgb(50, 25, 15)))
    return np.where(mortar[..., None], _rgb(195, 190, 180), bricks)


def _lava(k, x, y, size):
    """Black-red crust split by glowing orange veins."""
    ridge = 1 - np.abs(2 * _value_noise(k, 1, size, 4, 4) - 1)
    glow = ridge ** 5
    crust = _value_noise(k, 2, size, 9, 9) - 0.5
    out = _paint(_rgb(55, 18, 12), (crust, _rgb(30, 12, 8)))
    return out + glow[..., None] * (_rgb(255, 150, 30) - out)


_TEXTURES: tuple[Callable, ...] = (_ocean, _lake, _forest, _grass, _sand, _snow, _rock, _brick, _lava)
_GRAIN = (8, 6, 10, 10, 8, 5, 10, 8, 8)


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Round float pixels (in place) to uint8."""
    pixels += 0.5
    return np.clip(pixels, 0, 255, out=pixels).astype(np.uint8)


def _pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in image units: x (1, 1, W), y (1, H, 1)."""
    if size < 1:
        raise DataError(f"image_size must be positive, got {size}")
    c = (np.arange(size, dtype=np.float32) + 0.5) / size
    return c[None, None, :], c[None, :, None]


def _background(background: np.ndarray, bg_seed: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W, 3) uint8 background pixels, from (background, bg_seed, size) alone."""
    out = np.empty((len(background), size, size, 3), dtype=np.uint8)
    x, y = _pixel_grid(size)
    for b, texture in enumerate(_TEXTURES):
        index = np.flatnonzero(background == b)
        if len(index):
            k = _keys(bg_seed[index], salt=b)
            out[index] = _to_uint8(texture(k, x, y, size) + _grain(k, 0, size, _GRAIN[b]))
    return out


# ---------------------------------------------------------------- objects

def _star(u, v):
    """Five-pointed star: fold the angle onto one edge, from an inner vertex to a tip."""
    inner, half = 0.42, np.pi / 5
    rho = np.sqrt(u * u + v * v)
    b = np.abs(np.mod(np.arctan2(u, -v), 2 * half) - half)  # 0 towards an inner vertex, half at a tip
    px, py = rho * np.cos(b), rho * np.sin(b)
    tip_x, tip_y = np.cos(half), np.sin(half)
    return (tip_x - inner) * py - tip_y * (px - inner) >= 0


def _heart(u, v):
    """Two round lobes with a deep notch between them over a sharp point along +v.

    (VERSION 1 drew the sextic heart curve: too round at 32x32, where a CNN took it for a circle.)
    """
    lobes = ((u - 0.4) ** 2 + (v + 0.32) ** 2 <= 0.42 ** 2) | ((u + 0.4) ** 2 + (v + 0.32) ** 2 <= 0.42 ** 2)
    point = (v >= -0.2) & (np.abs(u) <= 0.8 * (0.92 - v) / 1.12)      # apex (0, 0.92), base half-width 0.8
    return lobes | point


def _triangle(u, v):
    """Equilateral, pointing along -v, inscribed in the unit circle."""
    r = 0.5
    s, c = np.float32(np.sqrt(3) / 2), np.float32(0.5)
    return (v <= r) & (-s * u - c * v <= r) & (s * u - c * v <= r)


# Inside-tests in object coordinates (u, v): each object lies within the unit disk.
_INSIDE: tuple[Callable[[np.ndarray, np.ndarray], np.ndarray], ...] = (
    lambda u, v: u * u + v * v <= 0.85 ** 2,                                    # circle
    lambda u, v: (u * u + v * v <= 0.95 ** 2) & (u * u + v * v >= 0.5 ** 2),    # ring
    lambda u, v: (u * u + v * v <= 0.95 ** 2) & ((u - 0.45) ** 2 + v * v >= 0.8 ** 2),  # crescent
    lambda u, v: np.maximum(np.abs(u), np.abs(v)) <= 0.7,                       # square
    _triangle,
    lambda u, v: ((np.abs(u) <= 0.28) | (np.abs(v) <= 0.28)) & (np.maximum(np.abs(u), np.abs(v)) <= 0.95),  # cross
    _star,
    lambda u, v: (np.abs(u) <= 0.95) & (np.abs(v) <= 0.27),                     # bar
    _heart,
)
_COLOUR_RGB = np.array(list(COLOURS.values()), dtype=np.float32)


def _object(scenes: Scenes, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The (N, H, W) object mask and the (mask.sum(), 3) uint8 object pixels, from object params alone."""
    x, y = _pixel_grid(size)
    radius = (scenes.size.astype(np.float32) / 2)[:, None, None]
    cos = np.cos(scenes.angle).astype(np.float32)[:, None, None]
    sin = np.sin(scenes.angle).astype(np.float32)[:, None, None]
    dx = x - scenes.cx.astype(np.float32)[:, None, None]
    dy = y - scenes.cy.astype(np.float32)[:, None, None]
    u = (dx * cos + dy * sin) / radius
    v = (dy * cos - dx * sin) / radius

    mask = np.zeros((len(scenes), size, size), dtype=bool)
    for s, inside in enumerate(_INSIDE):
        index = np.flatnonzero(scenes.shape == s)
        if len(index):
            mask[index] = inside(u[index], v[index])

    # Only object pixels are coloured: a per-object light direction gives a gentle gradient
    # that rotates with the object, plus per-pixel grain hashed from (obj_seed, pixel).
    scene, pixel = np.nonzero(mask.reshape(len(scenes), -1))
    k = _keys(scenes.obj_seed, salt=100)
    light = 2 * np.pi * _scene_uniform(k, 1)[:, 0, 0]
    shade = 1 + 0.15 * np.clip(u[mask] * np.cos(light[scene]) + v[mask] * np.sin(light[scene]), -1, 1)
    grain = (_hash_uniform(_stream(k, 2)[scene], pixel) - 0.5) * 16
    return mask, _to_uint8(_COLOUR_RGB[scenes.colour[scene]] * shade[:, None] + grain[:, None])


def _bounding_boxes(mask: np.ndarray) -> np.ndarray:
    """(N, H, W) bool: each mask's bounding box filled (empty where the mask is empty)."""
    size = mask.shape[1]
    rows, cols = mask.any(axis=2), mask.any(axis=1)
    top, bottom = np.argmax(rows, axis=1), size - 1 - np.argmax(rows[:, ::-1], axis=1)
    left, right = np.argmax(cols, axis=1), size - 1 - np.argmax(cols[:, ::-1], axis=1)
    r = np.arange(size)
    in_rows = (r >= top[:, None]) & (r <= bottom[:, None]) & rows.any(axis=1)[:, None]
    in_cols = (r >= left[:, None]) & (r <= right[:, None])
    return in_rows[:, :, None] & in_cols[:, None, :]


_BATCH_PIXELS = 1 << 20  # rendering in batches keeps temporaries small: ~1.5-2x faster than all at once


def _draw(scenes: Scenes, size: int, variant: str) -> tuple[np.ndarray, np.ndarray]:
    """Images and masks of the variants that keep the scene's own background (or none)."""
    mask, obj = _object(scenes, size)
    if variant == "only_fg":
        images = np.zeros((len(scenes), size, size, 3), dtype=np.uint8)
        images[mask] = obj
        return images, mask
    images = _background(scenes.background, scenes.bg_seed, size)
    if variant == "original":
        images[mask] = obj
    elif variant == "only_bg_b":
        images[_bounding_boxes(mask)] = 0
    elif variant == "no_fg":
        images[mask] = 0
    return images, mask  # only_bg_t: the background as if the object were absent


def _draw_in_batches(scenes: Scenes, size: int, variant: str) -> tuple[np.ndarray, np.ndarray]:
    step = max(1, _BATCH_PIXELS // (size * size))
    parts = [_draw(scenes.subset(slice(start, start + step)), size, variant)
             for start in range(0, max(len(scenes), 1), step)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def render(scenes: Scenes, image_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, H, W, 3) uint8 and object masks (N, H, W) bool."""
    return _draw_in_batches(scenes, image_size, "original")


def render_variant(scenes: Scenes, variant: str, seed: int, image_size: int = 32,
                   class_background: tuple[int, ...] = CLASS_BACKGROUND,
                   ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One of the backgrounds-challenge (ImageNet-9) variants, in the ImageNet-9 layout.

    A scene's class is its shape; class_background[c] is class c's native background.
    Provenance, per image: 'background' (type shown, -1 for none), 'bg_seed' (its texture seed)
    and 'bg_source_class' (the class it was taken from, -1 for none) -- unlike the real
    challenge, mixed_rand records its source.
    """
    if variant not in VARIANTS:
        raise DataError(f"unknown variant {variant!r}; variants are {VARIANTS}")
    n = len(scenes)
    classes = scenes.shape.astype(np.int64)
    natives = np.asarray(class_background, dtype=np.int64)
    if variant.startswith("mixed"):
        rng = np.random.default_rng([seed, _VARIANT_STREAM])
        if variant == "mixed_same":
            source = classes
        elif variant == "mixed_next":
            source = (classes + 1) % len(natives)
        else:
            source = rng.integers(0, len(natives), n)
        shown = scenes.with_background(natives[source], rng.integers(0, np.iinfo(np.int64).max, n))
        return render(shown, image_size)[0], {
            "background": shown.background, "bg_seed": shown.bg_seed, "bg_source_class": source}

    images, _ = _draw_in_batches(scenes, image_size, variant)
    if variant == "only_fg":
        none = np.full(n, -1, dtype=np.int64)
        return images, {"background": none, "bg_seed": none, "bg_source_class": none}
    return images, {"background": scenes.background.copy(), "bg_seed": scenes.bg_seed.copy(),
                    "bg_source_class": classes}


# ---------------------------------------------------------------- captions

_TEMPLATES = (
    "{obj} on {bg}",
    "a photo of {obj} in front of {bg}",
    "there is {obj} over {bg}",
    "{obj} against {bg}",
    "an image of {obj} with {bg} behind it",
    "a picture of {obj} and {bg}",
    "a drawing of {obj} on {bg}",
    "{obj} floating above {bg}",
)


def captions(scenes: Scenes, seed: int) -> tuple[str, ...]:
    """One caption per scene naming colour, shape and background through varied synonyms."""
    rng = np.random.default_rng([seed, _CAPTION_STREAM])
    n = len(scenes)
    template, shape_form, bg_form, say_size = rng.random((4, n))
    size_class = scenes.size_class
    out = []
    for i in range(n):
        shapes = SYNONYMS[SHAPES[scenes.shape[i]]]
        places = SYNONYMS[BACKGROUNDS[scenes.background[i]]]
        words = [COLOUR_NAMES[scenes.colour[i]], shapes[int(shape_form[i] * len(shapes))]]
        if say_size[i] < 0.5:
            words.insert(0, SIZES[size_class[i]])
        obj = " ".join(words)
        obj = ("an " if obj[0] in "aeiou" else "a ") + obj
        out.append(_TEMPLATES[int(template[i] * len(_TEMPLATES))].format(
            obj=obj, bg=places[int(bg_form[i] * len(places))]))
    return tuple(out)


# ---------------------------------------------------------------- layouts

def _random_scenes(rng: np.random.Generator, shape: np.ndarray, background: np.ndarray) -> Scenes:
    """Scenes with the given shapes and backgrounds; everything else drawn from rng."""
    n = len(shape)
    size = rng.uniform(*SIZE_RANGE, n)
    return Scenes(
        shape=np.asarray(shape, dtype=np.int64),
        colour=rng.integers(0, len(COLOURS), n),
        size=size,
        cx=rng.uniform(size / 2 + BORDER, 1 - size / 2 - BORDER),
        cy=rng.uniform(size / 2 + BORDER, 1 - size / 2 - BORDER),
        angle=rng.uniform(0, 2 * np.pi, n),
        background=np.asarray(background, dtype=np.int64),
        bg_seed=rng.integers(0, np.iinfo(np.int64).max, n),
        obj_seed=rng.integers(0, np.iinfo(np.int64).max, n),
    )


def waterbirds_scenes(n: int, rho: float, seed: int, balanced: bool = False,
                      ) -> tuple[Scenes, np.ndarray, np.ndarray]:
    """Scenes, labels and places where place == label with probability rho.

    Labels are balanced in expectation; balanced=True gives exactly n/4 scenes per (y, place).
    """
    if not 0 <= rho <= 1:
        raise DataError(f"rho must be in [0, 1], got {rho}")
    rng = np.random.default_rng([seed, _SCENE_STREAM])
    if balanced:
        if n % 4:
            raise DataError(f"balanced waterbirds needs n divisible by 4, got {n}")
        group = rng.permutation(np.repeat(np.arange(4), n // 4))
        labels, place = group // 2, group % 2
    else:
        labels = rng.integers(0, 2, n)
        place = np.where(rng.random(n) < rho, labels, 1 - labels)
    shape = np.asarray(CLASS_SHAPES)[labels, rng.integers(0, 3, n)]
    background = np.asarray(PLACE_BACKGROUNDS)[place, rng.integers(0, 2, n)]
    return _random_scenes(rng, shape, background), labels.astype(np.int64), place.astype(np.int64)


def swap_place(scenes: Scenes, place: np.ndarray, seed: int) -> Scenes:
    """The same scenes, each on a background of the other place (land <-> water)."""
    place = np.asarray(place, dtype=np.int64)
    if np.any(_BACKGROUND_PLACE[scenes.background] != place):
        raise DataError("swap_place: place does not match the scenes' background groups")
    rng = np.random.default_rng([seed, _SWAP_STREAM])
    return scenes.with_background(np.asarray(PLACE_BACKGROUNDS)[1 - place, rng.integers(0, 2, len(scenes))])


def _scene_metadata(scenes: Scenes) -> tuple[dict[str, np.ndarray], dict[str, tuple[str, ...]]]:
    metadata = {"background": scenes.background, "shape": scenes.shape,
                "colour": scenes.colour, "size": scenes.size_class}
    values = {"background": BACKGROUNDS, "shape": SHAPES, "colour": COLOUR_NAMES, "size": SIZES}
    return metadata, values


def scenes_to_imageset(scenes: Scenes, labels: np.ndarray, class_names: tuple[str, ...], name: str,
                       image_size: int, seed: int,
                       extra_metadata: Mapping[str, tuple[np.ndarray, tuple[str, ...]]] | None = None,
                       provenance: Mapping[str, str] | None = None) -> ImageSet:
    """Render scenes into an ImageSet with scene metadata and captions (seeded by seed)."""
    metadata, values = _scene_metadata(scenes)
    for key, (codes, names) in (extra_metadata or {}).items():
        metadata[key], values[key] = np.asarray(codes, dtype=np.int64), names
    return ImageSet(
        name=name,
        images=render(scenes, image_size)[0],
        labels=np.asarray(labels, dtype=np.int64),
        class_names=class_names,
        metadata=metadata,
        metadata_values=values,
        ids=tuple(f"{name}-{i:06d}" for i in range(len(scenes))),
        captions=captions(scenes, seed),
        provenance=dict(provenance or {}),
    )


def waterbirds_set(n: int, rho: float, seed: int, image_size: int = 32, balanced: bool = False,
                   name: str = "waterbirds-world") -> ImageSet:
    """Waterbirds-style split: angular vs round objects, spuriously tied to land vs water."""
    scenes, labels, place = waterbirds_scenes(n, rho, seed, balanced)
    return scenes_to_imageset(
        scenes, labels, WATERBIRDS_CLASSES, name, image_size, seed,
        extra_metadata={"place": (place, PLACES)},
        provenance={"world": "waterbirds-style", "rho": str(rho), "seed": str(seed)})


def imagenet9_scenes(n: int, seed: int, p_native: float = 1.0) -> tuple[Scenes, np.ndarray]:
    """Nine classes (the shapes); each on its native background with probability p_native."""
    if not 0 <= p_native <= 1:
        raise DataError(f"p_native must be in [0, 1], got {p_native}")
    rng = np.random.default_rng([seed, _SCENE_STREAM])
    labels = rng.integers(0, len(SHAPES), n)
    native = rng.random(n) < p_native
    background = np.where(native, np.asarray(CLASS_BACKGROUND)[labels], rng.integers(0, len(BACKGROUNDS), n))
    return _random_scenes(rng, labels, background), labels.astype(np.int64)


def imagenet9_set(n: int, seed: int, variant: str = "original", p_native: float = 1.0,
                  image_size: int = 32, name: str | None = None) -> ImageSet:
    """ImageNet-9-style split in one challenge variant.

    Metadata 'background' is the background shown (for only_fg, the scene's removed one);
    mixed variants add 'bg_source_class'.  Captions describe what is shown, so the variants
    that blank the object or background have none.
    """
    scenes, labels = imagenet9_scenes(n, seed, p_native)
    images, shown = render_variant(scenes, variant, seed, image_size)
    name = name or f"imagenet9-world-{variant}"
    metadata, values = _scene_metadata(scenes)
    text = None
    if variant == "original":
        text = captions(scenes, seed)
    elif variant.startswith("mixed"):
        mixed = scenes.with_background(shown["background"], shown["bg_seed"])
        metadata["background"] = mixed.background
        metadata["bg_source_class"], values["bg_source_class"] = shown["bg_source_class"], SHAPES
        text = captions(mixed, seed)
    return ImageSet(
        name=name, images=images, labels=labels, class_names=SHAPES,
        metadata=metadata, metadata_values=values,
        ids=tuple(f"{name}-{i:06d}" for i in range(n)), captions=text,
        provenance={"world": "imagenet9-style", "variant": variant,
                    "p_native": str(p_native), "seed": str(seed)})


# ---------------------------------------------------------------- interventions

# Where `intervene(..., "position", value)` puts an object's centre: fractions (x, y) of the range
# the centre may take for the object's size (so the object stays inside the image, BORDER kept).
POSITIONS = ("top-left", "top-right", "bottom-left", "bottom-right")
_POSITION_FRACTIONS = {"top-left": (0.1, 0.1), "top-right": (0.9, 0.1),
                       "bottom-left": (0.1, 0.9), "bottom-right": (0.9, 0.9)}
INTERVENABLE: dict[str, tuple[str, ...]] = {"shape": SHAPES, "colour": COLOUR_NAMES, "size": SIZES,
                                            "background": BACKGROUNDS, "position": POSITIONS}


def _centre_range(size: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return size / 2 + BORDER, 1 - size / 2 - BORDER


def intervene(scenes: Scenes, attribute: str, value: str) -> Scenes:
    """The same scenes with one attribute set to `value` (a name) and every other parameter kept.

    That is what a causal effect on a model is measured by: the pixels change only as far as the
    attribute does. shape, colour and background keep everything else, the texture seeds included.
    size: a scene already of that size class is unchanged; another moves by half the size range
    into the other class (keeping its rank within its class), and its centre is clipped into the
    range that keeps the larger object inside the image (the only side effect, and only when needed).
    position: the centre goes to one of POSITIONS within the range the object's size allows.
    """
    if attribute not in INTERVENABLE:
        raise DataError(f"intervene: attribute {attribute!r} is not one of {tuple(INTERVENABLE)}")
    names = INTERVENABLE[attribute]
    if value not in names:
        raise DataError(f"intervene: {attribute} value {value!r} is not one of {names}")
    n = len(scenes)
    if attribute in ("shape", "colour", "background"):
        return dataclasses.replace(scenes, **{attribute: np.full(n, names.index(value), dtype=np.int64)})
    if attribute == "size":
        half = (SIZE_RANGE[1] - SIZE_RANGE[0]) / 2
        if value == "large":
            size = np.where(scenes.size_class == 1, scenes.size, scenes.size + half)
        else:
            size = np.where(scenes.size_class == 0, scenes.size,
                            np.minimum(scenes.size - half, np.nextafter(SIZE_THRESHOLD, 0.0)))
        lo, hi = _centre_range(size)
        return dataclasses.replace(scenes, size=size, cx=np.clip(scenes.cx, lo, hi), cy=np.clip(scenes.cy, lo, hi))
    fx, fy = _POSITION_FRACTIONS[value]
    lo, hi = _centre_range(scenes.size)
    return dataclasses.replace(scenes, cx=lo + fx * (hi - lo), cy=lo + fy * (hi - lo))
