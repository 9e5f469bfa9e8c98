"""Pathfinder (Linsley et al. 2018; the Long Range Arena version, Tay et al. 2021): are the
two circular markers joined by one dashed curved contour? Two classes, one image read
pixel by pixel.

What is generated (a re-implementation of the task's definition, in the spirit of the
``snakes2`` generator, github.com/drewlinsley/pathfinder, with LRA's parameters; the
drawing is ours, so the images are of the same kind, not the same images):

* Contours ("snakes") are chains of *paddles*: line segments of ``paddle_length`` pixels
  and stroke ``thickness``, separated by gaps of ``paddle_gap`` pixels (the dashes): paddle
  ``j + 1`` starts ``paddle_gap`` beyond the end of paddle ``j``, along its own direction.
  Directions lie on a grid of 48 angles (7.5 degrees). The turn ``delta`` from one paddle
  to the next is drawn among the turns where the next paddle obeys the rules below, with
  weight ``cos(min(|delta| * continuity, pi / 2)) ** 2`` (snakes2's continuity rule: a
  larger ``continuity`` makes straighter contours; 1.0 allows turns up to 90 degrees). At
  a dead end the last paddle is withdrawn and redrawn among its other turns (at most
  ``contour_length`` withdrawals per contour), else the contour is abandoned.
* Every image holds two target contours A and B of ``contour_length`` paddles each; B
  starts ``seed_distance`` pixels from A's start, in a random direction, at a place where
  its first paddle fits. Then two markers, discs of ``marker_radius`` centred on contour
  tips: one target contour (A or B, at random) gets a marker on its first tip; the
  second marker goes on the far tip of the same contour for label 1 (connected) or on the
  far tip of the other target contour for label 0. As in snakes2, both classes show the
  same ink: two long contours, two markers. Labels are drawn with p = 1/2 each.
* Then ``num_distractors`` distractor contours of ``distractor_length`` paddles, each
  tried from up to 3 random starts (among 32 random points, where its first paddle fits)
  and dropped if it cannot be completed, so crowded images hold fewer (about 3 of 5 on
  average at 32x32, 4.5 of 5 at 64x64).

Rules that make the label a property of the pixels, checked on the raster for every
paddle and marker drawn (``link_distance = ceil(paddle_gap) + 1``, distances in the
max-norm, i.e. Chebyshev):
* ink of different objects is more than ``link_distance`` apart. The objects are the
  contours, each with a disc of the marker's size claimed at both of its tips when it is
  a target contour (so markers, wherever they go, keep clear of other contours, and the
  two markers keep clear of each other in both classes); the outside of the image is an
  object too;
* each paddle has ink within ``link_distance`` of its predecessor's ink, and each marker
  of its contour's, so the dashes of one contour stay linked;
* a paddle keeps ``link_distance`` clear of its own contour except its last 3 paddles (no
  coils, no touching itself).
Consequence (tested): with ``ink = image > -1`` and ink pixels linked when their max-norm
distance is at most ``link_distance`` (the same as dilating the ink by a
``link_distance``-sided square and taking 8-connected components), the two marker centres
lie in one component if and only if the label is 1. An image whose target contours
cannot be completed is redrawn whole, with the same label.

Rendering: pixel ``(i, j)`` has its centre at ``(i, j)``; positions live on a quarter-pixel
grid. A paddle at distance ``d`` from a pixel centre gives the pixel intensity
``clip((w - d) / min(w, 1), 0, 1)`` with ``w = thickness / 2 + 0.5`` (a stroke
anti-aliased over one pixel), a marker the same with ``w = marker_radius + 0.5``;
intensities below 1/255 are dropped, overlaps combine by max, the background is 0.
Images are mapped to ``[-1, 1]`` by ``2 v - 1`` (the background is exactly -1) and
flattened row-major into a ``(image_size**2, 1)`` feature sequence. :func:`render` also returns which contour and
which marker inked each pixel, for inspection and tests.

Parameters left ``None`` take the preset of the nearer LRA resolution (32 for
``image_size <= 48``, else 64). 32x32, LRA's Pathfinder32 "hard": contour length 14,
distractor length 14 // 3 = 4, 20 // 4 = 5 distractors, paddle length 2, gap (snakes2's
margin) 1, thickness 0.5, marker radius 1.5, seed distance 7, continuity 1.0. 64x64, LRA's
Pathfinder64: paddle length 5 (snakes2's default: LRA's overrides leave it), gap 1,
thickness 1, marker radius 2.5, seed distance 12, continuity 1.8, contour length 14,
distractor length 4, 22 // 4 = 5 distractors. Our clearance rule is stricter than
snakes2's (which keeps paddles about one margin apart and lets markers fall anywhere),
hence the dropped distractors.

Scoring: one label per image (``loss_on='pooled'``), 2 classes, ``readout='mean'``
(non-causal; ``'last'`` is allowed, for causal models). The three splits are drawn
independently (LRA: a random 80/10/10 split of one generated set).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from models import IOSpec

from .base import SPLITS, Split, Task, TaskSpec

ANGLES = 48  # direction grid
SUB = 4  # positions on a 1/SUB pixel grid
BACKTRACK = 1  # withdrawals allowed per paddle of a contour
STARTS = 3  # start points tried per contour
SELF_LINK = 3  # a paddle may come close to its contour's last SELF_LINK paddles only
BORDER = 1  # id of the pixels outside the image; object ids start at 2
MIN_INK = 1 / 255  # fainter anti-aliasing is dropped (so every ink pixel is > -1 in float32)

PRESETS = {
    32: dict(contour_length=14, paddle_length=2.0, paddle_gap=1.0, thickness=0.5, marker_radius=1.5,
             seed_distance=7.0, continuity=1.0, distractor_budget=20),
    64: dict(contour_length=14, paddle_length=5.0, paddle_gap=1.0, thickness=1.0, marker_radius=2.5,
             seed_distance=12.0, continuity=1.8, distractor_budget=22),
}


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"task.{name}={value!r} is not valid; expected an integer >= {low} and <= {high}")


def _check_number(name: str, value: object, low: float, high: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"task.{name}={value!r} is not valid; expected a number >= {low} and <= {high}")


@dataclass(frozen=True)
class PathfinderParams:
    """A configuration with every ``None`` replaced by its preset (see the module doc)."""

    image_size: int
    contour_length: int
    distractor_length: int
    num_distractors: int
    paddle_length: float
    paddle_gap: float
    thickness: float
    marker_radius: float
    seed_distance: float
    continuity: float

    @property
    def link_distance(self) -> int:
        """Max-norm distance up to which ink pixels count as linked (bridges the dashes)."""
        return math.ceil(self.paddle_gap) + 1


@dataclass
class PathfinderConfig:
    """Geometry fields left ``None`` take the preset of the nearer LRA resolution
    (:meth:`params` resolves them); lengths are in pixels."""

    image_size: int = 32
    contour_length: int | None = None
    distractor_length: int | None = None
    num_distractors: int | None = None
    paddle_length: float | None = None
    paddle_gap: float | None = None
    thickness: float | None = None
    marker_radius: float | None = None
    seed_distance: float | None = None
    continuity: float | None = None
    n_train: int = 2000
    n_val: int = 500
    n_test: int = 500
    readout: str = "mean"

    def __post_init__(self) -> None:
        _check_int("image_size", self.image_size, 16, 256)
        for name in ("n_train", "n_val", "n_test"):
            _check_int(name, getattr(self, name), 1, 10**9)
        size = self.image_size
        ints = {"contour_length": (2, 64), "distractor_length": (1, 64), "num_distractors": (0, 64)}
        numbers = {"paddle_length": (1.0, size / 4), "paddle_gap": (0.5, 4.0), "thickness": (0.5, 4.0),
                   "marker_radius": (0.5, 8.0), "seed_distance": (1.0, size / 2), "continuity": (0.5, 10.0)}
        for name, (low, high) in ints.items():
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), low, high)
        for name, (low, high) in numbers.items():
            if getattr(self, name) is not None:
                _check_number(name, getattr(self, name), low, high)
        if self.readout not in ("mean", "last"):
            raise ValueError(f"task.readout={self.readout!r} is not valid; expected one of ['mean', 'last']")
        self.params()  # presets must be valid too (e.g. seed_distance <= image_size / 2)

    def params(self) -> PathfinderParams:
        preset = PRESETS[32 if self.image_size <= 48 else 64]
        value = {name: preset[name] if getattr(self, name) is None else getattr(self, name)
                 for name in ("contour_length", "paddle_length", "paddle_gap", "thickness", "marker_radius",
                              "seed_distance", "continuity")}
        distractor_length = self.distractor_length
        if distractor_length is None:
            distractor_length = max(1, value["contour_length"] // 3)
        num_distractors = self.num_distractors
        if num_distractors is None:
            num_distractors = preset["distractor_budget"] // distractor_length
        if value["seed_distance"] > self.image_size / 2:
            raise ValueError(
                f"task.seed_distance={value['seed_distance']!r} is not valid with task.image_size={self.image_size}; "
                f"expected seed_distance <= {self.image_size / 2}"
            )
        floats = {name: float(v) for name, v in value.items() if name != "contour_length"}
        return PathfinderParams(self.image_size, value["contour_length"], distractor_length, num_distractors, **floats)


def _profile(d: np.ndarray, w: float) -> np.ndarray:
    return np.clip((w - d) / min(w, 1.0), 0.0, 1.0)


@dataclass
class _Stamps:
    """Pre-rendered segments, as flat offsets on the canvas from the pixel holding the start."""

    zone: np.ndarray  # (n, Z) offsets within the link distance of the ink (rows padded by repeats)
    ink: list[np.ndarray]  # offsets of the ink
    value: list[np.ndarray]  # intensity of each ink pixel, in (0, 1]


def _stamps(starts: np.ndarray, ends: np.ndarray, w: float, link: int, reach: int, width: int) -> _Stamps:
    """Stamps of the segments ``starts[i] -> ends[i]`` ((row, col), relative to the pixel
    holding the start); a segment of length 0 is a disc."""
    r = np.arange(-reach, reach + 1, dtype=np.float64)
    py, px = r[:, None], r[None, :]
    ay, ax = starts[:, 0, None, None], starts[:, 1, None, None]
    dy, dx = (ends[:, 0] - starts[:, 0])[:, None, None], (ends[:, 1] - starts[:, 1])[:, None, None]
    norm2 = dy * dy + dx * dx
    t = np.clip(((py - ay) * dy + (px - ax) * dx) / np.where(norm2 > 0, norm2, 1.0), 0.0, 1.0)
    value = _profile(np.hypot(py - ay - t * dy, px - ax - t * dx), w)
    ink = value >= MIN_INK
    value[~ink] = 0.0
    zone = ink.copy()  # dilate by a (2 link + 1)-sided square
    g = ink.shape[1]
    for sy in range(-link, link + 1):
        for sx in range(-link, link + 1):
            zone[:, max(sy, 0) : g + min(sy, 0), max(sx, 0) : g + min(sx, 0)] |= \
                ink[:, max(-sy, 0) : g + min(-sy, 0), max(-sx, 0) : g + min(-sx, 0)]
    if zone[:, [0, -1], :].any() or zone[:, :, [0, -1]].any():
        raise AssertionError("pathfinder stamp window too small")  # reach is chosen to avoid this
    flat = (np.arange(g)[:, None] - reach) * width + (np.arange(g)[None, :] - reach)
    zones = [flat[z] for z in zone]
    size = max(len(z) for z in zones)
    table = np.stack([np.concatenate([z, np.full(size - len(z), z[0])]) for z in zones]).astype(np.int32)
    return _Stamps(table, [flat[i] for i in ink], [value[s][i].astype(np.float32) for s, i in enumerate(ink)])


@dataclass
class _Geometry:
    """Everything about drawing that depends on the configuration alone. Positions are in
    1/SUB pixels; a paddle is (y, x, angle) = its start and direction; its stamp is
    ``angle * SUB**2 + q`` with ``q = (y % SUB) * SUB + x % SUB``."""

    size: int
    pad: int
    width: int
    paddle: _Stamps
    marker: _Stamps  # index q
    step: list[tuple[int, int]]  # paddle vector per direction
    turn_weights: np.ndarray  # (T,) continuity weights of the turns of positive weight
    next_angle: list[list[int]]  # [angle][turn] direction of the next paddle
    next_move: list[list[tuple[int, int]]]  # [angle][turn] next start minus this start
    next_zone: np.ndarray  # (ANGLES, SUB**2, T, Z) zones of the next paddle's candidates, from this base


@lru_cache(maxsize=8)
def _geometry(size: int, length: float, gap: float, thickness: float, radius: float, continuity: float,
              link: int) -> _Geometry:
    w_paddle, w_marker = thickness / 2 + 0.5, radius + 0.5
    reach = math.ceil(max(length + w_paddle, w_marker)) + link + 2
    pad = reach + math.ceil(length + gap) + link + 4
    width = size + 2 * pad
    theta = 2 * np.pi * np.arange(ANGLES) / ANGLES
    unit = np.stack([np.sin(theta), np.cos(theta)], 1)
    step = np.round(length * SUB * unit).astype(np.int64)
    gap_v = np.round(gap * SUB * unit).astype(np.int64)
    sub = np.arange(SUB) / SUB
    offsets = np.stack(np.meshgrid(sub, sub, indexing="ij"), -1).reshape(-1, 2)  # (SUB**2, 2), index q
    starts = np.tile(offsets, (ANGLES, 1))
    paddle = _stamps(starts, starts + np.repeat(step / SUB, SUB * SUB, axis=0), w_paddle, link, reach, width)
    marker = _stamps(offsets, offsets, w_marker, link, reach, width)
    delta = np.minimum(theta, 2 * np.pi - theta)
    weights = np.cos(np.minimum(delta * continuity, np.pi / 2)) ** 2
    turns = np.nonzero(weights > 1e-9)[0]
    next_angle = (np.arange(ANGLES)[:, None] + turns[None, :]) % ANGLES  # (ANGLES, T)
    move = step[:, None, :] + gap_v[next_angle]  # (ANGLES, T, 2)
    qy, qx = np.divmod(np.arange(SUB * SUB), SUB)
    ry = qy[None, :, None] + move[:, None, :, 0]  # (ANGLES, SUB**2, T), from this base pixel
    rx = qx[None, :, None] + move[:, None, :, 1]
    base = (ry // SUB) * width + rx // SUB
    stamp = next_angle[:, None, :] * SUB * SUB + (ry % SUB) * SUB + rx % SUB
    next_zone = paddle.zone[stamp] + base[..., None].astype(np.int32)
    return _Geometry(size, pad, width, paddle, marker, [tuple(v) for v in step.tolist()], weights[turns],
                     next_angle.tolist(), [[tuple(v) for v in row] for row in move.tolist()], next_zone)


@dataclass
class PathfinderSample:
    """Images with what drew them. images: (N, S, S) float32 in [-1, 1]; labels: (N,) int64;
    contours: (N, S, S) int16, the contour whose paddle inked each pixel (0 none, 1 and 2
    the target contours A and B, 3.. distractors); markers: (N, S, S) int8 (0 none, 1 or 2:
    which marker's disc inked the pixel); marker_centres: (N, 2, 2) float32 (row, col);
    distractors: (N,) int64, distractor contours placed."""

    images: np.ndarray
    labels: np.ndarray
    contours: np.ndarray
    markers: np.ndarray
    marker_centres: np.ndarray
    distractors: np.ndarray


class _Canvas:
    """One image under construction: which object claims each pixel (``ids``, 0 none), on a
    canvas with ``pad`` pixels of border (id BORDER) around the image. Every paddle and
    every marker disc gets the next id, so ids grow in drawing order; intensities are
    painted at the end (:meth:`paint`)."""

    def __init__(self, geo: _Geometry, rng: np.random.Generator):
        self.geo = geo
        self.rng = rng
        self._uniforms: list[float] = []
        ids = np.full((geo.width, geo.width), BORDER, dtype=np.int32)
        ids[geo.pad : geo.pad + geo.size, geo.pad : geo.pad + geo.size] = 0
        self.ids = ids.reshape(-1)
        self.owner = [0, 0]  # per id: contour index (0 for marker discs)
        self.puts: list[tuple] = []  # per id from 2 on: (pixels, their ids before, stamps, stamp, base)
        self.markers: list[tuple[int, int, int]] = []  # (marker index, y, x) of the discs to paint
        self.placed = 0  # distractor contours placed

    def uniform(self) -> float:
        """A uniform draw in [0, 1) from ``rng`` (drawn in blocks, for speed)."""
        if not self._uniforms:
            self._uniforms = self.rng.random(256).tolist()[::-1]
        return self._uniforms.pop()

    def where(self, y: int, x: int) -> tuple[int, int]:
        """(flat index of the pixel holding the point (y, x), sub-pixel index q)."""
        g = self.geo
        return (y // SUB + g.pad) * g.width + x // SUB + g.pad, (y % SUB) * SUB + x % SUB

    def fits(self, zones: np.ndarray, lo: int, hi: int, link: int) -> np.ndarray:
        """Per candidate (a row of absolute ``zones``): no pixel claimed by an id outside
        ``lo..hi`` within the link distance of its ink, and, if ``link`` > 0, a pixel of an id
        in ``link..hi`` there."""
        v = self.ids[zones]
        ok = ~((v > 0) & ((v < lo) | (v > hi))).any(-1)
        return ok & (v >= link).any(-1) if link > 0 else ok

    def put(self, b: int, stamps: _Stamps, s: int, contour: int) -> int:
        """Claim the ink of stamp ``s`` placed at ``b`` for a new id (pixels already claimed by
        the same contour keep their id when the new object is a marker disc)."""
        new = len(self.owner)
        at = b + stamps.ink[s]
        if stamps is self.geo.marker:
            at = at[self.ids[at] == 0]
        self.puts.append((at, self.ids[at], stamps, s, b))
        self.ids[at] = new
        self.owner.append(contour)
        return new

    def pop(self) -> None:
        """Undo the last :meth:`put`."""
        at, before = self.puts.pop()[:2]
        self.ids[at] = before
        self.owner.pop()

    def rewind(self, count: int) -> None:
        while len(self.puts) > count:
            self.pop()

    def paint(self) -> tuple[np.ndarray, np.ndarray]:
        """(intensities, marker index) of the image's pixels, each (S, S)."""
        g = self.geo
        img = np.zeros(g.width * g.width, dtype=np.float32)
        for _, _, stamps, s, b in self.puts:
            if stamps is g.paddle:
                img[b + stamps.ink[s]] = np.maximum(img[b + stamps.ink[s]], stamps.value[s])
        marks = np.zeros(g.width * g.width, dtype=np.int8)
        for m, y, x in self.markers:
            b, q = self.where(y, x)
            at = b + g.marker.ink[q]
            img[at] = np.maximum(img[at], g.marker.value[q])
            marks[at] = m
        inner = slice(g.pad, g.pad + g.size)
        return img.reshape(g.width, g.width)[inner, inner], marks.reshape(g.width, g.width)[inner, inner]

    def contours(self) -> np.ndarray:
        g = self.geo
        inner = slice(g.pad, g.pad + g.size)
        return np.asarray(self.owner, dtype=np.int16)[self.ids.reshape(g.width, g.width)[inner, inner]]


def _contour(cv: _Canvas, rng: np.random.Generator, ys: np.ndarray, xs: np.ndarray, paddles: int, index: int,
             claim_tips: bool = False):
    """A contour of ``paddles`` paddles whose first one starts at one of the candidate
    points (ys, xs), drawn uniformly among those where it fits, heading a random direction
    (up to STARTS starts). Returns (origin tip, terminal tip, paddle id range) or None (nothing
    drawn)."""
    g = cv.geo
    span = g.size * SUB
    inside = (ys >= 0) & (ys < span) & (xs >= 0) & (xs < span)
    ys, xs = ys[inside], xs[inside]
    angles = rng.integers(0, ANGLES, len(ys))
    b = (ys // SUB + g.pad) * g.width + xs // SUB + g.pad
    q = (ys % SUB) * SUB + xs % SUB
    first = len(cv.owner)
    ok = cv.fits(g.paddle.zone[angles * SUB * SUB + q] + b[:, None], first, first, 0)
    if claim_tips:  # room for a marker disc at the start too
        ok &= cv.fits(g.marker.zone[q] + b[:, None], first, first, 0)
    for pick in rng.permutation(np.nonzero(ok)[0])[:STARTS]:
        grown = _grow(cv, rng, int(ys[pick]), int(xs[pick]), int(angles[pick]), paddles, index, claim_tips)
        if grown is not None:
            return grown
    return None


def _grow(cv: _Canvas, rng: np.random.Generator, y: int, x: int, angle: int, paddles: int, index: int,
          claim_tips: bool):
    """Draw a contour from its (fitting) first paddle. Each next paddle is drawn among all
    turns where it fits, by continuity weight; at a dead end the last paddle is withdrawn
    and redrawn among its remaining turns (at most ``paddles`` withdrawals). With
    ``claim_tips``, marker discs at both tips are claimed (painted later only where a
    marker goes) and must fit too. None (canvas as before) on failure."""
    g = cv.geo
    ids, turn_weights, next_zone = cv.ids, g.turn_weights, g.next_zone
    depth = len(cv.puts)
    first = len(cv.owner)
    b, q = cv.where(y, x)
    cv.put(b, g.paddle, angle * SUB * SUB + q, index)
    path = [(y, x, angle, b, q)]  # each paddle drawn
    options: list[np.ndarray] = []  # per paddle after the first: cumulative weights of its turns
    chosen: list[int] = []
    budget = BACKTRACK * paddles
    no_turn = np.zeros(len(turn_weights))
    while True:
        y, x, angle, b, q = path[-1]
        last = first + len(path) - 1
        if len(path) == paddles:
            if not claim_tips:
                break
            # Claim marker discs at both tips (the start's was checked when it was chosen);
            # if the far one does not fit, redraw the last paddle.
            oy, ox = path[0][:2]
            if not _disc_fits(cv, oy, ox, first, last):
                raise AssertionError("pathfinder marker disc does not fit")
            b, q = cv.where(oy, ox)
            cv.put(b, g.marker, q, 0)
            ty, tx = y + g.step[angle][0], x + g.step[angle][1]
            if _disc_fits(cv, ty, tx, first, last):
                b, q = cv.where(ty, tx)
                cv.put(b, g.marker, q, 0)
                break
            cv.pop()
            cdf = no_turn
        else:
            # A turn fits if no id in 1 .. lo-1 (another object, or this contour's paddles
            # before the last SELF_LINK) is within the link distance of its ink, and the last
            # paddle is (no newer ids exist yet). With v - 1 read unsigned, free pixels are huge.
            v = ids[next_zone[angle, q] + b]
            v -= 1
            lo = max(first, last + 1 - SELF_LINK)
            foreign = (v.view(np.uint32) < lo - 1).any(-1)
            linked = (v == last - 1).any(-1)
            cdf = np.cumsum(turn_weights * (linked > foreign))
        while cdf[-1] <= 0:  # dead end: withdraw the last paddle, redraw it among its other turns
            if not options or budget == 0:
                cv.rewind(depth)
                return None
            budget -= 1
            cv.pop()
            path.pop()
            cdf, i = options.pop(), chosen.pop()
            cdf = cdf - np.where(np.arange(len(cdf)) >= i, cdf[i] - (cdf[i - 1] if i else 0.0), 0.0)
            y, x, angle, b, q = path[-1]
        i = min(int(np.searchsorted(cdf, cv.uniform() * cdf[-1], side="right")), len(cdf) - 1)
        options.append(cdf)
        chosen.append(i)
        dy, dx = g.next_move[angle][i]
        y, x, angle = y + dy, x + dx, g.next_angle[angle][i]
        b, q = cv.where(y, x)
        cv.put(b, g.paddle, angle * SUB * SUB + q, index)
        path.append((y, x, angle, b, q))
    y, x, angle = path[-1][:3]
    return path[0][:2], (y + g.step[angle][0], x + g.step[angle][1]), (first, first + paddles - 1)


def _disc_fits(cv: _Canvas, y: int, x: int, first: int, last: int) -> bool:
    """A marker disc at (y, x) claimed for the contour with paddle ids first..last fits:
    only that contour within the link distance of it, and the disc touches it."""
    b, q = cv.where(y, x)
    return bool(cv.fits(cv.geo.marker.zone[q] + b, first, last, first))


def _uniform_points(rng: np.random.Generator, size: int, n: int = 32) -> tuple[np.ndarray, np.ndarray]:
    return rng.integers(0, size * SUB, n), rng.integers(0, size * SUB, n)


def _image(cfg: PathfinderParams, geo: _Geometry, rng: np.random.Generator, label: int) -> _Canvas | None:
    cv = _Canvas(geo, rng)
    a = _contour(cv, rng, *_uniform_points(rng, geo.size), cfg.contour_length, 1, claim_tips=True)
    if a is None:
        return None
    phi = (np.arange(64) + rng.random()) * (2 * np.pi / 64)
    ys = a[0][0] + np.round(cfg.seed_distance * SUB * np.sin(phi)).astype(np.int64)
    xs = a[0][1] + np.round(cfg.seed_distance * SUB * np.cos(phi)).astype(np.int64)
    b = _contour(cv, rng, ys, xs, cfg.contour_length, 2, claim_tips=True)
    if b is None:
        return None
    first = int(rng.integers(2))
    targets = (a, b)
    ends = ((targets[first], 0), (targets[first if label else 1 - first], 1))  # (contour, which tip)
    cv.markers = [(m, *contour[tip]) for m, (contour, tip) in enumerate(ends, start=1)]
    for _ in range(cfg.num_distractors):  # distractors are numbered 3, 4, ... as placed
        if _contour(cv, rng, *_uniform_points(rng, geo.size), cfg.distractor_length, 3 + cv.placed) is not None:
            cv.placed += 1
    return cv


def render(cfg: PathfinderConfig, n: int, seed: int) -> PathfinderSample:
    """``n`` images and what drew them; deterministic in ``seed``."""
    cfg = cfg.params()
    geo = _geometry(cfg.image_size, cfg.paddle_length, cfg.paddle_gap, cfg.thickness, cfg.marker_radius,
                    cfg.continuity, cfg.link_distance)
    rng = np.random.Generator(np.random.PCG64(seed))
    s = geo.size
    images = np.empty((n, s, s), dtype=np.float32)
    contours = np.empty((n, s, s), dtype=np.int16)
    markers = np.empty((n, s, s), dtype=np.int8)
    centres = np.empty((n, 2, 2), dtype=np.float32)
    labels = (rng.random(n) < 0.5).astype(np.int64)
    placed = np.empty(n, dtype=np.int64)
    for i in range(n):
        for _ in range(200):
            cv = _image(cfg, geo, rng, int(labels[i]))
            if cv is not None:
                break
        else:
            raise RuntimeError(
                f"Pathfinder could not draw an image in 200 tries with image_size={cfg.image_size}, "
                f"contour_length={cfg.contour_length}, paddle_length={cfg.paddle_length}, "
                f"paddle_gap={cfg.paddle_gap}, seed_distance={cfg.seed_distance}; "
                "use shorter contours or a larger image"
            )
        images[i], markers[i] = cv.paint()
        contours[i] = cv.contours()
        centres[i] = [(y / SUB, x / SUB) for _, y, x in cv.markers]
        placed[i] = cv.placed
    return PathfinderSample(2 * images - 1, labels, contours, markers, centres, placed)


class Pathfinder(Task):
    name = "pathfinder"
    Config = PathfinderConfig

    @property
    def spec(self) -> TaskSpec:
        c = self.cfg
        io = IOSpec(d_input=1, d_output=2, readout=c.readout)
        return TaskSpec(name=self.name, io=io, length=c.image_size**2, causal=c.readout == "last", loss_on="pooled")

    @property
    def link_distance(self) -> int:
        """Max-norm distance up to which ink pixels count as linked (bridges the dashes)."""
        return self.cfg.params().link_distance

    def render(self, split: str) -> PathfinderSample:
        """The split's images with their contour and marker maps (for inspection and tests);
        the same draws as :meth:`split` (whose seed derivation, from :class:`Task`, this repeats)."""
        seed = 1_000_003 * self.data_seed + SPLITS.index(split)
        return render(self.cfg, self._size(split), self._seed(torch.Generator().manual_seed(seed)))

    def _size(self, split: str) -> int:
        return {"train": self.cfg.n_train, "val": self.cfg.n_val, "test": self.cfg.n_test}[split]

    @staticmethod
    def _seed(generator: torch.Generator) -> int:
        return int(torch.randint(0, 2**62, (1,), generator=generator))

    def generate(self, split: str, generator: torch.Generator) -> Split:
        sample = render(self.cfg, self._size(split), self._seed(generator))
        n, s = len(sample.labels), self.cfg.image_size
        x = torch.from_numpy(sample.images).reshape(n, s * s, 1)
        return Split(x, torch.from_numpy(sample.labels))
