"""Parquet files with the hub's columns: one file, or a folder searched recursively. A file's
split is the word its name starts with (`train-00000-of-00001.parquet` -> train), else the
name of its folder (`train/0000.parquet` -> train)."""

from __future__ import annotations

import re
from pathlib import Path

from flayer.data.hub.storage import LocalCopy, Split, digest, split_order


def parquet_files(path: Path) -> list[Path]:
    """The file itself, or every parquet file below the folder, sorted."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*.parquet") if p.is_file())


def split_of(file: Path, root: Path) -> str:
    """A parquet file's split: the word its name starts with, else its folder's name."""
    word = re.match(r"[A-Za-z]+", file.name)
    if word:
        return word.group(0).lower()
    return file.parent.name if file.parent != root else "train"


class ParquetFiles(LocalCopy):
    kind = "parquet"

    def num_rows(self) -> int:
        """From the files' metadata: nothing is read."""
        import pyarrow.parquet as pq

        total = 0
        for file in parquet_files(self.path):
            with self.reading(file, "a parquet file"):
                total += pq.ParquetFile(file).metadata.num_rows
        return total

    def fingerprint(self) -> str:
        return digest([self.kind] + self.file_sizes(parquet_files(self.path)))

    def splits(self, columns: dict[str, str]) -> list[Split]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        by_split: dict[str, list[Path]] = {}
        for file in parquet_files(self.path):
            root = self.path if self.path.is_dir() else file.parent
            by_split.setdefault(split_of(file, root), []).append(file)
        out = []
        for name in split_order(list(by_split)):
            tables = []
            for file in by_split[name]:
                with self.reading(file, f"a parquet file with the columns of {self.hub_id}"):
                    self.require(pq.read_schema(file).names, columns, file.name)
                    tables.append(pq.read_table(file, columns=list(columns.values())))
            out.append(Split(name, pa.concat_tables(tables).rename_columns(list(columns))))
        return out
