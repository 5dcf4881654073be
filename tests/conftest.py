from __future__ import annotations

import os

import pytest

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true",
                     help="also run the slow tests (real simulations)")


def pytest_configure(config):
    if os.environ.get("PYTEST_XDIST_WORKER"):  # one of several test processes on the cores
        import torch

        torch.set_num_threads(1)


def pytest_xdist_auto_num_workers(config):
    """Two test processes per core, at most 4: the slow tests mostly wait (on Ray, on
    subprocesses, on the moments they send signals at), and a second process per core runs
    fast tests meanwhile."""
    return min(4, 2 * (os.cpu_count() or 1))


# the slow tests that take longest (several Ray runs or deployments each), longest first: each
# starts at once in its own process, so that no process is left running them after the others
LONGEST_FIRST = ("tests/system/test_stops.py::test_stops_at_any_moment_under_load",
                 "tests/system/test_deploy.py", "tests/system/test_stops.py")


def _start_order(item) -> int:
    if "slow" not in item.keywords:
        return len(LONGEST_FIRST) + 1
    starts = [i for i, prefix in enumerate(LONGEST_FIRST) if item.nodeid.startswith(prefix)]
    return starts[0] if starts else len(LONGEST_FIRST)


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow"):
        # the long tests first, so that the short ones fill in beside them, not after them
        items.sort(key=_start_order)
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def fake_fmnist(tmp_path):
    from tests.helpers import write_fake_fmnist

    return write_fake_fmnist(tmp_path / "fmnist")


@pytest.fixture
def cache_dir(tmp_path):
    return tmp_path / "cache"


@pytest.fixture
def small(fake_fmnist, cache_dir):
    """A config maker for fast in-process runs: 3 clients, 2 rounds on fake Fashion-MNIST."""
    from tests.helpers import make_config, small_data_tuning

    def cfg(*overrides):
        return make_config(f"dataset.path={fake_fmnist}", f"cache_dir={cache_dir}",
                           "num_clients=3", "num_rounds=2", "batch_size=4",
                           "lr=0.01", "progress=false", *small_data_tuning(overrides),
                           *overrides)
    return cfg


@pytest.fixture
def single_thread():
    """One intra-op torch thread: small convolutions run several times slower when torch's
    threads compete for the busy cores of a shared machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
