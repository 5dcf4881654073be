"""The data-source contract: every source says whether its spec is fixed without data, and
every module of flayer.data.sources registers itself with its own conf/dataset yaml."""

import pkgutil

import numpy as np
import pytest
import torch

import flayer.data.sources
from flayer.config.schema import DatasetConfig
from flayer.data.source import DataSource, DataSpec, Pool
from flayer.data.sources import DATASETS
from flayer.data.sources.agnews import write_vocab
from tests.helpers import CONF

FIXED = {"fmnist": DataSpec((1, 28, 28), 10), "cifar10": DataSpec((3, 32, 32), 10),
         "cifar100": DataSpec((3, 32, 32), 100), "tiny_imagenet": DataSpec((3, 64, 64), 200),
         "femnist": DataSpec((1, 28, 28), 62)}


def test_every_source_module_registers_a_dataset_with_its_yaml():
    modules = {m.name for m in pkgutil.iter_modules(flayer.data.sources.__path__)}
    registered = {DATASETS.get(name).__module__.rpartition(".")[2] for name in DATASETS}
    assert registered == modules
    assert set(DATASETS.names()) == {p.stem for p in (CONF / "dataset").glob("*.yaml")}


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_source_says_whether_its_spec_is_fixed(name):
    cls = DATASETS.get(name)
    spec = cls.static_spec(DatasetConfig(name=name, path="/nowhere"))
    if spec is not None:  # the instance's spec is the same, still without any data
        assert spec.num_classes >= 2 and all(d > 0 for d in spec.input_shape)
        assert cls(DatasetConfig(name=name, path="/nowhere")).spec == spec


@pytest.mark.parametrize("name", ["agnews", "pfllib", *FIXED])
def test_the_built_in_specs(name):
    assert DATASETS.get(name).static_spec(DatasetConfig(name=name)) == FIXED.get(name)


def test_a_given_vocabulary_fixes_the_text_spec(tmp_path):
    write_vocab(tmp_path / "v.txt", ["<pad>", "<unk>", "a", "b", "c"])
    cfg = DatasetConfig(name="agnews", vocab=str(tmp_path / "v.txt"), max_len=7)
    assert DATASETS.get("agnews").static_spec(cfg) == DataSpec((7,), 4, vocab_size=5)


def test_a_source_must_implement_the_contract():
    class Partial(DataSource):
        name = "partial"

        def load(self) -> Pool:
            return Pool(np.zeros((1, 1)), np.zeros(1, np.int64))

    with pytest.raises(TypeError, match="static_spec"):
        Partial(DatasetConfig(name="partial"))

    class Learnt(Partial):
        @classmethod
        def static_spec(cls, cfg: DatasetConfig) -> None:
            return None

        def check(self) -> None:
            pass

        def num_samples(self) -> int:
            return 1

        def fingerprint(self) -> str:
            return "x"

        def to_input(self, x: torch.Tensor) -> torch.Tensor:
            return x

    source = Learnt(DatasetConfig(name="learnt"))
    with pytest.raises(RuntimeError, match="after `fit`"):
        source.spec  # noqa: B018
    with pytest.raises(NotImplementedError, match="partitioned"):
        source.fixed_splits()
