"""Feature shifts (`shift=`): the transforms on tiny tensors, the seeded group assignment,
clients' data as loaded with each shift, the checks of bad settings and of token data, and
what a run's summary and the report say about a shift."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from flayer.config.checks import check_settings
from flayer.config.validation import validate
from flayer.data import cache
from flayer.data.federated import client_splits, load_client, pool_files
from flayer.data.node import load_node_data
from flayer.data.shifts import SHIFTS, Target
from flayer.data.shifts.noise import NoiseConfig
from flayer.data.shifts.rotate import RotateConfig, client_groups, rotate
from flayer.data.split import holdout
from flayer.results.setup import dataset_text, run_title
from flayer.run.folder import run_info
from flayer.util.errors import ConfigError
from flayer.util.seeding import rng_for
from tests.helpers import ROOT, make_config, write_fake_fmnist


@pytest.fixture(autouse=True)
def fresh():
    cache.forget()  # clients loaded by another test with other settings are not reused
    yield
    cache.forget()


def target(client: int, num_clients: int = 10, part: str = "train", seed: int = 0) -> Target:
    return Target(seed=seed, client=client, num_clients=num_clients, part=part,
                  pixels=(0.0, 255.0))


# --- rotation -------------------------------------------------------------------------------

def test_a_quarter_turn_moves_a_pixel_counter_clockwise():
    image = torch.zeros(1, 1, 5, 5, dtype=torch.uint8)
    image[0, 0, 2, 4] = 200  # right of the centre
    turned = rotate(image, 90)
    assert turned.dtype == torch.uint8 and turned.shape == image.shape
    assert torch.nonzero(turned[0, 0]).tolist() == [[0, 2]]  # above the centre
    assert torch.nonzero(rotate(image, 180)[0, 0]).tolist() == [[2, 0]]
    assert torch.nonzero(rotate(image, -90)[0, 0]).tolist() == [[4, 2]]
    assert torch.equal(rotate(image, 360), image) and torch.equal(rotate(image, 450), turned)


def test_a_known_image_turned_by_a_quarter():
    image = torch.arange(4, dtype=torch.uint8).reshape(1, 1, 2, 2)  # [[0, 1], [2, 3]]
    assert rotate(image, 90)[0, 0].tolist() == [[1, 3], [0, 2]]


def test_any_angle_agrees_with_the_exact_turns_and_fills_with_black():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (3, 2, 6, 6), generator=g, dtype=torch.uint8)
    for exact in (90, 180, 270):  # sampled a hair off the exact angle: the same pixels
        assert torch.equal(rotate(images, exact + 1e-7), rotate(images, exact))
    square = torch.full((1, 1, 9, 9), 100.0)
    turned = rotate(square, 45, black=-1.0)
    assert turned[0, 0, 4, 4] == pytest.approx(100.0)  # the centre stays
    assert turned[0, 0, 0, 0] == pytest.approx(-1.0)  # a corner comes from outside: black
    tall = torch.arange(12, dtype=torch.float32).reshape(1, 1, 4, 3)
    assert rotate(tall, 90).shape == tall.shape  # not a square: sampled, the shape kept
    assert torch.equal(rotate(tall, 180), torch.flip(tall, dims=(-2, -1)))


def test_groups_are_seeded_and_even():
    a = client_groups(10, 4, seed=0)
    assert sorted(np.bincount(a, minlength=4).tolist()) == [2, 2, 3, 3]
    assert np.array_equal(a, client_groups(10, 4, seed=0))
    assert not np.array_equal(a, client_groups(10, 4, seed=1))
    assert client_groups(5, 1, seed=3).tolist() == [0] * 5
    assert sorted(client_groups(6, 6, seed=2).tolist()) == list(range(6))


def test_each_client_is_turned_by_its_groups_angle():
    cfg = RotateConfig(groups=3, angles=[0.0, 90.0, 180.0])
    image = torch.zeros(1, 1, 3, 3, dtype=torch.uint8)
    image[0, 0, 1, 2] = 9
    groups = client_groups(7, 3, seed=4)
    transform = SHIFTS.get("rotate").transform
    for client in range(7):
        out = transform(image, cfg, target(client, 7, seed=4))
        assert torch.equal(out, rotate(image, 90.0 * groups[client]))
    assert RotateConfig(groups=4).group_angles() == [0.0, 90.0, 180.0, 270.0]
    assert RotateConfig(groups=3).group_angles() == [0.0, 120.0, 240.0]


# --- noise ----------------------------------------------------------------------------------

def test_noise_std_is_level_times_client_over_clients():
    cfg, x = NoiseConfig(level=0.2), torch.full((200, 1, 28, 28), 128, dtype=torch.uint8)
    transform = SHIFTS.get("noise").transform
    for client in (0, 3, 9):
        out = transform(x, cfg, target(client, num_clients=10))
        assert out.dtype == torch.float32
        noise = (out - 128.0).double()
        expected = 0.2 * client / 10 * 255.0  # in the stored units of uint8 images
        assert float(noise.mean()) == pytest.approx(0.0, abs=0.01 * expected + 1e-12)
        assert float(noise.std()) == pytest.approx(expected, rel=0.01)
    # in PFLlib's [-1, 1] units the pixel range spans 2
    pfllib = Target(seed=0, client=5, num_clients=10, part="train", pixels=(-1.0, 1.0))
    out = transform(torch.zeros(100, 1, 28, 28), cfg, pfllib)
    assert float(out.std()) == pytest.approx(0.2 * 5 / 10 * 2, rel=0.01)


def test_noise_is_seeded_by_the_seed_the_client_and_the_part():
    cfg, x = NoiseConfig(level=0.1), torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    transform = SHIFTS.get("noise").transform
    first = transform(x, cfg, target(5))
    assert torch.equal(first, transform(x, cfg, target(5)))
    for other in (target(5, seed=1), target(5, part="test")):
        assert not torch.equal(first, transform(x, cfg, other))
    # another client: another draw, not only another scale
    ratio = transform(x, cfg, target(6)) / first
    assert not torch.allclose(ratio, torch.full_like(ratio, 6 / 5))


# --- settings -------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("overrides", "setting"),
    [
        (["shift=rotate", "shift.groups=0"], "shift.groups"),
        (["shift=rotate", "shift.groups=-2"], "shift.groups"),
        (["shift=rotate", "num_clients=3", "shift.groups=4"], "shift.groups"),
        (["shift=rotate", "shift.angles=[0,90]"], "shift.angles"),
        (["shift=noise", "shift.level=-0.1"], "shift.level"),
        (["shift=noise", "shift.level=inf"], "shift.level"),
    ],
)
def test_a_bad_shift_setting_is_named(overrides, setting):
    with pytest.raises(ConfigError) as err:
        check_settings(make_config(*overrides))
    assert str(err.value).startswith(f"bad setting {setting}=")


def test_a_setting_of_another_shift_is_refused():
    from flayer.config.unknown import SettingError

    with pytest.raises(SettingError, match="shift.level"):
        check_settings(make_config("shift=rotate", "+shift.level=0.1"))


@pytest.mark.parametrize("dataset", ["agnews", "shakespeare"])
@pytest.mark.parametrize("shift", ["rotate", "noise"])
def test_a_shift_of_images_refuses_token_data_before_reading_it(tmp_path, dataset, shift):
    cfg = make_config(f"dataset={dataset}", f"shift={shift}", "num_clients=4",
                      f"dataset.path={tmp_path / 'nothing-here'}", f"cache_dir={tmp_path}")
    with pytest.raises(ConfigError) as err:
        validate(cfg)  # the data is not even there: the shift is refused first
    assert err.value.setting == "shift"
    assert f"bad setting shift='{shift}'" in str(err.value)
    assert f"dataset={dataset}" in str(err.value)


def test_run_py_refuses_a_rotated_text_run_with_exit_2(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "run.py"), "dataset=shakespeare",
                          "shift=rotate", f"dataset.path={tmp_path / 'plays'}",
                          f"cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'run'}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.startswith("error: bad setting shift='rotate': changes images, and "
                                 "dataset=shakespeare holds token ids")
    assert len(out.stderr.splitlines()) == 1 and not (tmp_path / "run").exists()


def test_shift_none_takes_any_data():
    make_config("dataset=agnews").shift.check_samples("agnews", True)


# --- clients' data --------------------------------------------------------------------------

@pytest.fixture
def shifted(fake_fmnist, cache_dir):
    def cfg(*overrides: str):
        return make_config(f"dataset.path={fake_fmnist}", f"cache_dir={cache_dir}",
                           "num_clients=4", "partition=iid", *overrides)
    return cfg


def test_shift_none_leaves_every_client_byte_identical(shifted):
    cfg = shifted()
    x_file, y_file = pool_files(cfg)
    x, y = np.load(x_file), np.load(y_file)
    for client, split in enumerate(client_splits(cfg)):
        train, val = holdout(split.train, 0.2, rng_for(cfg.seed, "holdout", client))
        data = load_client(cfg, client, val_fraction=0.2)
        for got, idx in ((data.x_train, train), (data.x_val, val), (data.x_test, split.test)):
            assert got.dtype == torch.uint8
            assert got.numpy().tobytes() == np.ascontiguousarray(x[idx]).tobytes()
        assert np.array_equal(data.y_train.numpy(), y[train])


def test_a_rotated_clients_train_and_test_are_turned_by_its_group(shifted):
    plain = shifted()
    cfg = shifted("shift=rotate", "shift.groups=2", "shift.angles=[90,180]")
    groups = client_groups(4, 2, cfg.seed)
    for client in range(4):
        a, b = load_client(plain, client, 0.1), load_client(cfg, client, 0.1)
        angle = (90, 180)[groups[client]]
        for x, turned in ((a.x_train, b.x_train), (a.x_test, b.x_test), (a.x_val, b.x_val)):
            assert torch.equal(turned, rotate(x, angle))
        assert torch.equal(a.y_train, b.y_train) and torch.equal(a.y_test, b.y_test)


def test_a_clients_noise_is_its_own_and_kept_whatever_is_held_out(shifted):
    plain, cfg = shifted(), shifted("shift=noise", "shift.level=0.5")
    noises = []
    for client in range(4):
        data = load_client(cfg, client)
        noise = data.x_test - load_client(plain, client).x_test.float()
        assert float(noise.std()) == pytest.approx(0.5 * client / 4 * 255, rel=0.1)
        noises.append(noise.flatten()[:500] / max(client, 1))
        # held out by position after the shift: the samples a method keeps are the same
        held = load_client(cfg, client, val_fraction=0.25)
        rows = {r.numpy().tobytes() for r in data.x_train}
        assert all(r.numpy().tobytes() in rows for r in (*held.x_train, *held.x_val))
    assert not torch.allclose(noises[2], noises[3])  # each client its own draw
    before = load_client(cfg, 3).x_train.numpy().tobytes()
    cache.forget()  # made again, as another process makes it: the same samples
    assert load_client(cfg, 3).x_train.numpy().tobytes() == before


def test_a_nodes_own_data_is_shifted_like_a_partition(tmp_path, cache_dir):
    folder = write_fake_fmnist(tmp_path / "mine", n_train=60, n_test=20)
    base = ("num_clients=3", f"cache_dir={cache_dir}", "dataset.path=/nonexistent")
    plain = load_node_data(make_config(*base), str(folder), partition_id=1)
    turned = load_node_data(make_config(*base, "shift=rotate", "shift.groups=1",
                                        "shift.angles=[270]"), str(folder), partition_id=1)
    assert torch.equal(turned.x_train, rotate(plain.x_train, 270))
    assert torch.equal(turned.x_test, rotate(plain.x_test, 270))


# --- what a run says ------------------------------------------------------------------------

def test_the_summary_and_the_report_show_the_shift():
    plain = run_info(make_config())
    assert "shift" not in plain and dataset_text(plain) == "fmnist"
    rotated = run_info(make_config("shift=rotate"))
    assert (rotated["shift"], rotated["shift_groups"]) == ("rotate", 4)
    assert rotated["shift_angles"] == [0.0, 90.0, 180.0, 270.0]
    assert dataset_text(rotated) == "fmnist + rotate(0°, 90°, 180°, 270°)"
    noisy = run_info(make_config("shift=noise", "shift.level=0.3"))
    assert noisy["shift_level"] == 0.3
    assert " fmnist + noise(level 0.3) · dirichlet" in run_title(noisy)
    assert math.isclose(NoiseConfig(level=0.3).client_std(2, 4), 0.15)


def test_the_report_tells_a_rotated_run_from_a_plain_one(tmp_path, capsys):
    import json

    from flayer.results.report import main
    from tests.unit.test_report import table, write_run

    write_run(tmp_path / "0-fedavg", "fedavg", 0, 0.90)  # a summary from before shifts
    write_run(tmp_path / "1-fedavg", "fedavg", 1, 0.92)  # a plain run of now: shift none
    (tmp_path / "1-fedavg" / "config.yaml").open("a").write("shift:\n  name: none\n")
    write_run(tmp_path / "2-fedavg", "fedavg", 0, 0.70)
    (tmp_path / "2-fedavg" / "config.yaml").open("a").write(
        "shift:\n  name: rotate\n  groups: 2\n  angles: null\n")
    summary = json.loads((tmp_path / "2-fedavg" / "summary.json").read_text())
    summary.update(shift="rotate", shift_groups=2, shift_angles=[0.0, 180.0])
    (tmp_path / "2-fedavg" / "summary.json").write_text(json.dumps(summary))
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    runs = table(out, "Runs")
    assert runs[0].startswith("| fedavg | fmnist | 0.1 |")
    assert runs[2].startswith("| fedavg | fmnist + rotate(0°, 180°) | 0.1 |")
    groups = table(out, "Comparison")
    assert len(groups) == 2  # the plain runs, old and new, are one group over two seeds
    assert any("| fmnist + rotate(0°, 180°) |" in g and "| 0 |" in g for g in groups)
    assert any("| fmnist | 0.1 |" in g and "| 0,1 |" in g for g in groups)


def test_a_pfllib_folder_is_shifted_in_its_own_units_and_refused_as_tokens(tmp_path, cache_dir):
    from tests.pfllibdata import image_clients, write_pfllib

    clients = image_clients([(40, 30), (40, 30)], shape=(1, 6, 6))
    images = write_pfllib(tmp_path / "Cifar", clients, num_classes=3)
    base = ("dataset=pfllib", f"dataset.path={images}", "num_clients=2", f"cache_dir={cache_dir}")
    turned = load_client(make_config(*base, "shift=rotate", "shift.groups=1",
                                     "shift.angles=[180]"), 1)
    assert torch.equal(turned.x_test, rotate(torch.from_numpy(clients[1][2]), 180))
    noisy = load_client(make_config(*base, "shift=noise", "shift.level=0.4"), 1)
    noise = noisy.x_train - torch.from_numpy(clients[1][0])
    assert float(noise.std()) == pytest.approx(0.4 * 1 / 2 * 2, rel=0.1)  # [-1, 1]: span 2
    tokens = np.random.default_rng(0).integers(1, 50, (6, 5))
    labels = np.zeros(6, dtype=np.int64)
    text = write_pfllib(tmp_path / "AGNews", [(tokens[:4], labels[:4], tokens[4:], labels[4:])],
                        num_classes=2)
    with pytest.raises(ConfigError, match="shift='noise'.*dataset=pfllib holds token ids"):
        validate(make_config("dataset=pfllib", f"dataset.path={text}", "num_clients=1",
                             f"cache_dir={cache_dir}", "shift=noise"))
