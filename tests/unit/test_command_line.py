"""The first commands a user types: only real options are offered and accepted, a typo gets the
nearest names in one line (exit 2), a refused command leaves no folder behind, and none of it
imports torch, Flower or a data library."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from flayer.config.checks import check_settings
from flayer.config.command_line import compose_job
from flayer.config.store import method_settings, register_schemas
from flayer.config.unknown import SettingError
from flayer.config.validation import validate
from flayer.protocol.catalog import METHODS
from flayer.util.errors import ConfigError
from tests.helpers import CONF, ROOT, make_config

GROUPS = ("strategy", "dataset", "model", "partition", "backend", "experiment")
HEAVY = ("torch", "flwr", "datasets", "flwr_datasets", "ray")

# run.py as a user runs it, then the heavy modules it imported, on stdout's last line
RUN_AND_REPORT = f"""
import runpy, sys
sys.argv = [{str(ROOT / "run.py")!r}, *sys.argv[1:]]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
finally:
    print("heavy:", ",".join(m for m in {HEAVY!r} if m in sys.modules))
"""


@pytest.fixture
def hydra_conf():
    register_schemas()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        yield GlobalHydra.instance().config_loader()


def test_a_group_offers_its_yamls_and_nothing_else(hydra_conf):
    for group in GROUPS:
        yamls = sorted(p.stem for p in (CONF / group).glob("*.yaml"))
        assert hydra_conf.get_group_options(group) == yamls, group


def test_every_method_is_registered_with_the_settings_its_schema_names():
    assert list(method_settings()) == METHODS.names()
    for name, settings in method_settings().items():
        assert METHODS.get(name).settings is settings and settings.name == name


@pytest.mark.parametrize(("overrides", "message"), [
    (["strategy=flayer_schema"], "unknown strategy 'flayer_schema'; did you mean flayer? "
                                 "(choose one of: apfl, ditto,"),
    (["strategy=fedavgg"], "unknown strategy 'fedavgg'; did you mean fedavg? (choose one of: "),
    (["dataset=fmnst"], "unknown dataset 'fmnst'; did you mean fmnist or femnist? (choose one "
                        "of: agnews,"),
    (["model=resnet"], "unknown model 'resnet'; did you mean resnet18? (choose one of: "
                        "char_lstm, cnn,"),
    (["partition=dirichelt"], "unknown partition 'dirichelt'; did you mean dirichlet?"),
    (["backend=rayy"], "unknown backend 'rayy'; did you mean ray? (choose one of: deploy, ray)"),
    (["num_client=3"], "unknown setting 'num_client'; did you mean num_clients? (run-wide "),
    (["strategy=ditto", "strategy.lamm=1"], "unknown setting 'strategy.lamm'; did you mean "
                                            "strategy.lam? (settings of strategy=ditto: lam, "
                                            "personal_epochs)"),
    (["alpha=0.5"], "unknown setting 'alpha'; did you mean partition.alpha?"),
    (["strategyy.lam=1"], "unknown setting 'strategyy.lam'; did you mean strategy.lam?"),
])
def test_a_typo_is_answered_with_the_nearest_names(hydra_conf, overrides, message):
    with pytest.raises(SettingError) as err:
        compose_job(overrides)
    assert str(err.value).startswith(message), str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("overrides", "message"), [
    (["partition=iid", "+partition.alpha=0.5"],
     "unknown setting 'partition.alpha' (settings of partition=iid: min_partition_size, "
     "train_fraction)"),
    (["+strategy.foo=1"], "unknown setting 'strategy.foo' (settings of strategy=flayer: "),
    (["strategy=ditto", "+strategy.lamm=1"], "unknown setting 'strategy.lamm'; did you mean "
                                             "strategy.lam?"),
    (["+nonsense=1"], "unknown setting 'nonsense' (run-wide settings and groups: "),
])
def test_a_key_added_with_plus_that_no_schema_has_is_refused(overrides, message):
    cfg = make_config(*overrides)  # Hydra lets `+` add a key to a typed node
    for check in (check_settings, validate):  # refused before any data is read
        with pytest.raises(SettingError) as err:
            check(cfg)
        assert str(err.value).startswith(message), str(err.value)


def test_a_method_name_without_its_settings_is_refused():
    with pytest.raises(ConfigError, match="choose the method with strategy=fedavg") as err:
        check_settings(make_config("strategy.name=fedavg"))  # FLAYER's settings
    assert err.value.setting == "strategy.name"
    with pytest.raises(ConfigError, match="must be one of apfl, ditto"):
        check_settings(make_config("strategy.name=nope"))


@pytest.mark.parametrize(("overrides", "allowed"), [
    (["num_clients=3", "new_clients=3"],
     "must be in [0, num_clients - 1] = [0, 2] (at least one client must train)"),
    (["new_clients=-1"], "must be in [0, num_clients - 1] = [0, 19]"),
    (["new_client_epochs=-1"], "must be >= 0"),
])
def test_new_clients_settings_are_checked_by_name(overrides, allowed):
    with pytest.raises(ConfigError) as err:
        check_settings(make_config(*overrides))
    key, value = overrides[-1].split("=")
    assert err.value.setting == key and str(value) in str(err.value)
    assert allowed in str(err.value)
    check_settings(make_config("num_clients=3", "new_clients=2", "new_client_epochs=0"))


def test_a_sweep_names_the_job_that_does_not_compose(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "run.py"), "-m", "strategy=fedavg,fedavgg",
                          "num_rounds=0"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2
    assert out.stderr == ("error: unknown strategy 'fedavgg'; did you mean fedavg? (choose one "
                          f"of: {', '.join(METHODS.names())}) (job with strategy=fedavgg "
                          "num_rounds=0)\n")
    assert list(tmp_path.iterdir()) == []


def run_py(cwd, *args: str) -> tuple[int, str, str, list[str]]:
    """run.py's exit code, stdout, stderr and the heavy modules it imported."""
    out = subprocess.run([sys.executable, "-c", RUN_AND_REPORT, *args], cwd=cwd,
                         capture_output=True, text=True, timeout=120)
    stdout, _, heavy = out.stdout.rstrip("\n").rpartition("\n")
    assert heavy.startswith("heavy:"), out.stdout[-2000:] + out.stderr[-2000:]
    return out.returncode, stdout, out.stderr, [m for m in heavy[6:].strip().split(",") if m]


