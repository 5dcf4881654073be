"""A `save_to_disk` folder: of a DatasetDict (`dataset_dict.json`), or of one Dataset
(`state.json`, read as the split `train`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flayer.data.cache import Memo
from flayer.data.hub.storage import LocalCopy, Split, as_split_dict, dataset_splits, digest
from flayer.util.errors import DataError

# once per process per folder and content (`flayer.data.cache.forget` drops them)
_FROM_DISK: Memo[dict[str, Any]] = Memo("splits of a save_to_disk folder",
                                        key=("folder", "fingerprint of its files"))


def is_saved_folder(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


class SavedFolder(LocalCopy):
    kind = "disk"

    def num_rows(self) -> int:
        return sum(ds.num_rows for ds in self._data().values())

    def fingerprint(self) -> str:
        """Every file's name and size, and the state files' text: a re-saved copy may keep
        its sizes, but its state files name the new fingerprint."""
        found = sorted(p for p in self.path.rglob("*") if p.is_file())
        files = self.file_sizes(found)
        for f in found:
            if f.name == "state.json":
                with self.reading(f, "a save_to_disk state file (UTF-8 JSON)"):
                    files.append(f.read_text(encoding="utf-8"))
        return digest([self.kind] + files)

    def splits(self, columns: dict[str, str]) -> list[Split]:
        return dataset_splits(self, self._data(), self.path, columns)

    def _data(self) -> dict[str, Any]:
        """The splits as `datasets` Datasets (memory-mapped), once per process and content."""
        return _FROM_DISK.get((str(self.path), self.fingerprint()),
                              lambda: as_split_dict(self._load()))

    def _load(self) -> Any:
        import datasets

        try:
            return datasets.load_from_disk(str(self.path))
        except Exception as exc:  # a broken or foreign folder: say which one and why
            raise DataError(f"cannot read the save_to_disk folder {self.path} "
                            f"({type(exc).__name__}: {exc}); it must be {self.formats}") from None
