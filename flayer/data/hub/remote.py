"""The hub itself (`dataset.path` null): `datasets.load_dataset`, served by the local Hugging
Face cache where the hub cannot be reached."""

from __future__ import annotations

import contextlib
from typing import Any

from flayer.data.cache import Memo
from flayer.data.hub import online
from flayer.data.hub.storage import Split, Storage, as_split_dict, dataset_splits, digest
from flayer.util.errors import DataError

# once per process, under the hub id alone (`flayer.data.cache.forget` drops them)
_FROM_HUB: Memo[dict[str, Any]] = Memo("splits of a hub dataset", key=("hub id",))


class HubCopy(Storage):
    """The hub's copy of `hub_id`, or the local Hugging Face cache's."""

    kind = "hub"

    @property
    def where(self) -> str:
        return self.hub_id

    def damage_fix(self) -> str:
        return (f"the local Hugging Face cache of {self.hub_id} may be damaged: remove it "
                "(huggingface-cli delete-cache, or its folder under ~/.cache/huggingface) and "
                "load it again")

    def _unreachable(self) -> DataError:
        return DataError(f"cannot reach the Hugging Face hub for {self.hub_id} (offline, and "
                         f"it is not in the local Hugging Face cache); {self.hint()}")

    def check(self) -> None:
        """That the local cache or the hub may serve it: a host without either learns it
        here, before anything asks for the data's size."""
        try:
            import datasets
        except ImportError as exc:
            raise DataError(f"reading {self.hub_id} needs the `datasets` package "
                            f"({exc}); or {self.hint()}") from None
        if online.hub_cached(self.hub_id):
            return
        if datasets.config.HF_HUB_OFFLINE:
            raise DataError(f"{self.hub_id} is not in the local Hugging Face cache and "
                            f"HF_HUB_OFFLINE is set; {self.hint()}")
        if not online.hub_online():
            raise self._unreachable()

    def num_rows(self) -> int:
        return sum(ds.num_rows for ds in self._data().values())

    def fingerprint(self) -> str:
        """The hub id and the fingerprints `datasets` gave the splits."""
        data = self._data()
        return digest([self.hub_id] + [f"{name}:{data[name].num_rows}:{data[name]._fingerprint}"
                                       for name in sorted(data)])

    def splits(self, columns: dict[str, str]) -> list[Split]:
        return dataset_splits(self, self._data(), self.hub_id, columns)

    def _data(self) -> dict[str, Any]:
        """The splits as `datasets` Datasets (memory-mapped), once per process."""
        return _FROM_HUB.get((self.hub_id,), lambda: as_split_dict(self._load()))

    def _load(self) -> Any:
        import datasets

        up = online.hub_online()
        if not up and not online.hub_cached(self.hub_id):
            raise self._unreachable()
        try:
            with contextlib.nullcontext() if up else online.offline():
                return datasets.load_dataset(self.hub_id)
        except Exception as exc:  # network, cache or format problems all end the same way
            raise DataError(f"could not load {self.hub_id} from the Hugging Face hub "
                            f"({type(exc).__name__}: {exc}); {self.hint()}") from None