@pytest.mark.parametrize("args", [["--help"], ["--cfg", "job", "strategy=fedavg"]])
def test_help_and_the_composed_config_import_nothing_heavy(tmp_path, args):
    code, stdout, stderr, heavy = run_py(tmp_path, *args)
    assert code == 0, stderr
    assert heavy == [] and "_schema" not in stdout
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("args", "line"), [
    (["strategy=fedavgg"], "error: unknown strategy 'fedavgg'; did you mean fedavg?"),
    (["num_client=3"], "error: unknown setting 'num_client'; did you mean num_clients?"),
    (["num_rounds=-1"], "error: bad setting num_rounds=-1: must be >= 0"),
    (["partition.alpha=0"], "error: bad setting partition.alpha=0.0: must be > 0"),
    (["num_clients=4", "new_clients=4"], "error: bad setting new_clients=4: must be in "
     "[0, num_clients - 1] = [0, 3] (at least one client must train)"),
    (["partition=iid", "+partition.alpha=0.5"], "error: unknown setting 'partition.alpha'"),
])
def test_a_bad_setting_is_one_line_imports_nothing_heavy_and_leaves_nothing(tmp_path, args,
                                                                            line):
    code, _, stderr, heavy = run_py(tmp_path, *args)
    assert code == 2 and stderr.startswith(line) and stderr.count("\n") == 1, stderr
    assert heavy == []
    assert list(tmp_path.iterdir()) == []  # no outputs/<date>/<time>, no run.log


def test_resuming_a_folder_that_does_not_exist_creates_none(tmp_path):
    code, _, stderr, _ = run_py(tmp_path, "resume=outputs/nope")
    assert code == 2 and stderr.startswith("error: bad setting resume='outputs/nope'"), stderr
    assert list(tmp_path.iterdir()) == []


def test_a_composed_config_is_checked_without_torch():
    code = ("import sys\n"
            "from flayer.config.checks import check_settings\n"
            "from flayer.config.compose import compose_dict\n"
            "from flayer.config.schema import to_config\n"
            "from flayer.config.store import method_settings\n"
            "schemes = ('dirichlet', 'iid', 'pathological')\n"
            "for i, method in enumerate(method_settings()):\n"
            "    check_settings(to_config(compose_dict([f'strategy={method}', "
            "f'partition={schemes[i % 3]}'])))\n"
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == ""

