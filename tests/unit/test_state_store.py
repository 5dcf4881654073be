"""The client state store: one file per client, keyed by the run folder, cleared for a fresh
run without touching anything else."""

import numpy as np

from flayer.state.personal import Personal
from flayer.state.store import ClientStore, store_root


def test_a_client_file_round_trips_and_a_new_client_has_empty_state(tmp_path):
    store = ClientStore(tmp_path / "s")
    assert store.load(3) == Personal()
    state = Personal(arrays={"model/fc.bias": np.arange(4, dtype=np.float32)},
                     meta={"a_k": 0.5, "rates": [0.1, 0.2]}, version=7)
    store.save(3, state)
    back = store.load(3)
    np.testing.assert_array_equal(back.arrays["model/fc.bias"], state.arrays["model/fc.bias"])
    assert (back.meta, back.version) == (state.meta, 7)
    assert store.load(4) == Personal()
    assert store.nbytes() > 0


def test_clear_removes_only_client_files(tmp_path):
    store = ClientStore(tmp_path)
    for pid in range(3):
        store.save(pid, Personal(version=0))
    (tmp_path / "notes.txt").write_text("mine")
    assert store.clear() == 3
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    assert ClientStore(tmp_path / "missing").clear() == 0


def test_the_store_is_found_from_the_run_folder_alone(tmp_path):
    run = tmp_path / "outputs" / "run-a"
    assert store_root(run, None) == run.resolve() / "state"
    shared = store_root(run, str(tmp_path / "shared"))
    assert shared == store_root(tmp_path / "outputs" / "." / "run-a", str(tmp_path / "shared"))
    assert shared.parent == (tmp_path / "shared").resolve() and shared.name.startswith("run-a-")
    other = store_root(tmp_path / "elsewhere" / "run-a", str(tmp_path / "shared"))
    assert other != shared  # same folder name, another run
