"""Long Range Arena tasks: the ListOps and Pathfinder generators and the release reader.

Specs agree with the data; each generator's defining property is checked by an
independent computation (ListOps: a separate parser and evaluator of the token sequence;
Pathfinder: connectivity of the ink in the image, and the drawn contour map); data are
seeded; the reader parses tiny files in the release layout and names missing files;
bad configurations fail with a message naming the field."""

from __future__ import annotations

import math
import statistics
from collections import deque

import numpy as np
import pytest
import torch

from ablate.tasks import listops as listops_mod
from ablate.tasks.base import SPLITS, Task
from ablate.tasks.listops import ListOps, ListOpsConfig
from ablate.tasks.lra import LRA, LRAConfig
from ablate.tasks.pathfinder import Pathfinder, PathfinderConfig, render

SMALL = dict(n_train=48, n_val=16, n_test=16)


def make_listops(data_seed: int = 0, **overrides) -> ListOps:
    return ListOps(ListOpsConfig(**{**SMALL, **overrides}), data_seed=data_seed)


def make_pathfinder(data_seed: int = 0, **overrides) -> Pathfinder:
    return Pathfinder(PathfinderConfig(**{**SMALL, **overrides}), data_seed=data_seed)


def check_spec(task: Task, sizes: dict[str, int]) -> None:
    """Every split matches the spec, and the shared loss and score accept it."""
    spec = task.spec
    assert spec.name == task.name and spec.loss_on == "pooled" and spec.metric == "accuracy"
    for split in SPLITS:
        data = task.split(split)
        n = sizes[split]
        assert len(data) == n
        if spec.io.vocab_size is not None:
            assert data.x.shape == (n, spec.length) and data.x.dtype == torch.int64
            assert 0 <= data.x.min() and data.x.max() < spec.io.vocab_size
        else:
            assert data.x.shape == (n, spec.length, spec.io.d_input) and data.x.dtype == torch.float32
        assert data.y.shape == (n,) and data.y.dtype == torch.int64
        assert 0 <= data.y.min() and data.y.max() < spec.io.d_output
        batch = next(data.batches(4, shuffle=False))
        out = torch.randn(len(batch.y), spec.io.d_output)
        assert torch.isfinite(task.loss(out, batch.y))
        total, count = task.score(out, batch.y)
        assert count == len(batch.y) and 0 <= total <= count


# --- ListOps ----------------------------------------------------------------------------

def parse_and_evaluate(texts: list[str]) -> tuple[int, int, list[int]]:
    """Recursive descent over token texts: (value, depth, argument counts). Written
    independently of the generator: MED is LRA's int(numpy.median), i.e. the floor of the
    statistical median."""
    pos = 0
    counts: list[int] = []

    def expr(depth: int) -> tuple[int, int]:
        nonlocal pos
        token = texts[pos]
        pos += 1
        if token.isdigit():
            return int(token), depth
        assert token in ("[MIN", "[MAX", "[MED", "[SM"), token
        args, deepest = [], depth
        while texts[pos] != "]":
            value, d = expr(depth + 1)
            args.append(value)
            deepest = max(deepest, d)
        pos += 1
        counts.append(len(args))
        if token == "[MIN":
            return min(args), deepest
        if token == "[MAX":
            return max(args), deepest
        if token == "[SM":
            return sum(args) % 10, deepest
        return math.floor(statistics.median(args)), deepest

    value, depth = expr(1)
    assert pos == len(texts), "tokens left over after the expression"
    return value, depth, counts


def test_listops_spec_matches_data() -> None:
    check_spec(make_listops(), {"train": 48, "val": 16, "test": 16})
    assert make_listops().spec.io.vocab_size == 16 and make_listops().spec.io.d_output == 10


@pytest.mark.parametrize("readout", ["mean", "last"])
def test_listops_labels_match_an_independent_evaluator(readout: str) -> None:
    cfg = dict(max_depth=5, min_args=2, max_args=6, min_length=10, max_length=80, n_train=300, readout=readout)
    task = make_listops(**cfg)
    data = task.split("train")
    assert task.spec.causal == (readout == "last") and task.spec.io.readout == readout
    seen = set()
    for row, label in zip(data.x.tolist(), data.y.tolist()):
        ids = [i for i in row if i != 0]
        n = len(ids)
        assert 10 <= n <= 80
        # Padding: right for the mean readout (LRA's layout), left for the last readout.
        assert row == (ids + [0] * (80 - n) if readout == "mean" else [0] * (80 - n) + ids)
        texts = [listops_mod.TOKENS[i] for i in ids]
        value, depth, counts = parse_and_evaluate(texts)
        assert value == label
        assert depth <= 5 and all(2 <= c <= 6 for c in counts)
        seen.add(tuple(ids))
    assert len(seen) == len(data)  # distinct within a split
    assert set(data.y.tolist()) == set(range(10))


