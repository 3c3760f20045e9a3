import gzip
import hashlib
import io
import os
import pickle
import shutil
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from rnas.config import ConfigError, from_dict
from rnas.data import (AugmentConfig, Corpus, DataConfig, ImageBatches, ImageSplit, batchify, fixed_batches,
                       get_batch, load_split, prepare_dataset)
from rnas.data import text
from rnas.data.images import class_balanced_order, cutout, random_crop
from rnas.data.prepare import resized
from rnas.data.text import CorpusError, TextDataConfig, load_prepared_corpus, prepare_corpus
from rnas.errors import DataError
from tests.helpers import write_image, write_image_folder

SHARED_DATA = Path(__file__).parents[2] / "shared/data"
CPU = torch.device("cpu")


def load_all(prepared: Path) -> dict[str, ImageSplit]:
    return {s: load_split(prepared, s) for s in ("train", "valid", "test") if (prepared / f"{s}.pt").exists()}


# --- config -------------------------------------------------------------------------------


@pytest.mark.parametrize("params, key", [
    ({"valid_fraction": 1.0}, "data.valid_fraction"),
    ({"valid_fraction": 0.5, "test_fraction": 0.5}, "data.test_fraction"),
    ({"dataset": "cifar10"}, "data.root"),
    ({"dataset": "imagefolder", "root": "x", "download": True}, "data.download"),
    ({"max_train": 0}, "data.max_train"),
    ({"resolution": 0}, "data.resolution"),
])
def test_data_config_errors_name_the_key(params, key):
    with pytest.raises(ConfigError, match=key):
        from_dict(DataConfig, params, "data")


# --- digits -------------------------------------------------------------------------------


def test_digits_prepare_shapes_meta_and_partition(tmp_path):
    meta = prepare_dataset(DataConfig(seed=3), tmp_path / "digits")
    splits = load_all(tmp_path / "digits")
    assert set(splits) == {"train", "valid", "test"}  # test held out by default for digits
    counts = {s: len(v) for s, v in splits.items()}
    assert counts == meta["counts"] and sum(counts.values()) == 1797
    assert 0.13 < counts["test"] / 1797 < 0.17 and 0.08 < counts["valid"] / 1797 < 0.12
    train = splits["train"]
    assert train.images.dtype == torch.uint8 and train.images.shape[1:] == (1, 8, 8)
    assert train.labels.dtype == torch.int64 and train.classes == [str(i) for i in range(10)]
    assert meta["image_shape"] == [1, 8, 8] and len(meta["source"]["sha256"]) == 64
    assert meta["config"]["seed"] == 3 and meta["seed"] == 3 and len(meta["fingerprint"]) == 64
    expected_mean = train.images.double().div(255).mean().item()
    assert meta["mean"][0] == pytest.approx(expected_mean) and train.mean == tuple(meta["mean"])
    assert meta["std"][0] == pytest.approx(train.images.double().div(255).std(unbiased=False).item())
    # the three splits are a partition of the whole set, with every class in each
    original = np.rint(load_digits().images * (255 / 16)).astype(np.uint8)
    prepared = torch.cat([s.images for s in splits.values()]).squeeze(1).numpy()
    assert sorted(x.tobytes() for x in prepared) == sorted(x.tobytes() for x in original)
    assert all(len(s.labels.unique()) == 10 for s in splits.values())


def test_digits_split_is_deterministic_per_seed(tmp_path):
    prepare_dataset(DataConfig(seed=0), tmp_path / "a")
    prepare_dataset(DataConfig(seed=0), tmp_path / "b")
    prepare_dataset(DataConfig(seed=1), tmp_path / "c")
    a, b, c = (load_split(tmp_path / x, "valid") for x in "abc")
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)


def test_max_train_is_class_balanced_and_leaves_valid_alone(tmp_path):
    prepare_dataset(DataConfig(seed=0), tmp_path / "all")
    meta = prepare_dataset(DataConfig(seed=0, max_train=100), tmp_path / "small")
    assert meta["counts"]["train"] == 100
    assert load_split(tmp_path / "small", "train").labels.bincount().tolist() == [10] * 10
    for split in ("valid", "test"):
        assert torch.equal(load_split(tmp_path / "all", split).images, load_split(tmp_path / "small", split).images)


