"""Long Range Arena (Tay et al. 2021) data read from the released files: ListOps, byte-level
text classification (IMDB) and byte-level document retrieval (AAN).

``data_dir`` is the folder extracted from LRA's ``lra_release.gz`` (``lra_release/``), or
the subtask's own folder. ``subtask`` picks what is read; for each, the folders tried, in
order, are ``data_dir/<folder>``, ``data_dir/lra_release/<folder>`` and ``data_dir``:

* ``listops`` (folder ``listops-1000``): ``basic_train.tsv``, ``basic_val.tsv``,
  ``basic_test.tsv``; tab-separated with a header naming the columns ``Source`` (the
  expression, e.g. ``( ( [MAX 2 ) 9 ) ]``) and ``Target`` (its value, 0..9). Tokens as in
  LRA's pipeline and in :mod:`.listops` (parentheses dropped, ``]`` a token; the same
  16-id vocabulary, :func:`.listops.tokenize`); the first ``max_length`` tokens are kept
  (default 2000, LRA's). 10 classes.
* ``retrieval`` (folder ``tsv_data``): ``new_aan_pairs.train.tsv``, ``.eval.tsv``,
  ``.test.tsv``; tab-separated without a header, quotes not special (as LRA reads them),
  columns ``label`` (0 or 1, possibly written as a float), ``id1``, ``id2``, ``text1``,
  ``text2``. Each text is read as UTF-8 bytes (LRA's byte "char" tokenizer: id = byte + 1,
  0 is padding) and cut to ``max_length`` bytes (default 4000, LRA's). The two documents
  share one sequence in a fixed two-tower layout of length ``2 * max_length + 1``:
  ``x[:D]`` = document 1, ``x[D]`` = separator (id 257), ``x[D + 1:]`` = document 2, each
  document padded to ``D = max_length``; a two-tower model splits at ``D``, a one-stream
  model reads across the separator. Vocabulary 258; 2 classes.
* ``text`` (folder ``aclImdb``): the IMDB reviews release (Maas et al. 2011) that LRA
  reads through TensorFlow Datasets: ``train/{neg,pos}/*.txt`` and
  ``test/{neg,pos}/*.txt`` (label 0 = neg, 1 = pos); as in LRA, the test reviews serve
  as the validation split too (read and held once). Bytes as for retrieval, cut to ``max_length`` (default
  4096, the usual "4K" setting; the LRA code's config default is 1000). Vocabulary 257;
  2 classes.
  Reviews are listed in sorted file-name order, negatives and positives alternating.

``n_train`` / ``n_val`` / ``n_test`` (``None`` = all) keep only the first rows of a split,
in file order. Every split is held in memory as int64 ids (e.g. all of ListOps' 96K
training rows at length 2000 take 1.5 GB; all of AAN's at 2 x 4000 about 9 GB), so
limit them on small machines.

Padding (0) and readout are as in :mod:`.listops`: ``readout='mean'`` (default,
non-causal) pads on the right, as LRA does, and the mean runs over the padding too;
``readout='last'`` (causal) pads on the left (each document within its half, for
retrieval), so the last position holds the sequence's last token.

Missing data fail when the task is built, with one line naming the missing path and the
expected layout; data that do not read (a malformed row, an empty split, text that is not
UTF-8 where text is expected, fewer rows than ``n_train``/``n_val``/``n_test`` ask for) fail
when a run loads its splits, before it trains (:meth:`ablate.tasks.Task.load`), with one
line naming the file and line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from models import IOSpec

from . import listops
from .base import Split, Task, TaskSpec

SUBTASKS = ("listops", "retrieval", "text")
FOLDER = {"listops": "listops-1000", "retrieval": "tsv_data", "text": "aclImdb"}
FILES = {
    "listops": {"train": "basic_train.tsv", "val": "basic_val.tsv", "test": "basic_test.tsv"},
    "retrieval": {"train": "new_aan_pairs.train.tsv", "val": "new_aan_pairs.eval.tsv",
                  "test": "new_aan_pairs.test.tsv"},
    "text": {"train": "train", "val": "test", "test": "test"},
}
LAYOUT = {
    "listops": "listops-1000/basic_{train,val,test}.tsv",
    "retrieval": "tsv_data/new_aan_pairs.{train,eval,test}.tsv",
    "text": "aclImdb/{train,test}/{neg,pos}/*.txt",
}
DEFAULT_MAX_LENGTH = {"listops": 2000, "retrieval": 4000, "text": 4096}
BYTE_VOCAB = 257  # 0 pad, byte b -> b + 1
SEPARATOR = 257  # retrieval: between the two documents


@dataclass
class LRAConfig:
    data_dir: str = ""
    subtask: str = "listops"
    max_length: int | None = None
    readout: str = "mean"
    n_train: int | None = None
    n_val: int | None = None
    n_test: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.data_dir, os.PathLike):
            self.data_dir = os.fspath(self.data_dir)
        if self.data_dir is None:  # the config's default: locate() says what to set
            self.data_dir = ""
        if not isinstance(self.data_dir, str):
            raise ValueError(f"task.data_dir={self.data_dir!r} is not valid; expected a path (a string)")
        if self.subtask not in SUBTASKS:
            raise ValueError(f"task.subtask={self.subtask!r} is not valid; expected one of {list(SUBTASKS)}")
        for name in ("max_length", "n_train", "n_val", "n_test"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"task.{name}={value!r} is not valid; expected null (all) or an integer >= 1")
        if self.readout not in ("mean", "last"):
            raise ValueError(f"task.readout={self.readout!r} is not valid; expected one of ['mean', 'last']")

    @property
    def length(self) -> int:
        """Tokens per sequence (ListOps, text) or bytes per document (retrieval)."""
        return DEFAULT_MAX_LENGTH[self.subtask] if self.max_length is None else self.max_length


def locate(cfg: LRAConfig) -> dict[str, Path]:
    """The path of each split's file (or, for ``text``, folder). Raises ValueError (no
    data_dir) or FileNotFoundError (a missing folder or file), each on one line."""
    sub = cfg.subtask
    expected = (
        f"expected task.data_dir to be the LRA release folder (lra_release/, holding {LAYOUT[sub]}) "
        f"or the {FOLDER[sub]} folder itself"
    )
    if not cfg.data_dir:
        raise ValueError(f"task.data_dir={cfg.data_dir!r} is not valid: LRA {sub} reads released files; {expected}")
    root = Path(cfg.data_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"LRA {sub}: data_dir {str(root)!r} is not a folder; {expected}")
    candidates = [root / FOLDER[sub], root / "lra_release" / FOLDER[sub], root]
    folder = next((c for c in candidates if (c / FILES[sub]["train"]).exists()), candidates[0])
    paths = {split: folder / name for split, name in FILES[sub].items()}
    needed = [paths[s] for s in ("train", "val", "test")]
    if sub == "text":
        needed = [paths[s] / label for s in ("train", "test") for label in ("neg", "pos")]
    for path in needed:
        if not path.exists():
            raise FileNotFoundError(f"LRA {sub}: missing {str(path)!r}; {expected}")
    return paths


def _bytes_row(out: torch.Tensor, data: bytes, left: bool) -> None:
    """Write ``data`` (at most len(out) bytes) as ids byte + 1 into ``out``, padded."""
    if not data:
        return
    ids = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(torch.int64) + 1
    if left:
        out[len(out) - len(ids) :] = ids
    else:
        out[: len(ids)] = ids


def _text_line(path: Path, number: int, raw: bytes, encoding: str = "utf-8") -> str:
    """Line ``number`` of ``path`` as text, without its line end; a ValueError naming both
    when it is not UTF-8."""
    try:
        return raw.rstrip(b"\r\n").decode(encoding)
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: line {number} is not UTF-8 text ({err.reason} at byte {err.start})") from None


def _read_listops(path: Path, length: int, left: bool, limit: int | None) -> Split:
    seqs, labels = [], []
    with open(path, "rb") as f:
        header = _text_line(path, 1, f.readline(), "utf-8-sig").split("\t")  # a byte-order mark is not a name
        if "Source" not in header or "Target" not in header:
            raise ValueError(f"{path}: line 1 is {header!r}; expected a header naming the columns Source and Target")
        src, tgt = header.index("Source"), header.index("Target")
        for number, raw in enumerate(f, start=2):
            if limit is not None and len(seqs) == limit:
                break
            line = _text_line(path, number, raw)
            if not line:
                continue
            fields = line.split("\t")
            if len(fields) != len(header):
                raise ValueError(f"{path}: line {number} has {len(fields)} tab-separated fields; expected "
                                 f"{len(header)}, as the header names {header}")
            try:
                tokens = listops.tokenize(fields[src])
                target = float(fields[tgt])
            except ValueError as err:
                raise ValueError(f"{path}: line {number} is not a ListOps row ({err})") from None
            if not tokens:
                raise ValueError(f"{path}: line {number} has an empty Source; expected a ListOps expression")
            if target not in range(listops.NUM_CLASSES):
                raise ValueError(f"{path}: line {number} has Target={fields[tgt]!r}; expected an integer 0..9")
            label = int(target)
            seqs.append(tokens[:length])
            labels.append(label)
    return Split(listops.pad(seqs, length, left), torch.tensor(labels, dtype=torch.int64))


def _read_retrieval(path: Path, length: int, left: bool, limit: int | None) -> Split:
    """Rows read as bytes: the documents' bytes are the ids (byte + 1), whatever their
    encoding, as LRA's byte tokenizer takes them; lines end at \\n alone."""
    rows = []
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            if limit is not None and len(rows) == limit:
                break
            line = line.rstrip(b"\r\n")
            if not line:
                continue
            fields = line.split(b"\t")
            if len(fields) != 5:
                raise ValueError(
                    f"{path}: line {number} has {len(fields)} tab-separated fields; "
                    "expected 5 (label, id1, id2, text1, text2)"
                )
            text = fields[0].decode("utf-8", errors="replace")
            try:
                label = float(text)
            except ValueError:
                raise ValueError(f"{path}: line {number} has label {text!r}; expected 0 or 1") from None
            if label not in (0.0, 1.0):
                raise ValueError(f"{path}: line {number} has label {text!r}; expected 0 or 1")
            rows.append((int(label), fields[3][:length], fields[4][:length]))
    x = torch.zeros(len(rows), 2 * length + 1, dtype=torch.int64)
    x[:, length] = SEPARATOR
    for i, (_, doc1, doc2) in enumerate(rows):
        _bytes_row(x[i, :length], doc1, left)
        _bytes_row(x[i, length + 1 :], doc2, left)
    return Split(x, torch.tensor([r[0] for r in rows], dtype=torch.int64))