def test_listops_operators_and_tokens() -> None:
    ids = listops_mod.tokenize("( ( ( ( [MED 3 ) 4 ) 5 ) 6 ) ]")  # LRA's written form
    assert ids == [13, 4, 5, 6, 7, 15]
    assert listops_mod.detokenize(ids) == "[MED 3 4 5 6 ]"
    assert parse_and_evaluate(listops_mod.detokenize(ids).split())[0] == 4  # floor(4.5)
    assert listops_mod.apply(listops_mod.MED, [3, 4, 5, 6]) == 4
    assert listops_mod.apply(listops_mod.MED, [1, 2]) == 1
    assert listops_mod.apply(listops_mod.MED, [9, 0, 4]) == 4
    assert listops_mod.apply(listops_mod.SM, [9, 8, 7]) == 4
    assert listops_mod.tokenize("[MIN 1 [MAX 2 3 ] ]") == [11, 2, 12, 3, 4, 15, 15]
    with pytest.raises(ValueError, match="FIRST"):
        listops_mod.tokenize("[FIRST 1 2 ]")


def test_listops_lra_setting_runs() -> None:
    task = make_listops(max_depth=10, max_args=10, min_length=500, max_length=2000, n_train=6, n_val=2, n_test=2)
    data = task.split("train")
    lengths = (data.x != 0).sum(1)
    assert data.x.shape == (6, 2000) and lengths.min() >= 500
    for row, label in zip(data.x.tolist(), data.y.tolist()):
        assert parse_and_evaluate([listops_mod.TOKENS[i] for i in row if i])[0] == label


# --- Pathfinder -------------------------------------------------------------------------

def linked_component(ink: np.ndarray, start: tuple[int, int], link: int) -> np.ndarray:
    """Ink pixels reachable from ``start`` through ink pixels at max-norm distance <= link
    (the same as 8-connectivity after dilating the ink by a link-sided square)."""
    seen = np.zeros_like(ink)
    seen[start] = True
    queue = deque([start])
    h, w = ink.shape
    while queue:
        y, x = queue.popleft()
        for yy in range(max(0, y - link), min(h, y + link + 1)):
            for xx in range(max(0, x - link), min(w, x + link + 1)):
                if ink[yy, xx] and not seen[yy, xx]:
                    seen[yy, xx] = True
                    queue.append((yy, xx))
    return seen


def touched_contours(contours: np.ndarray, marker: np.ndarray) -> set[int]:
    """Contours with a pixel at max-norm distance <= 1 of the marker's disc."""
    near = marker.copy()
    near[1:] |= marker[:-1]
    near[:-1] |= marker[1:]
    near[:, 1:] |= near[:, :-1].copy()
    near[:, :-1] |= near[:, 1:].copy()
    return set(np.unique(contours[near]).tolist()) - {0}


@pytest.mark.parametrize("size,n", [(32, 200), (64, 40)])
def test_pathfinder_label_is_connectivity(size: int, n: int) -> None:
    cfg = PathfinderConfig(image_size=size)
    link = Pathfinder(cfg).link_distance
    sample = render(cfg, n, seed=7)
    assert sample.images.shape == (n, size, size) and sample.images.dtype == np.float32
    assert sample.images.min() == -1.0 and sample.images.max() <= 1.0
    for i in range(n):
        image, label, contours = sample.images[i], int(sample.labels[i]), sample.contours[i]
        ink = image > -1.0  # the background is exactly -1
        centres = [tuple(int(v) for v in np.round(c)) for c in sample.marker_centres[i]]
        assert all(ink[c] for c in centres)
        # Pure image: the markers are linked through the ink iff the label is 1.
        same = bool(linked_component(ink, centres[0], link)[centres[1]])
        assert same == bool(label), f"image {i}: label {label}, markers linked: {same}"
        # Contour map: each marker touches one target contour, the same one iff label 1.
        touched = [touched_contours(contours, sample.markers[i] == m) for m in (1, 2)]
        assert all(len(t) == 1 and t <= {1, 2} for t in touched), touched
        assert (touched[0] == touched[1]) == bool(label)
        # Objects (contours with their markers) are more than `link` apart; each is linked.
        objects = contours.astype(np.int64)
        for m, t in zip((1, 2), touched):
            objects[(sample.markers[i] == m) & (objects == 0)] = next(iter(t))
        assert ((objects > 0) == ink).all()
        padded = np.pad(objects, link)
        for dy in range(-link, link + 1):
            for dx in range(-link, link + 1):
                other = padded[link + dy : link + dy + size, link + dx : link + dx + size]
                assert not ((objects > 0) & (other > 0) & (objects != other)).any()
        for k in np.unique(objects[objects > 0]):
            first = tuple(np.argwhere(objects == k)[0])
            assert (linked_component(objects == k, first, link) == (objects == k)).all()