def test_resolution_averages_areas_and_keeps_the_rows(tmp_path):
    prepare_dataset(DataConfig(seed=0), tmp_path / "full")
    meta = prepare_dataset(DataConfig(seed=0, resolution=4), tmp_path / "small")
    full, small = load_split(tmp_path / "full", "train"), load_split(tmp_path / "small", "train")
    assert full.images.shape[-2:] == (8, 8) and meta["image_shape"][1:] == [4, 4]
    assert torch.equal(full.labels, small.labels)
    # each pixel is the rounded mean of its 2 x 2 block
    blocks = full.images.double().unfold(2, 2, 2).unfold(3, 2, 2).mean((-1, -2))
    assert (small.images.double() - blocks).abs().max() <= 0.5
    assert resized(torch.tensor([[[[0, 1], [2, 4]]]], dtype=torch.uint8), 1).item() == 2  # 7/4 rounds to 2


def test_zero_valid_fraction_leaves_no_valid_split(tmp_path):
    meta = prepare_dataset(DataConfig(valid_fraction=0.0), tmp_path / "d")
    assert meta["counts"]["valid"] == 0
    with pytest.raises(FileNotFoundError, match="data.valid_fraction"):
        load_split(tmp_path / "d", "valid")


# --- cifar10 ------------------------------------------------------------------------------


def numpy1_pickle(obj) -> bytes:
    """A pickle naming numpy's array constructor as numpy 1 did (as in the real CIFAR files)."""
    return pickle.dumps(obj, protocol=3).replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")


