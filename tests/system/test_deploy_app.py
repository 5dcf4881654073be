"""The module-level apps that `flwr run` starts compose their config from the run config."""

import json

from flwr.app import Context, RecordDict

from flayer.apps.client_app import config_of
from flayer.apps.inprocess import new_message
from flayer.apps.server_app import run_deployed
from tests.localgrid import LocalGrid


def test_deployed_server_app_writes_a_run_directory(fake_fmnist, cache_dir, tmp_path):
    overrides = (f"strategy=fedavg num_clients=3 num_rounds=1 dataset.path={fake_fmnist} "
                 f"cache_dir={cache_dir}")
    run_config = {"overrides": overrides, "output-dir": str(tmp_path / "out")}
    context = Context(run_id=7, node_id=0, node_config={}, state=RecordDict(),
                      run_config=run_config)
    cfg = config_of(context)
    assert cfg.strategy.name == "fedavg" and cfg.num_clients == 3
    run_dir = run_deployed(LocalGrid(cfg), context, new_message)
    assert run_dir.parent == tmp_path / "out" and run_dir.name.endswith("-fedavg-run7")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["complete"] and summary["rounds_completed"] == 1
    assert (run_dir / "config.yaml").read_text().count("fedavg") >= 1
