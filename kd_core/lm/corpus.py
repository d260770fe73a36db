"""Text corpora for the character-level language models, none downloaded at run time.

- ``pydoc`` (the default): the help texts of Python's own ``help()`` system, shipped in the
  standard library as ``pydoc_data.topics`` (about 0.46 MB of English technical prose, about
  100 distinct characters). It needs nothing beyond Python itself, so the README's set-up
  already has it on every machine, and its small alphabet suits a character model that
  trains in minutes on a CPU.
- ``fortunes``: the English fortune cookies of Debian's ``fortunes`` package
  (``/usr/share/games/fortunes``), when installed.
- ``tang-song``: 300 Tang poems and 100 Song lyrics from Debian's ``fortunes-zh``, when
  installed — a Chinese corpus with a large alphabet (about 2,500 characters).
- ``file:PATH``: any UTF-8 text file of your own; blank lines separate its documents.

A corpus is cut into documents, the documents shuffled with a fixed seed and dealt into
train / validation / test (90 / 5 / 5 % of the characters), so a split never changes
between runs. The vocabulary is every character of the corpus, sorted.
"""

from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import DataUnavailableError

FORTUNES_DIR = Path("/usr/share/games/fortunes")
# the Chinese files of fortunes-zh and the files of fortunes that are not English prose
_NOT_ENGLISH = {"chinese", "tang300", "song100", "art", "ascii-art", "translate-me"}
CHUNK = 2000  # documents longer than this many characters are cut into pieces before the split
SPLIT_SEED = 1234
FRACTIONS = (0.90, 0.05, 0.05)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_OVERSTRIKE = re.compile(r".\x08")


@dataclass(frozen=True)
class CorpusInfo:
    name: str
    title: str
    language: str  # en | zh
    source: str  # where the text comes from
    install: str  # how to get it when missing ("" when it is always there)


CORPORA = {
    "pydoc": CorpusInfo(
        "pydoc",
        "Python's help texts (pydoc_data, ships with Python)",
        "en",
        "pydoc_data.topics (standard library)",
        "",
    ),
    "fortunes": CorpusInfo(
        "fortunes",
        "English fortune cookies (Debian fortunes)",
        "en",
        str(FORTUNES_DIR),
        "sudo apt-get install fortunes",
    ),
    "tang-song": CorpusInfo(
        "tang-song",
        "Tang poems and Song lyrics (Debian fortunes-zh)",
        "zh",
        str(FORTUNES_DIR / "tang300") + ", " + str(FORTUNES_DIR / "song100"),
        "sudo apt-get install fortunes-zh",
    ),
}
DEFAULT_CORPUS = "pydoc"


@dataclass
class Corpus:
    name: str
    train: str
    val: str
    test: str
    chars: str  # the vocabulary, sorted
    source: str
    stoi: dict = field(repr=False, default_factory=dict)

    def __post_init__(self):
        self.stoi = {c: i for i, c in enumerate(self.chars)}

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> torch.Tensor:
        """Character ids; a character outside the vocabulary becomes a space (or id 0)."""
        fallback = self.stoi.get(" ", 0)
        return torch.tensor([self.stoi.get(c, fallback) for c in text], dtype=torch.long)

    def unknown(self, text: str) -> list[str]:
        """The characters of ``text`` that the vocabulary lacks."""
        return sorted({c for c in text if c not in self.stoi})

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def summary(self) -> dict:
        return {
            "name": self.name,
            "source": self.source,
            "vocab_size": self.vocab_size,
            "train_chars": len(self.train),
            "val_chars": len(self.val),
            "test_chars": len(self.test),
        }


def fortunes_dir() -> Path:
    """Where Debian puts the fortune files (``KD_FORTUNES_DIR`` overrides it)."""
    return Path(os.environ.get("KD_FORTUNES_DIR") or FORTUNES_DIR)


def read_fortune_file(path: Path) -> list[str]:
    """The entries of a fortune file (separated by lines holding only ``%``), colour codes removed."""
    text = _ANSI.sub("", Path(path).read_text(encoding="utf-8", errors="replace"))
    text = _OVERSTRIKE.sub("", text)  # "_\bx": the underlining of old terminals
    entries = re.split(r"^%\s*$", text, flags=re.M)
    return [e.strip("\n") for e in entries if e.strip()]