def write_cifar_fixture(root: Path, per_batch: int = 6, n_test: int = 4) -> Path:
    """CIFAR-10's python layout: rows of 3072 bytes, channel-major; byte j of image k is (k + j) % 256."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)

    def batch(first: int, n: int) -> dict:
        data = (np.arange(first, first + n)[:, None] + np.arange(3072)) % 256
        return {b"data": data.astype(np.uint8), b"labels": [k % 10 for k in range(first, first + n)]}

    for i in range(5):
        (folder / f"data_batch_{i + 1}").write_bytes(numpy1_pickle(batch(i * per_batch, per_batch)))
    (folder / "test_batch").write_bytes(pickle.dumps(batch(200, n_test)))
    names = [f"class{i}".encode() for i in range(10)]
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}))
    return folder


def test_cifar10_from_python_batches(tmp_path):
    write_cifar_fixture(tmp_path / "raw")
    meta = prepare_dataset(DataConfig(dataset="cifar10", root=str(tmp_path / "raw"), valid_fraction=0.34),
                           tmp_path / "prep")
    splits = load_all(tmp_path / "prep")
    assert meta["counts"] == {"train": 20, "valid": 10, "test": 4}
    assert meta["taken_from"] == {"train": "train", "valid": "train", "test": "test"}
    assert splits["train"].classes == [f"class{i}" for i in range(10)]
    assert splits["train"].images.shape == (20, 3, 32, 32)
    # the first byte k identifies the source image: train + valid is a partition of the 30, labels kept
    ids = {s: splits[s].images[:, 0, 0, 0].long() for s in splits}
    assert sorted(torch.cat([ids["train"], ids["valid"]]).tolist()) == list(range(30))
    assert ids["test"].tolist() == [200, 201, 202, 203]
    layout = torch.arange(3072).view(1, 3, 32, 32)  # channel, row, column
    for s in splits:
        assert torch.equal(splits[s].labels, ids[s] % 10)
        assert torch.equal(splits[s].images.long(), (ids[s].view(-1, 1, 1, 1) + layout) % 256)


def test_cifar10_missing_data_names_root_and_download_key(tmp_path):
    with pytest.raises(FileNotFoundError, match="data.root") as error:
        prepare_dataset(DataConfig(dataset="cifar10", root=str(tmp_path)), tmp_path / "prep")
    assert str(tmp_path) in str(error.value) and "data.download" in str(error.value)
    assert not (tmp_path / "prep").exists()


def test_cifar10_batch_files_may_not_run_code(tmp_path):
    folder = write_cifar_fixture(tmp_path / "raw")
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": os.getcwd}))
    with pytest.raises(DataError, match="data_batch_3 is not a CIFAR-10 batch file .*getcwd"):
        prepare_dataset(DataConfig(dataset="cifar10", root=str(tmp_path / "raw")), tmp_path / "prep")


# --- imagefolder --------------------------------------------------------------------------


def make_tar_gz(folder: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        for entry in sorted(folder.iterdir()):
            tar.add(entry, arcname=entry.name)
    return archive


def test_imagefolder_without_splits_carves_valid_and_test(tmp_path):
    root = write_image_folder(tmp_path / "src", {"": 10})
    write_image(root / "cat" / "._000.jpg", 0)   # macOS resource-fork junk is skipped
    (root / "dog" / "notes.txt").write_text("not an image")
    cfg = DataConfig(dataset="imagefolder", root=str(root), valid_fraction=0.2, test_fraction=0.1, seed=1)
    meta = prepare_dataset(cfg, tmp_path / "prep")
    assert meta["counts"] == {"train": 21, "valid": 6, "test": 3}
    assert meta["classes"] == ["cat", "dog", "emu"] and meta["image_shape"] == [3, 5, 6]
    splits = load_all(tmp_path / "prep")
    assert all(s.labels.bincount().tolist() == [len(s) // 3] * 3 for s in splits.values())  # stratified
    # the green channel (255 - k for class 0 and so on) identifies the source file: a partition
    seen = sorted(torch.cat([s.images[:, 1, 2, 2] for s in splits.values()]).tolist())
    expected = sorted(255 - (40 * c + k) for c in range(3) for k in range(10))
    assert all(abs(a - b) <= 2 for a, b in zip(seen, expected))  # JPEG rounding


def test_imagefolder_tar_gz_equals_folder_and_uses_its_splits(tmp_path):
    folder = write_image_folder(tmp_path / "src", {"train": 4, "val": 2, "test": 3})
    archive = make_tar_gz(folder, tmp_path / "src.tar.gz")
    for name, root in (("from_folder", folder), ("from_tar", archive)):
        meta = prepare_dataset(DataConfig(dataset="imagefolder", root=str(root), valid_fraction=0.5), tmp_path / name)
        assert meta["counts"] == {"train": 12, "valid": 6, "test": 9}
        assert meta["taken_from"] == {"train": "train", "valid": "valid", "test": "test"}
    assert meta["source"]["kind"] == "tar.gz file"
    assert meta["fingerprint"] != prepare_dataset(DataConfig(dataset="imagefolder", root=str(archive), seed=1),
                                                  tmp_path / "reseeded")["fingerprint"]
    a, b = load_all(tmp_path / "from_folder"), load_all(tmp_path / "from_tar")
    for split in a:
        assert torch.equal(a[split].images, b[split].images) and torch.equal(a[split].labels, b[split].labels)
    assert a["valid"].labels.tolist() == [0, 0, 1, 1, 2, 2]


def test_imagefolder_gray_images_become_rgb(tmp_path):
    root = tmp_path / "src"
    for cls in ("a", "b"):
        for k in range(5):
            write_image(root / cls / f"{k}.png", 10 * k, mode="L")
    prepare_dataset(DataConfig(dataset="imagefolder", root=str(root), valid_fraction=0.2), tmp_path / "prep")
    train = load_split(tmp_path / "prep", "train")
    assert train.images.shape[1] == 3 and torch.equal(train.images[:, 0], train.images[:, 2])


@pytest.mark.parametrize("breakage, match", [
    (lambda root: write_image(root / "valid" / "yak" / "0.jpg", 1), "'yak' is in the valid split but not in train"),
    (lambda root: write_image(root / "train" / "dog" / "999.jpg", 1, size=(7, 7)), "train/dog/999.jpg"),
    (lambda root: (root / "test").mkdir(), "'test' has no images"),
    (lambda root: write_image(root / "extra" / "dog" / "0.jpg", 1), "unknown split folder 'extra'"),
    (lambda root: write_image(root / "train" / "dog" / "deeper" / "0.jpg", 1), "train/dog/deeper/0.jpg"),
])
def test_imagefolder_errors_name_the_problem(tmp_path, breakage, match):
    root = write_image_folder(tmp_path / "src", {"train": 3, "valid": 1})
    breakage(root)
    with pytest.raises(ValueError, match=match) as error:
        prepare_dataset(DataConfig(dataset="imagefolder", root=str(root)), tmp_path / "prep")
    assert "data.root" in str(error.value)
    assert not (tmp_path / "prep").exists()


def test_imagefolder_missing_root_and_corrupt_image(tmp_path):
    cfg = DataConfig(dataset="imagefolder", root=str(tmp_path / "nowhere.tar.gz"))
    with pytest.raises(FileNotFoundError, match="data.search.root: .*nowhere.tar.gz"):
        prepare_dataset(cfg, tmp_path / "p", key="data.search")
    root = write_image_folder(tmp_path / "src", {"": 2})
    (root / "dog" / "001.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="data.root: .*src: cannot decode dog/001.jpg"):
        prepare_dataset(DataConfig(dataset="imagefolder", root=str(root), valid_fraction=0.0), tmp_path / "p")


def test_empty_carved_split_is_an_error(tmp_path):
    root = write_image_folder(tmp_path / "src", {"": 1})
    with pytest.raises(ValueError, match="valid split is empty"):
        prepare_dataset(DataConfig(dataset="imagefolder", root=str(root), valid_fraction=0.1), tmp_path / "p")


def test_failed_prepare_keeps_the_previous_output(tmp_path):
    prepare_dataset(DataConfig(), tmp_path / "prep")
    before = load_split(tmp_path / "prep", "train").images
    with pytest.raises(FileNotFoundError):
        prepare_dataset(DataConfig(dataset="cifar10", root=str(tmp_path / "none")), tmp_path / "prep")
    assert torch.equal(load_split(tmp_path / "prep", "train").images, before)


@pytest.mark.skipif(not (SHARED_DATA / "cifar10-train-jpg.tar.gz").exists(), reason="shared CIFAR-10 JPEGs absent")
def test_real_cifar10_jpegs_subsample(tmp_path):
    cfg = DataConfig(dataset="imagefolder", root=str(SHARED_DATA / "cifar10-train-jpg.tar.gz"),
                     valid_fraction=0.01, max_train=500)
    meta = prepare_dataset(cfg, tmp_path / "prep")
    assert meta["counts"] == {"train": 500, "valid": 500, "test": 0}
    assert meta["image_shape"] == [3, 32, 32] and len(meta["classes"]) == 10
    assert load_split(tmp_path / "prep", "train").labels.bincount().tolist() == [50] * 10
    assert meta["mean"] == pytest.approx([0.491, 0.482, 0.447], abs=0.02)


# --- batches ------------------------------------------------------------------------------


def toy_split(n: int = 20, classes: int = 4, size: int = 6, seed: int = 0) -> ImageSplit:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    labels = torch.arange(n) % classes
    return ImageSplit(images, labels, [str(c) for c in range(classes)], (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))


def test_batches_shapes_and_normalisation():
    split = toy_split()
    batches = ImageBatches(split, 8, CPU, shuffle=False)
    out = list(batches)
    assert len(batches) == len(out) == 3 and [len(y) for _, y in out] == [8, 8, 4]
    assert len(ImageBatches(split, 8, CPU, shuffle=False, drop_last=True)) == 2
    x = torch.cat([x for x, _ in out])
    mean, std = torch.tensor(split.mean).view(1, 3, 1, 1), torch.tensor(split.std).view(1, 3, 1, 1)
    assert x.dtype == torch.float32 and torch.allclose(x, (split.images / 255 - mean) / std, atol=1e-5)
    assert torch.equal(torch.cat([y for _, y in out]), split.labels)
    x_cl, _ = next(iter(ImageBatches(split, 8, CPU, shuffle=False, channels_last=True)))
    assert x_cl.is_contiguous(memory_format=torch.channels_last)


def labels_of(batches) -> list[list[int]]:
    return [y.tolist() for _, y in batches]


def test_batches_deterministic_per_seed_and_epoch():
    split = toy_split(n=20, classes=20)  # labels 0..19 name the samples
    first = ImageBatches(split, 5, CPU, shuffle=True, seed=7)
    epoch0, epoch1 = labels_of(first), labels_of(first)
    assert sorted(sum(epoch0, [])) == list(range(20)) and epoch0 != epoch1
    again = ImageBatches(split, 5, CPU, shuffle=True, seed=7)
    assert labels_of(again) == epoch0
    assert labels_of(ImageBatches(split, 5, CPU, shuffle=True, seed=8)) != epoch0
    again.set_epoch(1)
    assert labels_of(again) == epoch1


def test_augment_changes_images_keeps_labels_and_is_seeded():
    split = toy_split()
    plain = list(ImageBatches(split, 10, CPU, shuffle=False))
    augment = AugmentConfig(crop_padding=2, flip=True, cutout=3)
    augmented = list(ImageBatches(split, 10, CPU, shuffle=False, augment=augment, seed=1))
    repeat = list(ImageBatches(split, 10, CPU, shuffle=False, augment=augment, seed=1))
    for (x, y), (xa, ya), (xr, _) in zip(plain, augmented, repeat):
        assert torch.equal(y, ya) and xa.shape == x.shape and torch.equal(xa, xr)
        assert not torch.equal(x, xa)


def test_random_crop_offsets():
    images = torch.arange(2 * 1 * 4 * 4, dtype=torch.uint8).view(2, 1, 4, 4)
    centre = random_crop(images, 2, torch.full((2,), 0.5), torch.full((2,), 0.5))
    assert torch.equal(centre, images)  # offset = padding: the original
    top_left = random_crop(images, 2, torch.zeros(2), torch.zeros(2))
    assert torch.equal(top_left[:, :, 2:, 2:], images[:, :, :2, :2]) and top_left[:, :, :2].eq(0).all()
    mixed = random_crop(images, 1, torch.tensor([0.0, 0.99]), torch.tensor([0.99, 0.0]))
    assert torch.equal(mixed[0, :, 1:, :3], images[0, :, :3, 1:])  # shifted down, cropped from the right
    assert torch.equal(mixed[1, :, :3, 1:], images[1, :, 1:, :3])


def test_cutout_hole():
    x = torch.ones(2, 3, 8, 8)
    out = cutout(x, 4, torch.tensor([0.5, 0.0]), torch.tensor([0.5, 0.0]))
    assert out[0].eq(0).sum() == 3 * 16 and out[0, :, 2:6, 2:6].eq(0).all()
    assert out[1].eq(0).sum() == 3 * 4 and out[1, :, :2, :2].eq(0).all()  # clipped at the corner


def test_shards_partition_each_global_batch():
    split = toy_split(n=24)
    augment = AugmentConfig(crop_padding=1, cutout=2)
    whole = list(ImageBatches(split, 8, CPU, shuffle=True, augment=augment, seed=3))
    ranks = [list(ImageBatches(split, 8, CPU, shuffle=True, augment=augment, seed=3, shard=(r, 2))) for r in (0, 1)]
    assert len(whole) == len(ranks[0]) == len(ranks[1]) == 3
    for (x, y), (x0, y0), (x1, y1) in zip(whole, *ranks):
        assert torch.equal(y0, y[0::2]) and torch.equal(y1, y[1::2])
        assert torch.equal(x0, x[0::2]) and torch.equal(x1, x[1::2])
    with pytest.raises(ValueError, match="multiple of the world size"):
        ImageBatches(split, 7, CPU, shuffle=True, shard=(0, 2))


def test_fixed_batches_identical_and_balanced():
    split = toy_split(n=40, classes=4)
    first = fixed_batches(split, 3, 8, CPU)
    second = fixed_batches(split, 3, 8, CPU)
    assert len(first) == 3 and all(x.shape == (8, 3, 6, 6) for x, _ in first)
    for (x, y), (x2, y2) in zip(first, second):
        assert torch.equal(x, x2) and torch.equal(y, y2)
        assert y.bincount(minlength=4).tolist() == [2, 2, 2, 2]
    assert len(fixed_batches(split, 10, 16, CPU)) == 3  # capped by the split's 40 images


def test_class_balanced_order_prefixes():
    labels = torch.tensor([0] * 10 + [1] * 3 + [2] * 6)
    order = class_balanced_order(labels, torch.Generator().manual_seed(0))
    assert sorted(order.tolist()) == list(range(19))
    assert labels[order[:9]].bincount().tolist() == [3, 3, 3]
    assert labels[order[:15]].bincount().tolist() == [6, 3, 6]


# --- text ---------------------------------------------------------------------------------


def write_corpus(folder: Path, test: bool = True, gz_train: bool = False) -> Path:
    folder.mkdir(parents=True)
    train = " the cat sat \n the dog sat down \n"
    if gz_train:
        with gzip.open(folder / "train.txt.gz", "wt") as f:
            f.write(train)
    else:
        (folder / "train.txt").write_text(train)
    (folder / "valid.txt").write_text(" the dog sat \n")
    if test:
        (folder / "test.txt").write_text(" cat down \n")
    return folder


@pytest.mark.parametrize("gz_train", [False, True])
def test_corpus_reads_splits_and_builds_vocab_from_train(tmp_path, gz_train):
    corpus = Corpus.from_folder(write_corpus(tmp_path / "c", gz_train=gz_train))
    assert corpus.vocab == ["the", "cat", "sat", "<eos>", "dog", "down"]
    assert corpus.train.tolist() == [0, 1, 2, 3, 0, 4, 2, 5, 3]
    assert corpus.valid.tolist() == [0, 4, 2, 3] and corpus.test.tolist() == [1, 5, 3]
    assert not corpus.test_is_valid


def test_corpus_missing_test_and_unknown_words(tmp_path):
    folder = write_corpus(tmp_path / "c", test=False)
    with pytest.raises(FileNotFoundError, match="test.txt"):
        Corpus.from_folder(folder)
    corpus = Corpus.from_folder(folder, allow_missing_test=True)
    assert corpus.test_is_valid and torch.equal(corpus.test, corpus.valid)
    (folder / "test.txt").write_text("the zebra\n")
    with pytest.raises(ValueError, match="test.txt: word 'zebra'"):
        Corpus.from_folder(folder)


def test_batchify_and_get_batch():
    source = batchify(torch.arange(23), 4)
    assert source.shape == (5, 4) and source[:, 1].tolist() == [5, 6, 7, 8, 9]
    data, target = get_batch(source, 0, 3)
    assert data.shape == target.shape == (3, 4) and torch.equal(target, source[1:4])
    data, target = get_batch(source, 3, 3)
    assert data.shape == (1, 4) and torch.equal(target, source[4:5])


@pytest.mark.skipif(not (SHARED_DATA / "ptb" / "valid.txt").exists(), reason="shared Penn Treebank absent")
def test_real_penn_treebank():
    corpus = Corpus.from_folder(SHARED_DATA / "ptb", allow_missing_test=True)
    assert len(corpus.vocab) == 10000 and len(corpus.train) == 929589 and len(corpus.valid) == 73760


# --- prepared corpus ----------------------------------------------------------------------------


def text_config(root: Path, **overrides) -> TextDataConfig:
    return from_dict(TextDataConfig, {"root": str(root), **overrides}, "data.search")


@pytest.mark.parametrize("gz_train", [False, True])
def test_prepare_corpus_writes_ids_vocab_and_meta(tmp_path, gz_train):
    folder = write_corpus(tmp_path / "c", gz_train=gz_train)
    meta = prepare_corpus(text_config(folder), tmp_path / "prepared")
    corpus = load_prepared_corpus(tmp_path / "prepared")
    reference = Corpus.from_folder(folder)
    assert corpus.vocab == reference.vocab and not corpus.test_is_valid
    for split in ("train", "valid", "test"):
        assert torch.equal(getattr(corpus, split), getattr(reference, split))
    assert meta["counts"] == {"train": 9, "valid": 4, "test": 3} and meta["vocab_size"] == 6
    assert meta["source"]["files"] == ["train.txt.gz" if gz_train else "train.txt", "valid.txt", "test.txt"]


def test_prepare_corpus_train_prefix_keeps_the_vocabulary_and_changes_the_fingerprint(tmp_path):
    folder = write_corpus(tmp_path / "c")
    full = prepare_corpus(text_config(folder), tmp_path / "full")
    short = prepare_corpus(text_config(folder, max_train_tokens=4), tmp_path / "short")
    corpus = load_prepared_corpus(tmp_path / "short")
    assert corpus.train.tolist() == [0, 1, 2, 3] and len(corpus.vocab) == 6  # "dog", "down" from the rest
    assert short["counts"]["train"] == 4 and short["fingerprint"] != full["fingerprint"]
    moved = prepare_corpus(text_config(shutil.copytree(folder, tmp_path / "elsewhere")), tmp_path / "moved")
    assert moved["fingerprint"] == full["fingerprint"]  # where the files lie does not matter


def test_prepare_corpus_without_test_file(tmp_path):
    folder = write_corpus(tmp_path / "c", test=False)
    with pytest.raises(FileNotFoundError, match=r"data\.search\.root: .*no test\.txt or test\.txt\.gz "
                                                r"\(set data\.search\.allow_missing_test=true"):
        prepare_corpus(text_config(folder), tmp_path / "prepared", key="data.search")
    meta = prepare_corpus(text_config(folder, allow_missing_test=True), tmp_path / "prepared")
    corpus = load_prepared_corpus(tmp_path / "prepared")
    assert meta["test_is_valid"] and corpus.test_is_valid and torch.equal(corpus.test, corpus.valid)


@pytest.mark.parametrize("breakage, error, match", [
    (lambda f: (f / "valid.txt").unlink(), FileNotFoundError,
     r"data\.search\.root: .*: no valid\.txt or valid\.txt\.gz$"),
    (lambda f: (f / "train.txt").unlink(), FileNotFoundError, r"data\.search\.root: .*: no train\.txt"),
    (lambda f: (f / "valid.txt").write_text("the zebra sat\n"), CorpusError,
     r"data\.search\.root: .*valid\.txt: word 'zebra' is not in the training vocabulary"),
    (lambda f: shutil.rmtree(f), FileNotFoundError, r"data\.search\.root: .* is not a folder"),
])
def test_prepare_corpus_errors_name_the_key_and_file(tmp_path, breakage, error, match):
    folder = write_corpus(tmp_path / "c")
    breakage(folder)
    with pytest.raises(error, match=match):
        prepare_corpus(text_config(folder), tmp_path / "prepared", key="data.search")
    assert not (tmp_path / "prepared").exists()


@pytest.mark.parametrize("params, key", [
    ({}, "data.search.root: required"),
    ({"root": "x", "max_train_tokens": 0}, "data.search.max_train_tokens"),
    ({"root": "x", "dataset": "wikitext"}, "data.search.dataset"),
])
def test_text_data_config_errors_name_the_key(params, key):
    with pytest.raises(ConfigError, match=key):
        from_dict(TextDataConfig, params, "data.search")


def test_download_only_when_asked_and_only_missing_files(tmp_path, monkeypatch):
    """No network here: urlopen is replaced by a server of a small corpus."""
    folder = write_corpus(tmp_path / "c", test=False)
    requested = []

    def fake_urlopen(url, timeout):
        requested.append(url)
        return io.BytesIO(b" the cat \n")

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    with pytest.raises(FileNotFoundError, match="no test.txt"):
        prepare_corpus(text_config(folder), tmp_path / "prepared", key="data.search")
    assert requested == []
    with pytest.raises(DataError, match=r"data\.search\.root: the test\.txt downloaded from .* has md5 "):
        prepare_corpus(text_config(folder, download=True), tmp_path / "prepared", key="data.search")
    assert not (folder / "test.txt").exists()
    monkeypatch.setitem(text.PTB_MD5, "test", hashlib.md5(b" the cat \n").hexdigest())
    requested.clear()
    prepare_corpus(text_config(folder, download=True), tmp_path / "prepared")
    assert requested == [text.PTB_URL.format(split="test")]
    assert (folder / "test.txt").read_text() == " the cat \n"

    def offline(url, timeout):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(FileNotFoundError, match=r"data\.search\.root: .*no train\.txt and downloading .* failed"):
        prepare_corpus(text_config(tmp_path / "empty", download=True), tmp_path / "prepared", key="data.search")