def test_pathfinder_balance_and_distractors() -> None:
    sample = render(PathfinderConfig(), 400, seed=3)
    assert 0.42 <= sample.labels.mean() <= 0.58
    assert sample.distractors.mean() >= 2.0  # of 5 asked for; crowded images hold fewer
    assert (sample.contours == 1).any(axis=(1, 2)).all() and (sample.contours == 2).any(axis=(1, 2)).all()


def test_pathfinder_spec_matches_data() -> None:
    task = make_pathfinder()
    check_spec(task, {"train": 48, "val": 16, "test": 16})
    spec = task.spec
    assert spec.length == 1024 and spec.io.d_input == 1 and spec.io.d_output == 2
    assert spec.io.readout == "mean" and not spec.causal
    data = task.split("train")
    assert data.x.min() >= -1 and data.x.max() <= 1
    # The split is the rendered images, flattened row-major.
    sample = task.render("train")
    assert torch.equal(data.x, torch.from_numpy(sample.images).reshape(48, 1024, 1))
    assert torch.equal(data.y, torch.from_numpy(sample.labels))
    big = make_pathfinder(image_size=64, n_train=4, n_val=2, n_test=2)
    assert big.split("val").x.shape == (2, 4096, 1) and big.spec.length == 4096
    assert big.cfg.params().paddle_length == 5 and make_pathfinder().cfg.params().paddle_length == 2


# --- seeding ----------------------------------------------------------------------------

@pytest.mark.parametrize("make", [make_listops, make_pathfinder], ids=["listops", "pathfinder"])
def test_seeding(make) -> None:
    a, b, c = make(0), make(0), make(1)
    for split in SPLITS:
        assert torch.equal(a.split(split).x, b.split(split).x) and torch.equal(a.split(split).y, b.split(split).y)
        assert not torch.equal(a.split(split).x, c.split(split).x)
    n = len(a.split("val"))
    assert not torch.equal(a.split("train").x[:n], a.split("val").x)
    assert not torch.equal(a.split("val").x, a.split("test").x)


# --- the release reader -----------------------------------------------------------------

LISTOPS_ROWS = [
    ("( ( ( [MAX 2 ) 9 ) ] )", 9),
    ("( ( ( ( [MIN 4 ) ( ( ( [SM 7 ) 8 ) ] ) ) 6 ) ] )", 4),
    ("( ( ( [MED 3 ) 5 ) ] )", 4),
]
AAN_ROWS = [
    ("1", "p1", "p2", "ab", "xyz"),
    ("0.0", "p3", "p4", "héllo", ""),
]