def _missing(name: str, what: str) -> DataUnavailableError:
    info = CORPORA[name]
    return DataUnavailableError(
        f"corpus '{name}' needs {what}, which is not installed; install it with: {info.install}"
    )


def _documents(name: str) -> tuple[list[str], str]:
    if name == "pydoc":
        try:
            from pydoc_data.topics import topics
        except ImportError:  # some distributions split it out of the standard library
            raise DataUnavailableError(
                "corpus 'pydoc' needs the standard library's pydoc_data module, which this Python lacks "
                "(on Debian: sudo apt-get install libpython3-stdlib); or use --corpus fortunes"
            ) from None
        return [topics[k] for k in sorted(topics)], CORPORA[name].source
    folder = fortunes_dir()
    if name == "fortunes":
        files = []
        if folder.is_dir():
            files = [
                p
                for p in sorted(folder.iterdir())
                if p.is_file() and not p.suffix and p.name not in _NOT_ENGLISH and not p.is_symlink()
            ]
        if not files:
            raise _missing(name, f"the English fortune files in {folder}")
        return [e for p in files for e in read_fortune_file(p)], str(folder)
    if name == "tang-song":
        files = [folder / "tang300", folder / "song100"]
        if not all(p.is_file() for p in files):
            raise _missing(name, f"{files[0]} and {files[1]}")
        return [e for p in files for e in read_fortune_file(p)], ", ".join(map(str, files))
    if name.startswith("file:"):
        path = Path(name[5:]).expanduser()
        if not path.is_file():
            raise DataUnavailableError(f"corpus file {path} does not exist")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise DataUnavailableError(f"corpus file {path} is not UTF-8 text") from None
        docs = [d.strip("\n") for d in re.split(r"\n\s*\n", text) if d.strip()]
        return docs, str(path)
    raise DataUnavailableError(f"unknown corpus '{name}'; choose one of {', '.join(CORPORA)} or file:PATH")


def split(documents: list[str], seed: int = SPLIT_SEED, fractions=FRACTIONS) -> tuple[str, str, str]:
    """Shuffle the documents (long ones cut into CHUNK-character pieces) with ``seed`` and deal
    them into train / validation / test by their share of the characters."""
    pieces = [d[i : i + CHUNK] for d in documents for i in range(0, len(d), CHUNK)]
    random.Random(seed).shuffle(pieces)
    total = sum(len(p) + 2 for p in pieces)
    parts: list[list[str]] = [[], [], []]
    done = 0
    edges = (fractions[0] * total, (fractions[0] + fractions[1]) * total)
    for p in pieces:
        k = 0 if done < edges[0] else 1 if done < edges[1] else 2
        parts[k].append(p)
        done += len(p) + 2
    # tiny corpora: every split gets at least one piece
    for k in (2, 1):
        if not parts[k] and len(parts[0]) > 1:
            parts[k].append(parts[0].pop())
    return tuple("\n\n".join(ps) + "\n\n" for ps in parts)


_cache: dict[str, Corpus] = {}


def load(name: str = DEFAULT_CORPUS) -> Corpus:
    """The corpus ``name`` (see ``CORPORA``, or ``file:PATH``), split and with its vocabulary."""
    key = f"{name}|{fortunes_dir()}"
    if key in _cache:
        return _cache[key]
    docs, source = _documents(name)
    text_chars = sum(len(d) for d in docs)
    if text_chars < 200:
        raise DataUnavailableError(f"corpus '{name}' has only {text_chars} characters; a language model needs more")
    train, val, test = split(docs)
    chars = "".join(sorted(set(train + val + test)))
    corpus = Corpus(name, train, val, test, chars, source)
    _cache[key] = corpus
    return corpus


def available() -> dict[str, str | None]:
    """Each named corpus: None when it can be loaded, else the message saying how to get it."""
    out = {}
    for name in CORPORA:
        try:
            _documents(name)
            out[name] = None
        except DataUnavailableError as e:
            out[name] = str(e)
    return out
