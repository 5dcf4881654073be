"""Hugging Face hub datasets, read from the hub or from a local copy.

With `dataset.path` null the data comes from `datasets.load_dataset(hub_id)` (the local
Hugging Face cache serves it when the hub cannot be reached); otherwise `dataset.path` is a
local copy in one of these formats:

- a `save_to_disk` folder of a DatasetDict (`dataset_dict.json`) or of one Dataset
  (`state.json`, read as the split `train`);
- a folder (searched recursively) or a single file of parquet files with the hub's columns; a
  file's split is the word its name starts with (`train-00000-of-00001.parquet` -> train), or
  else the name of its folder (`train/0000.parquet` -> train);
- for image sets, an image folder `<class>/<image>` (columns `image` and `label`, whatever the
  hub calls them): sub-folders named 0, 1, ... keep their numbers as labels, other names are
  numbered in sorted order (as in `datasets`' imagefolder and torchvision's ImageFolder). It
  holds no other column: not FEMNIST's writers, which its natural clients need.

All splits are merged into one pool: `train` first, then the other splits sorted by name
(PFLlib merges train and test).

Each kind of storage is one `Storage` (storage.py: the interface, and the messages and checks
they share) in its own module: `remote` (the hub or its cache; `online` says which may be
asked), `saved` (save_to_disk), `parquet`, `imagefolder`. `locate` picks the one a
`dataset.path` holds.
"""

from flayer.data.hub.locate import locate
from flayer.data.hub.storage import Split, Storage, read_column, read_labels

__all__ = ["Split", "Storage", "locate", "read_column", "read_labels"]