def _read_text(folder: Path, length: int, left: bool, limit: int | None) -> Split:
    neg, pos = (sorted(p for p in (folder / label).glob("*.txt")) for label in ("neg", "pos"))
    for label, found in (("neg", neg), ("pos", pos)):
        if not found:
            raise ValueError(f"LRA text: no *.txt review in {str(folder / label)!r}; expected the extracted "
                             f"aclImdb release ({LAYOUT['text']})")
    files = [(path, label) for pair in zip(neg, pos) for path, label in zip(pair, (0, 1))]
    longer, label = (neg, 0) if len(neg) > len(pos) else (pos, 1)
    files += [(path, label) for path in longer[min(len(neg), len(pos)) :]]
    files = files[:limit]
    x = torch.zeros(len(files), length, dtype=torch.int64)
    for i, (path, _) in enumerate(files):
        _bytes_row(x[i], path.read_bytes()[:length], left)
    return Split(x, torch.tensor([label for _, label in files], dtype=torch.int64))


class LRA(Task):
    name = "lra"
    Config = LRAConfig

    def __init__(self, cfg: LRAConfig, data_seed: int = 0):
        super().__init__(cfg, data_seed)
        self.paths = locate(cfg)  # fail now, before any training, if the data are missing

    @property
    def val_is_test(self) -> bool:
        return self.paths["val"] == self.paths["test"]  # text: the test reviews serve as validation too

    @property
    def spec(self) -> TaskSpec:
        c = self.cfg
        vocab, classes, length = {
            "listops": (listops.VOCAB_SIZE, listops.NUM_CLASSES, c.length),
            "retrieval": (BYTE_VOCAB + 1, 2, 2 * c.length + 1),
            "text": (BYTE_VOCAB, 2, c.length),
        }[c.subtask]
        io = IOSpec(vocab_size=vocab, d_output=classes, readout=c.readout)
        return TaskSpec(name=self.name, io=io, length=length, causal=c.readout == "last", loss_on="pooled")

    def generate(self, split: str, generator: torch.Generator) -> Split:
        """The split read from its file; the released data are fixed, ``generator`` is unused."""
        c = self.cfg
        limits = {"train": c.n_train, "val": c.n_val, "test": c.n_test}
        limit = limits[split]
        for other, data in self._splits.items():  # text: validation and test are the same reviews, held once
            if self.paths[other] == self.paths[split] and limits[other] == limit:
                return data
        read = {"listops": _read_listops, "retrieval": _read_retrieval, "text": _read_text}[c.subtask]
        data = read(self.paths[split], c.length, c.readout == "last", limit)
        if len(data) == 0:
            raise ValueError(f"LRA {c.subtask}: {str(self.paths[split])!r} holds no rows for split {split!r}")
        if limit is not None and len(data) < limit:
            name = {"train": "n_train", "val": "n_val", "test": "n_test"}[split]
            raise ValueError(f"task.{name}={limit} is not valid: {str(self.paths[split])!r} holds {len(data)} rows; "
                             f"expected at most {len(data)}, or null (all)")
        return data