def write_release(root, subfolder: str = "lra_release") -> None:
    """Tiny files in the layout of LRA's lra_release.gz (plus an aclImdb folder)."""
    base = root / subfolder if subfolder else root
    (base / "listops-1000").mkdir(parents=True)
    for split in ("train", "val", "test"):
        lines = ["Source\tTarget"] + [f"{s}\t{t}" for s, t in LISTOPS_ROWS]
        (base / "listops-1000" / f"basic_{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (base / "tsv_data").mkdir()
    for split in ("train", "eval", "test"):
        lines = ["\t".join(row) for row in AAN_ROWS]
        (base / "tsv_data" / f"new_aan_pairs.{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for split in ("train", "test"):
        for label, texts in (("neg", ["bad", "awful film"]), ("pos", ["good"])):
            folder = base / "aclImdb" / split / label
            folder.mkdir(parents=True)
            for i, text in enumerate(texts):
                (folder / f"{i}_1.txt").write_text(text, encoding="utf-8")


def test_lra_listops_reads_release(tmp_path) -> None:
    write_release(tmp_path)
    task = LRA(LRAConfig(data_dir=str(tmp_path / "lra_release"), subtask="listops", max_length=8))
    check_spec(task, {"train": 3, "val": 3, "test": 3})
    assert task.spec.io.vocab_size == 16 and task.spec.io.d_output == 10 and task.spec.length == 8
    data = task.split("train")
    assert data.y.tolist() == [9, 4, 4]
    assert data.x[0].tolist() == [12, 3, 10, 15, 0, 0, 0, 0]  # [MAX 2 9 ]
    assert data.x[1].tolist() == [11, 5, 14, 8, 9, 15, 7, 15]  # [MIN 4 [SM 7 8 ] 6 ]
    assert data.x[2].tolist() == [13, 4, 6, 15, 0, 0, 0, 0]  # [MED 3 5 ]
    # Same tokens as the generator's vocabulary; truncation keeps the first max_length.
    short = LRA(LRAConfig(data_dir=str(tmp_path), subtask="listops", max_length=3, readout="last", n_train=2))
    assert short.split("train").x.tolist() == [[12, 3, 10], [11, 5, 14]]
    left = LRA(LRAConfig(data_dir=str(tmp_path / "lra_release" / "listops-1000"), max_length=6, readout="last"))
    assert left.split("test").x[0].tolist() == [0, 0, 12, 3, 10, 15] and left.spec.causal


def test_lra_retrieval_and_text_read_release(tmp_path) -> None:
    write_release(tmp_path, subfolder="")
    task = LRA(LRAConfig(data_dir=str(tmp_path), subtask="retrieval", max_length=4))
    check_spec(task, {"train": 2, "val": 2, "test": 2})
    assert task.spec.length == 9 and task.spec.io.vocab_size == 258 and task.spec.io.d_output == 2
    data = task.split("val")
    assert data.y.tolist() == [1, 0]
    b = lambda s: [c + 1 for c in s.encode("utf-8")]  # noqa: E731
    assert data.x[0].tolist() == b("ab") + [0, 0] + [257] + b("xyz") + [0]
    assert data.x[1].tolist() == b("hél") + [257] + [0, 0, 0, 0]  # "é" is 2 bytes; cut at 4 bytes
    left = LRA(LRAConfig(data_dir=str(tmp_path), subtask="retrieval", max_length=4, readout="last"))
    assert left.split("test").x[0].tolist() == [0, 0] + b("ab") + [257] + [0] + b("xyz")

    text = LRA(LRAConfig(data_dir=str(tmp_path), subtask="text", max_length=5))
    check_spec(text, {"train": 3, "val": 3, "test": 3})
    assert text.split("test") is text.split("val")  # the same reviews (LRA's), read and held once
    assert len(LRA(LRAConfig(data_dir=str(tmp_path), subtask="text", max_length=5, n_val=2)).split("val")) == 2
    assert text.spec.io.vocab_size == 257
    data = text.split("train")
    assert data.y.tolist() == [0, 1, 0]  # negatives and positives alternate
    assert data.x.tolist() == [b("bad") + [0, 0], b("good") + [0], b("awful")]


def test_lra_missing_data_fails_when_built(tmp_path) -> None:
    for unset in ("", None):  # None: conf/task/lra.yaml's default
        with pytest.raises(ValueError, match="task.data_dir='' is not valid: LRA listops reads released files") as err:
            LRA(LRAConfig(data_dir=unset))
        assert "\n" not in str(err.value)
    with pytest.raises(FileNotFoundError, match="not a folder") as err:
        LRA(LRAConfig(data_dir=str(tmp_path / "nowhere")))
    assert "\n" not in str(err.value)
    expected = str(tmp_path / "listops-1000" / "basic_train.tsv")
    with pytest.raises(FileNotFoundError) as err:
        LRA(LRAConfig(data_dir=str(tmp_path), subtask="listops"))
    message = str(err.value)
    assert "\n" not in message and expected in message and "listops-1000/basic_{train,val,test}.tsv" in message
    write_release(tmp_path)
    (tmp_path / "lra_release" / "tsv_data" / "new_aan_pairs.eval.tsv").unlink()
    with pytest.raises(FileNotFoundError, match="new_aan_pairs.eval.tsv") as err:
        LRA(LRAConfig(data_dir=str(tmp_path), subtask="retrieval"))
    assert "\n" not in str(err.value) and "tsv_data/new_aan_pairs.{train,eval,test}.tsv" in str(err.value)


def test_lra_bad_rows_name_the_line(tmp_path) -> None:
    write_release(tmp_path)
    path = tmp_path / "lra_release" / "listops-1000" / "basic_val.tsv"
    path.write_text("Source\tTarget\n( [MAX 2 ) ]\t12\n", encoding="utf-8")
    task = LRA(LRAConfig(data_dir=str(tmp_path)))
    with pytest.raises(ValueError, match="line 2"):
        task.split("val")


def test_lra_unreadable_rows_name_the_file_and_line(tmp_path) -> None:
    """Each is one line naming the file and line, raised by Task.load (before training)."""
    write_release(tmp_path)
    path = tmp_path / "lra_release" / "listops-1000" / "basic_test.tsv"
    good = "Source\tTarget\n( [MAX 2 ) ]\t2\n"
    cases = [
        (good.encode() + b"( [MAX \xff ) ]\t2\n", r"basic_test.tsv: line 3 is not UTF-8 text"),
        (good.encode() + b"( [MAX 2 ) ]\t2\textra\n", r"line 3 has 3 tab-separated fields; expected 2"),
        (good.encode() + b"\t2\n", r"line 3 has an empty Source"),
        (b"Source\tTarget\n", r"holds no rows for split 'test'"),
    ]
    for content, message in cases:
        path.write_bytes(content)
        task = LRA(LRAConfig(data_dir=str(tmp_path)))
        with pytest.raises(ValueError, match=message) as err:
            task.load()
        assert "\n" not in str(err.value)
    path.write_bytes("\ufeff".encode() + good.encode())  # a byte-order mark before the header
    assert LRA(LRAConfig(data_dir=str(tmp_path))).split("test").y.tolist() == [2]
    with pytest.raises(ValueError, match=r"task.n_train=5 is not valid: .*basic_train.tsv' holds 3 rows"):
        LRA(LRAConfig(data_dir=str(tmp_path), n_train=5)).load()


def test_lra_retrieval_keeps_bytes_and_text_needs_both_classes(tmp_path) -> None:
    write_release(tmp_path, subfolder="")
    path = tmp_path / "tsv_data" / "new_aan_pairs.train.tsv"
    path.write_bytes(b"1\tp1\tp2\tx\xe9y\tz\rw\n")  # Latin-1 é, and a bare \r inside a document
    data = LRA(LRAConfig(data_dir=str(tmp_path), subtask="retrieval", max_length=4)).split("train")
    assert data.x[0].tolist() == [ord("x") + 1, 0xE9 + 1, ord("y") + 1, 0, 257, ord("z") + 1, 13 + 1, ord("w") + 1, 0]
    for review in (tmp_path / "aclImdb" / "train" / "pos").iterdir():
        review.unlink()
    with pytest.raises(ValueError, match=r"LRA text: no \*.txt review in '.*train/pos'"):
        LRA(LRAConfig(data_dir=str(tmp_path), subtask="text")).load()


# --- configuration errors ---------------------------------------------------------------

BAD = [
    (ListOpsConfig, dict(max_depth=1), "max_depth"),
    (ListOpsConfig, dict(min_args=0), "min_args"),
    (ListOpsConfig, dict(min_args=5, max_args=3), "max_args"),
    (ListOpsConfig, dict(leaf_prob=1.0), "leaf_prob"),
    (ListOpsConfig, dict(min_length=200, max_length=100), "min_length"),
    (ListOpsConfig, dict(max_depth=2, max_args=3, min_length=10), "min_length"),
    (ListOpsConfig, dict(n_train=0), "n_train"),
    (ListOpsConfig, dict(max_length=2.5), "max_length"),
    (ListOpsConfig, dict(readout="all"), "readout"),
    (PathfinderConfig, dict(image_size=8), "image_size"),
    (PathfinderConfig, dict(contour_length=1), "contour_length"),
    (PathfinderConfig, dict(num_distractors=-1), "num_distractors"),
    (PathfinderConfig, dict(paddle_length=20.0), "paddle_length"),
    (PathfinderConfig, dict(paddle_gap=0.0), "paddle_gap"),
    (PathfinderConfig, dict(thickness=0.1), "thickness"),
    (PathfinderConfig, dict(marker_radius=0.0), "marker_radius"),
    (PathfinderConfig, dict(seed_distance=30.0), "seed_distance"),
    (PathfinderConfig, dict(continuity=0.0), "continuity"),
    (PathfinderConfig, dict(n_val=0), "n_val"),
    (PathfinderConfig, dict(readout="all"), "readout"),
    (LRAConfig, dict(subtask="image"), "subtask"),
    (LRAConfig, dict(max_length=0), "max_length"),
    (LRAConfig, dict(n_test=0), "n_test"),
    (LRAConfig, dict(readout="all"), "readout"),
    (LRAConfig, dict(data_dir=3), "data_dir"),
]


@pytest.mark.parametrize("config_cls,values,field", BAD, ids=[f"{c.__name__}-{f}" for c, _, f in BAD])
def test_bad_config_names_the_field(config_cls, values: dict, field: str) -> None:
    with pytest.raises(ValueError, match=f"task.{field}="):
        config_cls(**values)


def test_default_configs_are_valid() -> None:
    for config_cls in (ListOpsConfig, PathfinderConfig, LRAConfig):
        config_cls()
    assert PathfinderConfig().params().link_distance == 2
