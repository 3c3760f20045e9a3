"""Datasets: preparing image data once (``prepare``), loading and batching it (``images``), and a
word-level corpus for the RNN track (``text``)."""
from rnas.data.images import AugmentConfig, ImageBatches, ImageSplit, fixed_batches, load_split
from rnas.data.prepare import DataConfig, prepare_dataset
from rnas.data.text import Corpus, batchify, get_batch

__all__ = ["AugmentConfig", "Corpus", "DataConfig", "ImageBatches", "ImageSplit", "batchify", "fixed_batches",
           "get_batch", "load_split", "prepare_dataset"]
