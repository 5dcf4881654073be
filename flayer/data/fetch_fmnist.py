"""Fetch Fashion-MNIST from the Hugging Face hub and write it as gzipped IDX files.

For machines without Debian's `dataset-fashion-mnist` package:
    python -m flayer.data.fetch_fmnist [DIR]   (default ~/.cache/flayer/fashion-mnist)
"""

from __future__ import annotations

import argparse
import gzip
import sys
from pathlib import Path

import numpy as np

from flayer.data.sources.fmnist import FILES
from flayer.util.commands import module_command

HUB_ID = "zalando-datasets/fashion_mnist"


def write_idx(file: Path, data: np.ndarray) -> None:
    """Write uint8 data as a gzipped IDX file."""
    data = np.ascontiguousarray(data, dtype=np.uint8)
    header = bytes([0, 0, 0x08, data.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in data.shape
    )
    with gzip.open(file, "wb") as f:
        f.write(header + data.tobytes())


def split_to_arrays(split) -> tuple[np.ndarray, np.ndarray]:
    """A hub split (columns `image` as PIL images, `label`) -> uint8 images and labels."""
    images = np.stack([np.asarray(img, dtype=np.uint8) for img in split["image"]])
    labels = np.asarray(split["label"], dtype=np.uint8)
    return images, labels


def fetch(out: Path) -> None:
    from datasets import load_dataset

    out.mkdir(parents=True, exist_ok=True)
    ds = load_dataset(HUB_ID)
    for split, (kx, ky) in {"train": ("train_x", "train_y"), "test": ("test_x", "test_y")}.items():
        x, y = split_to_arrays(ds[split])
        write_idx(out / (FILES[kx] + ".gz"), x)
        write_idx(out / (FILES[ky] + ".gz"), y)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=module_command("flayer.data.fetch_fmnist"),
                                     description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, nargs="?", help="folder for the four IDX files",
                        default=Path("~/.cache/flayer/fashion-mnist"))
    args = parser.parse_args(argv)
    args.out = args.out.expanduser()
    try:
        fetch(args.out)
    except Exception as exc:  # the hub is unreachable, or the datasets library is offline
        print(
            f"could not fetch {HUB_ID} from the Hugging Face hub ({type(exc).__name__}: {exc}).\n"
            "Install Debian's dataset-fashion-mnist package instead, or copy the four IDX "
            "files into a folder and pass it as dataset.path=FOLDER.",
            file=sys.stderr,
        )
        return 1
    print(f"wrote Fashion-MNIST to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
