"""A word-level language-modelling corpus (Penn Treebank layout) and its BPTT batching.

``train.txt``, ``valid.txt``, ``test.txt`` (each plain or ``.gz``); words are split on whitespace
and every line ends with ``<eos>``. The vocabulary comes from train alone, in order of first
appearance, so a word missing from it in valid or test is an error, not a silent ``<unk>``.
"""
from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import torch

EOS = "<eos>"


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


def batchify(ids: torch.Tensor, batch_size: int) -> torch.Tensor:
    """[T, B]: the stream cut into ``batch_size`` contiguous columns (the remainder dropped)."""
    steps = len(ids) // batch_size
    if steps < 2:
        raise ValueError(f"{len(ids)} tokens are too few for batch size {batch_size}")
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
    with opener(path, "rt", encoding="utf-8") as f:
        return [word for line in f for word in (*line.split(), EOS)]


def _encode(words: list[str], index: dict[str, int], path: Path) -> torch.Tensor:
    try:
        return torch.tensor([index[word] for word in words], dtype=torch.long)
    except KeyError as e:
        raise ValueError(f"{path}: word {e.args[0]!r} is not in the training vocabulary") from None
