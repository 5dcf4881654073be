"""Tiny, learnable look-alikes of the hub datasets, with the hub's exact schema, in every local
format the sources read (save_to_disk, parquet, image folder).

Images: each class has its own colour and a brighter band at its own height, plus noise, so a
small CNN separates the classes within a few steps. Texts: each topic has its own keywords mixed
into common words. Labels cycle through the first `num_used` classes (every split holds each of
them when it has at least num_used rows); the ClassLabel keeps all the dataset's class names.

    write_cifar10(folder, n_per_split=20, fmt="save_to_disk") -> folder
    write_cifar100(...), write_tiny_imagenet(...), write_agnews(...)   (same arguments)
    cifar10_dict(...), ... -> DatasetDict (e.g. what a patched `datasets.load_dataset` returns)
    femnist_dict(sizes=(12, 5, 9), ...) -> DatasetDict: writer k holds sizes[k] samples
    shakespeare_dict({character_id: text}) -> DatasetDict: every 80-character window of each
        text and the character after it, LEAF's rows
    write(data, folder, fmt) -> folder      (any DatasetDict)
    expected_pool(data, image_col, label_col, mode) -> (x uint8 N x C x H x W, y), train first
"""

from __future__ import annotations

import colorsys
from pathlib import Path

import datasets
import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value
from PIL import Image as PILImage

datasets.disable_progress_bars()  # writing tiny sets needs no progress bars in test output

FORMATS = ("save_to_disk", "parquet", "imagefolder")
TEXT_FORMATS = ("save_to_disk", "parquet")

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                 "truck"]
CIFAR100_NAMES = [
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle",
    "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar",
    "cattle", "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile",
    "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster",
    "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster",
    "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange",
    "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy",
    "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal",
    "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar",
    "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger", "tractor",
    "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman",
    "worm"
]
CIFAR100_COARSE = [
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
    "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
    "large_man-made_outdoor_things", "large_natural_outdoor_scenes",
    "large_omnivores_and_herbivores", "medium_mammals", "non-insect_invertebrates", "people",
    "reptiles", "small_mammals", "trees", "vehicles_1", "vehicles_2"
]
TINY_NAMES = [f"n{1443537 + 97 * i:08d}" for i in range(200)]  # WordNet-id look-alikes, sorted
AGNEWS_NAMES = ["World", "Sports", "Business", "Sci/Tech"]
FEMNIST_NAMES = [str(d) for d in range(10)] + [chr(c) for c in range(ord("A"), ord("Z") + 1)] + [
    chr(c) for c in range(ord("a"), ord("z") + 1)]

FEATURES = {
    "cifar10": Features({"img": Image(), "label": ClassLabel(names=CIFAR10_NAMES)}),
    "cifar100": Features({"img": Image(), "fine_label": ClassLabel(names=CIFAR100_NAMES),
                          "coarse_label": ClassLabel(names=CIFAR100_COARSE)}),
    "tiny_imagenet": Features({"image": Image(), "label": ClassLabel(names=TINY_NAMES)}),
    "agnews": Features({"text": Value("string"), "label": ClassLabel(names=AGNEWS_NAMES)}),
    "femnist": Features({"image": Image(), "writer_id": Value("string"),
                         "hsf_id": Value("int64"), "character": ClassLabel(names=FEMNIST_NAMES)}),
    "shakespeare": Features({"character_id": Value("string"), "x": Value("string"),
                             "y": Value("string")}),
}
SPLITS = {"cifar10": ("train", "test"), "cifar100": ("train", "test"),
          "tiny_imagenet": ("train", "valid"), "agnews": ("train", "test"),
          "femnist": ("train",), "shakespeare": ("train",)}
# the hub's parquet layout: <config folder>/<split>-00000-of-00001.parquet
PARQUET_FOLDER = {"cifar10": "plain_text", "cifar100": "cifar100", "tiny_imagenet": "data",
                  "agnews": "data", "femnist": "data", "shakespeare": "default"}
SHAKESPEARE_WINDOW = 80

TOPIC_WORDS = [
    ["election", "minister", "treaty", "embassy", "parliament", "rebels"],
    ["match", "goal", "season", "coach", "tournament", "striker"],
    ["shares", "profit", "market", "investors", "merger", "earnings"],
    ["software", "internet", "chip", "researchers", "computer", "wireless"],
]
COMMON_WORDS = ["the", "a", "said", "on", "in", "after", "new", "report", "today", "of", "Reuters",
                "AP", "week", "its"]


def _labels(n: int, num_used: int, rng: np.random.Generator) -> np.ndarray:
    y = np.arange(n) % num_used
    rng.shuffle(y)
    return y


