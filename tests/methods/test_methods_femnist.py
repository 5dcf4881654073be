"""Every registered method runs a round on FEMNIST's natural clients (its writers) through the
real ServerApp logic and ClientApp handlers: greyscale 1x28x28 images and 62 classes reach
every method's model and its heads."""

import numpy as np
import pytest

from flayer.data import cache
from flayer.protocol.catalog import METHODS
from tests import hubdata
from tests.helpers import make_config, small_data_tuning
from tests.localgrid import run_local

WRITERS = (9, 6, 8)  # three tiny writers, as many clients


@pytest.fixture(scope="module")
def femnist(tmp_path_factory):
    """The data and a cache shared by the methods (they split it the same way)."""
    folder = tmp_path_factory.mktemp("femnist")
    cache.forget()
    yield hubdata.write_femnist(folder / "data", sizes=WRITERS, fmt="parquet"), folder / "cache"
    cache.forget()


@pytest.mark.parametrize("method", METHODS.names())
def test_every_method_runs_a_round_on_writers(femnist, method, single_thread):
    folder, cache_dir = femnist
    overrides = [f"strategy={method}", "partition=natural"]
    cfg = make_config("dataset=femnist", f"dataset.path={folder}",
                      f"cache_dir={cache_dir}", "model=cnn", "num_clients=3",
                      "num_rounds=1", "batch_size=4", "lr=0.01", "progress=false",
                      *small_data_tuning(overrides), *overrides)
    _, records, _ = run_local(cfg)
    assert [r.round for r in records] == [0, 1]
    assert records[1].trained == 3 and all(r.failures == 0 for r in records)
    tested = sorted(c.num_test for c in records[1].clients)
    assert tested == sorted(int(np.ceil(0.25 * n)) for n in WRITERS)  # each writer's test part
    assert all(np.isfinite(v) for v in records[1].train_metrics.values())
