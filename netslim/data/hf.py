"""``--data hf:DIR``: a Hugging Face ``datasets`` directory (``save_to_disk``), read offline.

Splits: ``train`` and the first of ``validation`` / ``val`` / ``test``; a set without one holds out
``--val-split`` (default 0.2) of every class of ``train`` with a fixed seed. Columns: the label is
the ``ClassLabel`` feature (else a column named label/labels/target/class); the input is the
``Image`` feature, else the text column (a string feature, preferring text/sentence/content),
unless named by ``--image-column`` / ``--text-column`` / ``--label-column``.

Images go through the model's preprocessing (:mod:`netslim.data.preprocess`). Text is
tokenised with the tokenizer in the model's own directory (an ``hf:DIR`` model spec), truncated
to ``max_length`` and padded to the longest training sequence: samples are one tensor of token ids,
as netslim's training loop feeds one input. The model then also attends to padding (no attention
mask is passed); fine-tuning learns with it, and the same padding is used for scoring.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from netslim.errors import ConfigError, DataError

VAL_NAMES = ("validation", "val", "test")
LABEL_NAMES = ("label", "labels", "target", "class")
TEXT_NAMES = ("text", "sentence", "content", "document")


def _datasets() -> Any:
    try:
        import datasets
    except ImportError as exc:
        raise ConfigError("--data hf:DIR needs the datasets package: pip install datasets") from exc
    return datasets


@functools.lru_cache(maxsize=2)
def _load(path: str, stamp: int) -> Any:
    datasets = _datasets()
    try:
        return datasets.load_from_disk(path)
    except (FileNotFoundError, ValueError) as exc:
        raise DataError(f"hf:{path}: not a datasets save_to_disk directory ({exc})") from None


def _splits(path: Path, val_split: float | None) -> tuple[Any, Any, str]:
    """``(train, val, layout)``."""
    from netslim.data.folder import DEFAULT_VAL_SPLIT, check_val_split

    check_val_split(val_split)
    data = _load(str(path.resolve()), path.stat().st_mtime_ns)
    datasets = _datasets()
    if isinstance(data, datasets.Dataset):
        train, held_name = data, None
    else:
        names = list(data.keys())
        if "train" not in names:
            if len(names) != 1:
                raise DataError(f"hf:{path}: no 'train' split among {names}")
            names = ["train"]
            data = {"train": data[list(data.keys())[0]]}
        train = data["train"]
        held_name = next((n for n in VAL_NAMES if n in data), None)
    if held_name is not None:
        if val_split is not None:
            raise ConfigError(
                f"--val-split applies to a data set without a validation split; hf:{path} has "
                f"{held_name!r}"
            )
        return train, data[held_name], f"train + {held_name}"
    ratio = DEFAULT_VAL_SPLIT if val_split is None else val_split
    return train, None, f"train split {ratio:g}"


def _columns(train: Any, options: Any) -> tuple[str, str, str]:
    """``(kind, input column, label column)`` with kind ``"image"`` or ``"text"``."""
    datasets = _datasets()
    features = train.features
    for flag, name in (
        ("--image-column", options.image_column),
        ("--text-column", options.text_column),
        ("--label-column", options.label_column),
    ):
        if name is not None and name not in features:
            raise ConfigError(f"{flag} {name!r}: the data set's columns are {list(features)}")
    if options.image_column and options.text_column:
        raise ConfigError("give --image-column or --text-column, not both")
    label = options.label_column or next(
        (n for n, f in features.items() if isinstance(f, datasets.ClassLabel)),
        next((n for n in LABEL_NAMES if n in features), None),
    )
    if label is None:
        raise DataError(f"no label column among {list(features)}: name it with --label-column")
    if options.text_column:
        return "text", options.text_column, label
    image = options.image_column or next(
        (n for n, f in features.items() if isinstance(f, datasets.Image)), None
    )
    if image is not None:
        return "image", image, label
    strings = [
        n
        for n, f in features.items()
        if n != label and isinstance(f, datasets.Value) and f.dtype in ("string", "large_string")
    ]
    text = next((n for n in TEXT_NAMES if n in strings), strings[0] if strings else None)
    if text is None:
        raise DataError(
            f"no image or text column among {list(features)}: name one with --image-column "
            "or --text-column"
        )
    return "text", text, label


def _labels(dataset: Any, column: str) -> np.ndarray:
    labels = np.asarray(dataset[column])
    if labels.dtype.kind not in "iu":
        raise DataError(
            f"label column {column!r} holds {labels.dtype} values; class indices (ints) expected"
        )
    return labels.astype(np.int64)


def _split_pair(path: Path, options: Any) -> tuple[Any, Any, str, str, str, str]:
    """Train and validation ``Dataset`` objects plus kind, columns and layout."""
    from netslim.data.folder import DEFAULT_VAL_SPLIT, holdout

    train, val, layout = _splits(path, options.val_split)
    kind, column, label = _columns(train, options)
    if val is None:
        ratio = DEFAULT_VAL_SPLIT if options.val_split is None else options.val_split
        kept, held = holdout(_labels(train, label), ratio)
        train, val = train.select(kept), train.select(held)
    return train, val, kind, column, label, layout


def _num_classes(train: Any, label: str) -> int:
    feature = train.features[label]
    names = getattr(feature, "names", None)
    return len(names) if names else int(_labels(train, label).max()) + 1


def hf_info(path: Path, options: Any) -> Any:
    """The :class:`DataInfo` of ``hf:path`` (images: their usual shape before preprocessing)."""
    from netslim.data.base import DataInfo

    train, _, kind, column, label, layout = _split_pair(path, options)
    if kind == "image":
        channels, size = _probe(train, column)
        shape: tuple[int, ...] = (channels, *size)
    else:
        shape = (options.max_length,)
    return DataInfo(
        f"hf:{path}",
        input_shape=shape,
        num_classes=_num_classes(train, label),
        preprocessing=f"hf dataset ({layout}; {kind} column {column!r}, labels {label!r})",
    )


def _probe(dataset: Any, column: str, count: int = 64) -> tuple[int, tuple[int, int]]:
    from collections import Counter

    modes, sizes = Counter(), Counter()
    step = max(1, len(dataset) // count)
    for row in dataset.select(range(0, len(dataset), step)[:count]):
        image = row[column]
        modes[1 if image.mode in ("L", "1", "I", "I;16", "F") else 3] += 1
        sizes[(image.height, image.width)] += 1
    if not modes:
        raise DataError("the training split is empty")
    return modes.most_common(1)[0][0], sizes.most_common(1)[0][0]


def load_hf_split(
    path: Path,
    split: str,
    options: Any,
    model: Any,
    *,
    limit: int | None = None,
    seed: int = 0,
) -> Any:
    """One split (``"test"``: the validation split) as model inputs and labels."""
    from netslim.data.base import DataInfo, ImageDataset, subset_indices

    train, val, kind, column, label, layout = _split_pair(path, options)
    dataset = train if split == "train" else val
    labels = _labels(dataset, label)
    keep = subset_indices(labels, limit, seed) if limit is not None else np.arange(len(labels))
    dataset, labels = dataset.select(keep), labels[keep]
    classes = _num_classes(train, label)
    described = f"hf dataset ({layout}; {kind} column {column!r}, labels {label!r})"
    if kind == "image":
        from netslim.data.images import image_dataset
        from netslim.data.preprocess import image_preprocess

        channels, size = _probe(train, column)

        def sample(n: int) -> list[Any]:
            step = max(1, len(train) // n)
            return [row[column] for row in train.select(range(0, len(train), step)[:n])]

        preprocess = image_preprocess(model, channels, size, sample)
        info = DataInfo(
            f"hf:{path}",
            input_shape=preprocess.input_shape,
            num_classes=classes,
            preprocessing=f"{described}; {preprocess.source}",
        )
        return image_dataset(lambda i: dataset[int(i)][column], labels, preprocess, info)
    tokenizer = model_tokenizer(model)
    length = _token_length(tokenizer, train, column, options.max_length)
    encoded = tokenizer(
        list(dataset[column]),
        truncation=True,
        max_length=length,
        padding="max_length",
        return_tensors="pt",
    )
    info = DataInfo(
        f"hf:{path}",
        input_shape=(length,),
        num_classes=classes,
        preprocessing=f"{described}; {type(tokenizer).__name__}, {length} tokens, padded",
    )
    return ImageDataset(encoded["input_ids"], torch.as_tensor(labels), info)


def _token_length(tokenizer: Any, train: Any, column: str, max_length: int) -> int:
    lengths = [
        len(ids)
        for ids in tokenizer(list(train[column]), truncation=True, max_length=max_length)[
            "input_ids"
        ]
    ]
    return max(lengths or [1])


def model_tokenizer(model: Any) -> Any:
    """The tokenizer saved beside an ``hf:DIR`` model (offline), or a ConfigError naming why."""
    from netslim.core.history import get_spec

    source = str((get_spec(model) or {}).get("source", "")) if model is not None else ""
    if not source.startswith("hf:"):
        raise ConfigError(
            "text data is tokenised with the model's own tokenizer: use an hf:DIR model whose "
            f"directory holds one (got {source or 'no model'})"
        )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source[3:])
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{source}: no tokenizer in the model directory ({exc})") from None