def class_image(label: int, num_used: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """H x W x 3 uint8: the class's colour, a brighter band at a class-dependent height, noise."""
    rgb = np.array(colorsys.hsv_to_rgb(label / max(num_used, 1), 0.9, 1.0)) * 230
    img = np.empty((size, size, 3))
    img[:] = 0.35 * rgb + 20
    band = label % 4
    img[band * size // 4 : (band + 1) * size // 4] = rgb + 25
    img += rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _image_dict(name: str, image_col: str, label_col: str, size: int, n_per_split: int,
                seed: int, num_used: int, grey_every: int = 0) -> DatasetDict:
    rng = np.random.default_rng(seed)
    features = FEATURES[name]
    splits = {}
    for split in SPLITS[name]:
        y = _labels(n_per_split, num_used, rng)
        images = []
        for i, label in enumerate(y):
            img = PILImage.fromarray(class_image(int(label), num_used, size, rng))
            if grey_every and i % grey_every == 0:
                img = img.convert("L")  # Tiny-ImageNet holds some greyscale images
            images.append(img)
        columns = {image_col: images, label_col: y.tolist()}
        if name == "cifar100":  # the coarse label is not used, but the hub has it
            columns["coarse_label"] = (y % 20).tolist()
        splits[split] = Dataset.from_dict(columns, features=features)
    return DatasetDict(splits)


def cifar10_dict(n_per_split: int = 20, seed: int = 0, num_used: int = 10) -> DatasetDict:
    """uoft-cs/cifar10's schema: img (Image, 32x32 RGB), label (ClassLabel 10); train, test."""
    return _image_dict("cifar10", "img", "label", 32, n_per_split, seed, num_used)


def cifar100_dict(n_per_split: int = 20, seed: int = 0, num_used: int = 5) -> DatasetDict:
    """uoft-cs/cifar100's schema: img, fine_label (ClassLabel 100), coarse_label (20)."""
    return _image_dict("cifar100", "img", "fine_label", 32, n_per_split, seed, num_used)


def tiny_imagenet_dict(n_per_split: int = 20, seed: int = 0, num_used: int = 5,
                       grey_every: int = 4) -> DatasetDict:
    """zh-plus/tiny-imagenet's schema: image (Image, 64x64; every grey_every-th greyscale),
    label (ClassLabel 200); train, valid."""
    return _image_dict("tiny_imagenet", "image", "label", 64, n_per_split, seed, num_used,
                       grey_every)


def topic_text(label: int, rng: np.random.Generator) -> str:
    """A short news-like text: common words with the topic's keywords, some punctuation."""
    words = list(rng.choice(COMMON_WORDS, size=int(rng.integers(5, 12))))
    words += list(rng.choice(TOPIC_WORDS[label], size=3, replace=False))
    rng.shuffle(words)
    words[0] = words[0].capitalize()
    return " ".join(words[:4]) + ", " + " ".join(words[4:]) + "."


def agnews_from_rows(rows: dict[str, list[tuple[str, int]]]) -> DatasetDict:
    """A DatasetDict with fancyzhx/ag_news's schema from (text, label) rows per split."""
    return DatasetDict({
        split: Dataset.from_dict({"text": [t for t, _ in r], "label": [lab for _, lab in r]},
                                 features=FEATURES["agnews"])
        for split, r in rows.items()
    })


def agnews_dict(n_per_split: int = 20, seed: int = 0, num_used: int = 4) -> DatasetDict:
    """fancyzhx/ag_news's schema: text (string), label (ClassLabel 4); train, test."""
    rng = np.random.default_rng(seed)
    rows = {}
    for split in SPLITS["agnews"]:
        y = _labels(n_per_split, num_used, rng)
        rows[split] = [(topic_text(int(label), rng), int(label)) for label in y]
    return agnews_from_rows(rows)


def writer_id(k: int) -> str:
    """An id in the hub's form (f0000_14: 8 characters)."""
    return f"f{k:04d}_{k % 50:02d}"


def femnist_dict(sizes: tuple[int, ...] = (12, 5, 9), seed: int = 0,
                 num_used: int = 4) -> DatasetDict:
    """flwrlabs/femnist's schema: image (Image, 28x28 greyscale), writer_id (string), hsf_id
    (int64, 0-7), character (ClassLabel 62); one split, train. Writer k holds sizes[k]
    samples, in a row, as the hub's rows come writer by writer."""
    rng = np.random.default_rng(seed)
    columns: dict[str, list] = {"image": [], "writer_id": [], "hsf_id": [], "character": []}
    for k, size in enumerate(sizes):
        for label in _labels(size, num_used, rng):
            img = PILImage.fromarray(class_image(int(label), num_used, 28, rng)).convert("L")
            columns["image"].append(img)
            columns["writer_id"].append(writer_id(k))
            columns["hsf_id"].append(k % 8)
            columns["character"].append(int(label))
    return DatasetDict({"train": Dataset.from_dict(columns, features=FEATURES["femnist"])})


def write_femnist(folder: Path, sizes: tuple[int, ...] = (12, 5, 9),
                  fmt: str = "save_to_disk", seed: int = 0, num_used: int = 4) -> Path:
    return write(femnist_dict(sizes, seed, num_used), folder, fmt, PARQUET_FOLDER["femnist"])


def shakespeare_dict(texts: dict[str, str]) -> DatasetDict:
    """flwrlabs/shakespeare's schema: character_id, x (80 characters), y (the next one), all
    strings; one split, train. A role's rows are every window of its text in order (LEAF's
    rows), the roles one after another."""
    columns: dict[str, list[str]] = {"character_id": [], "x": [], "y": []}
    w = SHAKESPEARE_WINDOW
    for role, text in texts.items():
        for i in range(len(text) - w):
            columns["character_id"].append(role)
            columns["x"].append(text[i:i + w])
            columns["y"].append(text[i + w])
    return DatasetDict({"train": Dataset.from_dict(columns, features=FEATURES["shakespeare"])})


def write_shakespeare(folder: Path, texts: dict[str, str], fmt: str = "save_to_disk") -> Path:
    if fmt not in TEXT_FORMATS:
        raise ValueError(f"Shakespeare is text: format one of {', '.join(TEXT_FORMATS)}")
    return write(shakespeare_dict(texts), folder, fmt, PARQUET_FOLDER["shakespeare"])


def _image_columns(data: DatasetDict) -> tuple[str, str]:
    features = next(iter(data.values())).features
    image = next(k for k, f in features.items() if isinstance(f, Image))
    label = next(k for k in ("fine_label", "character", "label") if k in features)
    return image, label


def write(data: DatasetDict, folder: Path, fmt: str = "save_to_disk",
          parquet_folder: str = "data") -> Path:
    """Write `data` as a save_to_disk folder, the hub's parquet layout, or an image folder
    <class name>/<split>_<row>.png (all splits together)."""
    folder = Path(folder)
    if fmt == "save_to_disk":
        data.save_to_disk(str(folder))
    elif fmt == "parquet":
        for split, ds in data.items():
            file = folder / parquet_folder / f"{split}-00000-of-00001.parquet"
            file.parent.mkdir(parents=True, exist_ok=True)
            ds.to_parquet(str(file))
    elif fmt == "imagefolder":
        image_col, label_col = _image_columns(data)
        for split, ds in data.items():
            names = ds.features[label_col].names
            for i, row in enumerate(ds):
                out = folder / names[row[label_col]] / f"{split}_{i:05d}.png"
                out.parent.mkdir(parents=True, exist_ok=True)
                row[image_col].save(out)
    else:
        raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    return folder


def write_cifar10(folder: Path, n_per_split: int = 20, fmt: str = "save_to_disk",
                  seed: int = 0, num_used: int = 10) -> Path:
    return write(cifar10_dict(n_per_split, seed, num_used), folder, fmt, PARQUET_FOLDER["cifar10"])


def write_cifar100(folder: Path, n_per_split: int = 20, fmt: str = "save_to_disk",
                   seed: int = 0, num_used: int = 5) -> Path:
    return write(cifar100_dict(n_per_split, seed, num_used), folder, fmt,
                 PARQUET_FOLDER["cifar100"])


def write_tiny_imagenet(folder: Path, n_per_split: int = 20, fmt: str = "save_to_disk",
                        seed: int = 0, num_used: int = 5, grey_every: int = 4) -> Path:
    return write(tiny_imagenet_dict(n_per_split, seed, num_used, grey_every), folder, fmt,
                 PARQUET_FOLDER["tiny_imagenet"])


def write_agnews(folder: Path, n_per_split: int = 20, fmt: str = "save_to_disk",
                 seed: int = 0, num_used: int = 4) -> Path:
    if fmt not in TEXT_FORMATS:
        raise ValueError(f"AG News is text: format one of {', '.join(TEXT_FORMATS)}")
    return write(agnews_dict(n_per_split, seed, num_used), folder, fmt, PARQUET_FOLDER["agnews"])


def expected_pool(data: DatasetDict, image_col: str, label_col: str,
                  mode: str = "RGB") -> tuple[np.ndarray, np.ndarray]:
    """What the pool of `data` must be: uint8 N x C x H x W (RGB: C = 3; L: C = 1) and labels,
    train split first, then the others by name."""
    order = sorted(data, key=lambda s: (s != "train", s))
    xs, ys = [], []
    for split in order:
        xs += [np.atleast_3d(np.asarray(img.convert(mode))).transpose(2, 0, 1)
               for img in data[split][image_col]]
        ys += data[split][label_col]
    return np.stack(xs), np.asarray(ys, dtype=np.int64)
