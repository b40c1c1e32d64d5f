"""Data sources (Fashion-MNIST IDX files, scikit-learn digits, synthetic, image folders,
``hf:`` datasets directories) and their loaders."""

from netslim.data.datasets import (
    DATASET_NAMES,
    DataInfo,
    DataOptions,
    ImageDataset,
    dataset_info,
    load_dataset,
    loader_info,
    make_loaders,
    subset_indices,
)
from netslim.data.fashion import FASHION_MNIST_DIR
from netslim.data.idx import read_idx, write_idx

__all__ = [
    "DATASET_NAMES",
    "FASHION_MNIST_DIR",
    "DataInfo",
    "DataOptions",
    "ImageDataset",
    "dataset_info",
    "load_dataset",
    "loader_info",
    "make_loaders",
    "read_idx",
    "subset_indices",
    "write_idx",
]
