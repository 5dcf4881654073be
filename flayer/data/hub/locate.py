"""Which kind of storage holds a hub dataset: the hub (no `dataset.path`), or the local copy's
format. A missing path, or one in none of the accepted formats, is a DataError naming it."""

from __future__ import annotations

import os
from pathlib import Path

from flayer.data.hub.imagefolder import ImageFolder, is_image_folder
from flayer.data.hub.parquet import ParquetFiles, parquet_files
from flayer.data.hub.remote import HubCopy
from flayer.data.hub.saved import SavedFolder, is_saved_folder
from flayer.data.hub.storage import Storage, accepted_formats
from flayer.util.errors import DataError


def locate(hub_id: str, path: str | None, images: bool) -> Storage:
    """The storage of hub_id at `path` (None: the hub itself); `images`: an image set, which
    also accepts an image folder."""
    formats = accepted_formats(images)
    if not path:
        return HubCopy(hub_id, formats)
    where = Path(os.path.expanduser(path))

    def refuse(problem: str) -> DataError:
        return DataError(f"dataset.path {where} {problem}; it must be {formats} (of {hub_id})")

    if not where.exists():
        raise refuse("does not exist")
    if where.is_file():
        if where.suffix == ".parquet":
            return ParquetFiles(hub_id, formats, where)
        raise refuse("is a file but not a .parquet file")
    if is_saved_folder(where):
        return SavedFolder(hub_id, formats, where)
    if images and is_image_folder(where):
        return ImageFolder(hub_id, formats, where)
    if parquet_files(where):
        return ParquetFiles(hub_id, formats, where)
    raise refuse("holds none of the accepted formats")
