"""Pathfinder (Linsley et al. 2018; the Long Range Arena version, Tay et al. 2021): are the
two circular markers joined by one dashed curved contour? Two classes, one image read
pixel by pixel.

What is generated (a re-implementation of the task's definition, in the spirit of the
``snakes2`` generator, github.com/drewlinsley/pathfinder, with LRA's parameters; our
drawing is not theirs, so images are similar in kind, not identical):

* Contours ("snakes") are chains of *paddles*: line segments of ``paddle_length`` pixels
  and stroke ``thickness``, separated by gaps of ``paddle_gap`` pixels (the dashes). Paddle
  ``j + 1`` starts ``paddle_gap`` beyond the end of paddle ``j`` along its own direction.
  Directions lie on a grid of 48 angles (7.5 degrees); the turn ``delta`` from one paddle to
  the next is drawn with weight ``cos(min(|delta| * continuity, pi / 2)) ** 2`` (snakes2's
  continuity rule: larger ``continuity`` means straighter contours; 1.0 allows turns up
  to 90 degrees). A proposal that breaks a rule below is redrawn (up to 10 times), then
  the contour is abandoned.
* Every image holds two target contours A and B of ``contour_length`` paddles each, B
  starting ``seed_distance`` pixels from A's start in a random direction, then two
  markers: discs of ``marker_radius`` centred on contour ends. One target contour ``i``
  (A or B, at random) gets a marker on its first end; the second marker goes on the far
  end of the same contour for label 1 (connected) or on the far end of the other target
  contour for label 0 (as snakes2 does, so both classes show the same ink: two long
  contours, two markers). Labels are drawn uniformly (p = 1/2 each).
* Then up to ``num_distractors`` distractor contours of ``distractor_length`` paddles,
  each started at up to 10 random places and dropped if it cannot be completed.

Rules that make the label a property of the pixels (checked on the raster, per proposal):
* ink pixels of different objects (contours, and markers counted with the contour they
  sit on) are more than ``link_distance = ceil(paddle_gap) + 1`` pixels apart in the
  max-norm (Chebyshev), and every pixel outside the image counts as another object;
* each paddle has an ink pixel within ``link_distance`` of its predecessor's ink (and each
  marker of its contour's ink), so the dashes of one contour stay linked;
* a paddle keeps ``link_distance`` clear of its own contour except its last 3 paddles (no
  coils or self-touching).
Consequence (tested): with ``ink = image > -1`` and ink pixels linked when their max-norm
distance is at most ``link_distance`` (equivalently: dilate the ink by a
``link_distance``-sided square and take 8-connected components), the two marker centres
lie in one component if and only if the label is 1. Images that cannot be completed are
redrawn whole with the same label.

Rendering: pixel ``(i, j)`` has its centre at ``(i, j)``; positions live on a quarter-pixel
grid. A paddle at distance ``d`` from a pixel centre gives intensity
``clip((w - d) / min(w, 1), 0, 1)`` with ``w = thickness / 2 + 0.5`` (a stroke
anti-aliased over one pixel), a marker the same with ``w = marker_radius + 0.5``; objects
combine by max. The background is 0. Images are mapped to ``[-1, 1]`` (``2 v - 1``; the
background is exactly -1), flattened row-major into a ``(size**2, 1)`` feature sequence.

Parameters (``None`` takes the preset of the nearest LRA resolution, 32 for
``image_size <= 48``, else 64). 32x32 ("hard", LRA's Pathfinder32): contour length 14,
distractor length 14 // 3 = 4, 20 // 4 = 5 distractors, paddle length 2, gap (snakes2's
margin) 1, thickness 0.5, marker radius 1.5, seed distance 7, continuity 1.0. 64x64
(LRA's Pathfinder64): paddle length 5 (snakes2's default), gap 1, thickness 1, marker
radius 2.5, seed distance 12, continuity 1.8, contour length 14, distractor length 4,
22 // 4 = 5 distractors. Our clearance rule is stricter than snakes2's (which only keeps
paddles about one margin apart), so distractors are sometimes dropped in crowded images.

Scoring: one label per image (``loss_on='pooled'``), 2 classes, ``readout='mean'``
(non-causal; ``'last'`` is allowed for causal models). Splits are drawn independently
(LRA: a random 80/10/10 split of one generated set).
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate

import numpy as np
import torch

from models import IOSpec

from .base import Split, Task, TaskSpec, validate_fields

ANGLES = 48  # direction grid
SUB = 4  # positions on a 1/SUB pixel grid
TRIES = 10  # proposals per paddle; start places per contour
SELF_LINK = 3  # a paddle may come close to its contour's last SELF_LINK paddles only
BORDER = 1  # id of the pixels outside the image; object ids start at 2

PRESETS = {
    32: dict(contour_length=14, paddle_length=2.0, paddle_gap=1.0, thickness=0.5, marker_radius=1.5,
             seed_distance=7.0, continuity=1.0, distractor_budget=20),
    64: dict(contour_length=14, paddle_length=5.0, paddle_gap=1.0, thickness=1.0, marker_radius=2.5,
             seed_distance=12.0, continuity=1.8, distractor_budget=22),
}


def _number(cfg: object, name: str, low: float, high: float) -> None:
    value = getattr(cfg, name)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"task.{name}={value!r} is not valid; expected a number >= {low} and <= {high}")


@dataclass
class PathfinderConfig:
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
        for name in ("image_size", "n_train", "n_val", "n_test"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"task.{name}={value!r} is not valid; expected an integer")
        validate_fields(self, {"image_size": (16, 256), "n_train": (1, None), "n_val": (1, None), "n_test": (1, None)})
        preset = PRESETS[32 if self.image_size <= 48 else 64]
        for name in ("contour_length", "paddle_length", "paddle_gap", "thickness", "marker_radius",
                     "seed_distance", "continuity"):
            if getattr(self, name) is None:
                setattr(self, name, preset[name])
        if self.distractor_length is None and isinstance(self.contour_length, int):
            self.distractor_length = max(1, self.contour_length // 3)
        if self.num_distractors is None and isinstance(self.distractor_length, int) and self.distractor_length > 0:
            self.num_distractors = preset["distractor_budget"] // self.distractor_length
        for name in ("contour_length", "distractor_length", "num_distractors"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"task.{name}={value!r} is not valid; expected an integer")
        validate_fields(self, {"contour_length": (2, 64), "distractor_length": (1, 64), "num_distractors": (0, 64)})
        size = self.image_size
        _number(self, "paddle_length", 1.0, size / 4)
        _number(self, "paddle_gap", 0.5, 4.0)
        _number(self, "thickness", 0.5, 4.0)
        _number(self, "marker_radius", 0.5, 8.0)
        _number(self, "seed_distance", 1.0, size / 2)
        _number(self, "continuity", 0.5, 10.0)
        if self.readout not in ("mean", "last"):
            raise ValueError(f"task.readout={self.readout!r} is not valid; expected one of ['mean', 'last']")


def link_distance(cfg: PathfinderConfig) -> int:
    """Max-norm distance up to which ink pixels count as linked (bridges the dashes)."""
    return math.ceil(cfg.paddle_gap) + 1


@dataclass
class _Stamp:
    zone: np.ndarray  # flat canvas offsets within link distance of the ink (ink included)
    ink: np.ndarray  # flat canvas offsets of the ink
    value: np.ndarray  # intensity of each ink pixel, in (0, 1]


def _profile(d: np.ndarray, w: float) -> np.ndarray:
    return np.clip((w - d) / min(w, 1.0), 0.0, 1.0)


def _stamps(starts: np.ndarray, ends: np.ndarray, w: float, link: int, reach: int, width: int) -> list[_Stamp]:
    """One stamp per segment ``starts[i] -> ends[i]`` (points relative to the base pixel,
    (row, col)): the pixels it inks and the pixels within ``link`` of those."""
    r = np.arange(-reach, reach + 1, dtype=np.float64)
    py, px = r[:, None], r[None, :]
    ay, ax = starts[:, 0, None, None], starts[:, 1, None, None]
    dy, dx = (ends[:, 0] - starts[:, 0])[:, None, None], (ends[:, 1] - starts[:, 1])[:, None, None]
    norm2 = dy * dy + dx * dx
    t = np.clip(((py - ay) * dy + (px - ax) * dx) / np.where(norm2 > 0, norm2, 1.0), 0.0, 1.0)
    dist = np.hypot(py - ay - t * dy, px - ax - t * dx)
    value = _profile(dist, w)
    ink = value > 0
    zone = ink.copy()
    g = ink.shape[1]
    for sy in range(-link, link + 1):
        for sx in range(-link, link + 1):
            shifted = np.zeros_like(ink)
            shifted[:, max(sy, 0) : g + min(sy, 0), max(sx, 0) : g + min(sx, 0)] = \
                ink[:, max(-sy, 0) : g + min(-sy, 0), max(-sx, 0) : g + min(-sx, 0)]
            zone |= shifted
    if zone[:, [0, -1], :].any() or zone[:, :, [0, -1]].any():
        raise AssertionError("pathfinder stamp window too small")  # reach is computed to avoid this
    flat = (np.arange(g)[:, None] - reach) * width + (np.arange(g)[None, :] - reach)
    return [_Stamp(flat[z], flat[i], value[s][i].astype(np.float32)) for s, (z, i) in enumerate(zip(zone, ink))]


@dataclass
class _Geometry:
    size: int
    pad: int
    width: int
    link: int
    paddle: list[_Stamp]  # index (angle * SUB + qy) * SUB + qx
    marker: list[_Stamp]  # index qy * SUB + qx
    step: list[tuple[int, int]]  # paddle vector per angle, in 1/SUB pixels
    gap: list[tuple[int, int]]  # gap vector per angle, in 1/SUB pixels
    turn_cdf: list[float]  # cumulative weights of turns 0 .. ANGLES-1 (in angle steps)


@lru_cache(maxsize=8)
def _geometry(size: int, length: float, gap: float, thickness: float, radius: float, continuity: float,
              link: int) -> _Geometry:
    w_paddle, w_marker = thickness / 2 + 0.5, radius + 0.5
    reach = math.ceil(max(length, w_marker) + w_paddle) + link + 2
    pad = reach + math.ceil(gap) + link + 4
    width = size + 2 * pad
    theta = 2 * math.pi * np.arange(ANGLES) / ANGLES
    step = [(round(length * SUB * math.sin(a)), round(length * SUB * math.cos(a))) for a in theta]
    gap_v = [(round(gap * SUB * math.sin(a)), round(gap * SUB * math.cos(a))) for a in theta]
    sub = np.arange(SUB) / SUB
    starts = np.stack(np.broadcast_arrays(sub[None, :, None], sub[None, None, :]), -1)  # (1, SUB, SUB, 2)
    starts = np.broadcast_to(starts, (ANGLES, SUB, SUB, 2)).reshape(-1, 2)
    vec = np.repeat(np.array(step, dtype=np.float64) / SUB, SUB * SUB, axis=0)
    paddle = _stamps(starts, starts + vec, w_paddle, link, reach, width)
    centres = starts[: SUB * SUB]
    marker = _stamps(centres, centres, w_marker, link, reach, width)
    delta = np.minimum(theta, 2 * math.pi - theta)
    weights = np.cos(np.minimum(delta * continuity, math.pi / 2)) ** 2
    weights[weights < 1e-9] = 0.0
    return _Geometry(size, pad, width, link, paddle, marker, step, gap_v, list(accumulate(weights.tolist())))


@dataclass
class PathfinderSample:
    """Images with what drew them. images: (N, S, S) float32 in [-1, 1]; labels: (N,) int64;
    contours: (N, S, S) int16, the contour whose paddle inked each pixel (0 none, 1 and 2
    the target contours A and B, 3.. distractors); markers: (N, S, S) int8 (0 none, 1 or 2:
    which marker); marker_centres: (N, 2, 2) float32 (row, col); distractors: (N,) int64,
    distractor contours placed."""

    images: np.ndarray
    labels: np.ndarray
    contours: np.ndarray
    markers: np.ndarray
    marker_centres: np.ndarray
    distractors: np.ndarray


class _Canvas:
    """One image under construction: ids (who inked each pixel) and intensities, on a
    canvas with ``pad`` pixels of border (id BORDER) around the image."""

    def __init__(self, geo: _Geometry):
        self.geo = geo
        ids = np.full((geo.width, geo.width), BORDER, dtype=np.int32)
        ids[geo.pad : geo.pad + geo.size, geo.pad : geo.pad + geo.size] = 0
        self.ids = ids.reshape(-1)
        self.img = np.zeros(geo.width * geo.width, dtype=np.float32)
        self.owner = [0, 0]  # contour index of each id (0 for markers)
        self.marker_of = [0, 0]  # marker index of each id
        self.centres: list[tuple[float, float]] = []  # marker centres, pixels (row, col)
        self.placed = 0  # distractor contours placed

    def base(self, y: int, x: int) -> tuple[int, int]:
        """(flat index of the pixel holding the point, sub-pixel index); y, x in 1/SUB px."""
        g = self.geo
        return (y // SUB + g.pad) * g.width + x // SUB + g.pad, (y % SUB) * SUB + x % SUB

    def fits(self, b: int, stamp: _Stamp, lo: int, hi: int, link: int) -> bool:
        """No foreign ink near the stamp's ink (ids in lo..hi are not foreign), and, if
        ``link`` > 0, some ink with an id in link..hi within the link distance."""
        v = self.ids[b + stamp.zone]
        if ((v > 0) & ((v < lo) | (v > hi))).any():
            return False
        return link <= 0 or bool((v >= link).any())

    def put(self, b: int, stamp: _Stamp, contour: int, marker: int = 0) -> int:
        new = len(self.owner)
        self.owner.append(contour)
        self.marker_of.append(marker)
        at = b + stamp.ink
        self.ids[at] = new
        self.img[at] = np.maximum(self.img[at], stamp.value)
        return new

    def snapshot(self) -> tuple:
        return self.ids.copy(), self.img.copy(), len(self.owner)

    def restore(self, snap: tuple) -> None:
        self.ids, self.img = snap[0].copy(), snap[1].copy()
        del self.owner[snap[2] :], self.marker_of[snap[2] :]


def _contour(cv: _Canvas, rng: random.Random, y: int, x: int, angle: int, paddles: int, index: int):
    """Grow one contour from (y, x) (1/SUB px) heading ``angle``; returns its (origin,
    terminal) tips and id range, or None (the canvas is then restored)."""
    g = cv.geo
    span = g.size * SUB
    if not (0 <= y < span and 0 <= x < span):
        return None
    snap = cv.snapshot()
    first = len(cv.owner)
    b, q = cv.base(y, x)
    stamp = g.paddle[angle * SUB * SUB + q]
    if not cv.fits(b, stamp, first, first, 0):
        return None
    last = cv.put(b, stamp, index)
    origin = (y, x)
    cdf, total = g.turn_cdf, g.turn_cdf[-1]
    for _ in range(paddles - 1):
        ey, ex = y + g.step[angle][0], x + g.step[angle][1]
        for _ in range(TRIES):
            turn = min(bisect_right(cdf, rng.random() * total), ANGLES - 1)
            new_angle = (angle + turn) % ANGLES
            ny, nx = ey + g.gap[new_angle][0], ex + g.gap[new_angle][1]
            b, q = cv.base(ny, nx)
            stamp = g.paddle[new_angle * SUB * SUB + q]
            if cv.fits(b, stamp, max(first, last + 1 - SELF_LINK), last + 1, last):
                break
        else:
            cv.restore(snap)
            return None
        last = cv.put(b, stamp, index)
        y, x, angle = ny, nx, new_angle
    terminal = (y + g.step[angle][0], x + g.step[angle][1])
    return origin, terminal, (first, last)


def _random_contour(cv: _Canvas, rng: random.Random, paddles: int, index: int, near=None, distance: float = 0.0):
    """A contour started at a random place (or ``distance`` px from ``near``, a point in
    1/SUB px), trying up to TRIES starts."""
    span = cv.geo.size * SUB
    for _ in range(TRIES):
        if near is None:
            y, x = rng.randrange(span), rng.randrange(span)
        else:
            phi = rng.random() * 2 * math.pi
            y, x = near[0] + round(distance * SUB * math.sin(phi)), near[1] + round(distance * SUB * math.cos(phi))
        got = _contour(cv, rng, y, x, rng.randrange(ANGLES), paddles, index)
        if got is not None:
            return got
    return None


def _image(cfg: PathfinderConfig, geo: _Geometry, rng: random.Random, label: int) -> _Canvas | None:
    cv = _Canvas(geo)
    a = _random_contour(cv, rng, cfg.contour_length, 1)
    if a is None:
        return None
    b = _random_contour(cv, rng, cfg.contour_length, 2, near=a[0], distance=cfg.seed_distance)
    if b is None:
        return None
    first = rng.randrange(2)
    targets = (a, b)
    ends = ((targets[first], 0), (targets[first if label else 1 - first], 1))  # (contour, which tip)
    centres = []
    for m, (contour, tip) in enumerate(ends, start=1):
        y, x = contour[tip]
        base, q = cv.base(y, x)
        lo, hi = contour[2]
        if not cv.fits(base, geo.marker[q], lo, hi, lo):
            return None
        cv.put(base, geo.marker[q], 0, marker=m)
        centres.append((y / SUB, x / SUB))
    cv.centres = centres
    placed = 0  # distractors are numbered 3, 4, ... in the order they are placed
    for i in range(cfg.num_distractors):
        if _random_contour(cv, rng, cfg.distractor_length, 3 + placed) is not None:
            placed += 1
    cv.placed = placed
    return cv


def render(cfg: PathfinderConfig, n: int, seed: int) -> PathfinderSample:
    """``n`` images and what drew them; deterministic in ``seed``."""
    geo = _geometry(cfg.image_size, float(cfg.paddle_length), float(cfg.paddle_gap), float(cfg.thickness),
                    float(cfg.marker_radius), float(cfg.continuity), link_distance(cfg))
    rng = random.Random(seed)
    s, p, w = geo.size, geo.pad, geo.width
    images = np.empty((n, s, s), dtype=np.float32)
    contours = np.empty((n, s, s), dtype=np.int16)
    markers = np.empty((n, s, s), dtype=np.int8)
    centres = np.empty((n, 2, 2), dtype=np.float32)
    labels = np.empty(n, dtype=np.int64)
    placed = np.empty(n, dtype=np.int64)
    for i in range(n):
        label = int(rng.random() < 0.5)
        for _ in range(500):
            cv = _image(cfg, geo, rng, label)
            if cv is not None:
                break
        else:
            raise RuntimeError(
                f"Pathfinder could not draw an image in 500 tries with image_size={cfg.image_size}, "
                f"contour_length={cfg.contour_length}, paddle_length={cfg.paddle_length}, paddle_gap={cfg.paddle_gap}, "
                f"seed_distance={cfg.seed_distance}; use shorter contours or a larger image"
            )
        ids = cv.ids.reshape(w, w)[p : p + s, p : p + s]
        images[i] = cv.img.reshape(w, w)[p : p + s, p : p + s]
        contours[i] = np.asarray(cv.owner, dtype=np.int16)[ids]
        markers[i] = np.asarray(cv.marker_of, dtype=np.int8)[ids]
        centres[i] = cv.centres
        labels[i] = label
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
        return link_distance(self.cfg)

    def render(self, split: str) -> PathfinderSample:
        """The split's images with their contour and marker maps (for inspection and tests);
        the same draws as :meth:`split`."""
        from .base import SPLITS

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
