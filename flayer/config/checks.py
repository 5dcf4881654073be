"""The checks of a config that need neither the data nor the model: run-wide values, the
backend, the chosen method's, scheme's and shift's names, the partition and shift settings,
and keys no schema has. They import no torch, Flower or data library, so a bad setting is
refused at once; the full check (flayer.config.validation.validate) runs them first."""

from __future__ import annotations

from flayer.config.schema import Config
from flayer.config.store import method_settings
from flayer.config.unknown import extra_settings, unknown_setting
from flayer.data.partitioners import PARTITIONERS
from flayer.data.shifts import SHIFTS
from flayer.data.subset import check_fraction
from flayer.util.errors import require


def check_settings(cfg: Config) -> None:
    """Raise ConfigError for the first setting that is bad whatever the data and the model."""
    for key, value in extra_settings(cfg):
        raise unknown_setting(key, value, cfg)
    _check_strategy(cfg)
    require(cfg.num_rounds >= 0, "num_rounds", cfg.num_rounds, "must be >= 0")
    require(cfg.num_clients >= 1, "num_clients", cfg.num_clients, "must be >= 1")
    require(0 < cfg.join_ratio <= 1, "join_ratio", cfg.join_ratio, "must be in (0, 1]")
    require(cfg.eval_every >= 1, "eval_every", cfg.eval_every, "must be >= 1")
    require(0 < cfg.eval_fraction <= 1, "eval_fraction", cfg.eval_fraction, "must be in (0, 1]")
    require(0 <= cfg.new_clients < cfg.num_clients, "new_clients", cfg.new_clients,
            f"must be in [0, num_clients - 1] = [0, {cfg.num_clients - 1}] (at least one "
            "client must train)")
    require(cfg.new_client_epochs >= 0, "new_client_epochs", cfg.new_client_epochs,
            "must be >= 0 (0: a new client is evaluated with what it receives)")
    require(cfg.seed >= 0, "seed", cfg.seed, "must be >= 0")
    require(cfg.batch_size >= 1, "batch_size", cfg.batch_size, "must be >= 1")
    require(cfg.local_epochs >= 1, "local_epochs", cfg.local_epochs, "must be >= 1")
    require(cfg.lr is None or cfg.lr > 0, "lr", cfg.lr, "must be > 0 (or null for the model's)")
    require(cfg.model.lr > 0, "model.lr", cfg.model.lr, "must be > 0")
    require(cfg.device in ("auto", "cpu", "cuda"), "device", cfg.device,
             "must be one of auto, cpu, cuda")
    require(cfg.checkpoint_every >= 1, "checkpoint_every", cfg.checkpoint_every,
            "must be >= 1 (rounds between checkpoints)")
    require(cfg.checkpoint_keep >= 1, "checkpoint_keep", cfg.checkpoint_keep,
            "must be >= 1 (checkpoints kept)")
    check_fraction(cfg.dataset.fraction)
    _check_backend(cfg)
    _check_partition(cfg)
    _check_shift(cfg)


def _check_strategy(cfg: Config) -> None:
    """The method must be known and the settings its own (strategy.name changed alone would
    run one method with another's settings)."""
    s, known = cfg.strategy, method_settings()
    require(s.name in known, "strategy.name", s.name, f"must be one of {', '.join(known)}")
    require(type(s) is known[s.name], "strategy.name", s.name,
            f"must be the method of the chosen settings ({type(s).__name__}); choose the "
            f"method with strategy={s.name}, not strategy.name")


def _check_backend(cfg: Config) -> None:
    b = cfg.backend
    require(b.client_cpus > 0, "backend.client_cpus", b.client_cpus, "must be > 0")
    require(b.client_gpus is None or b.client_gpus >= 0, "backend.client_gpus", b.client_gpus,
             "must be >= 0 (or null for automatic)")
    require(b.address is None or _is_ray_address(b.address), "backend.address", b.address,
            "must be auto, host:port (a Ray head's GCS address), or null for a private Ray "
            "instance")
    require(b.address is None or b.num_cpus is None, "backend.num_cpus", b.num_cpus,
            "must be null with backend.address (the cluster's machines say what they have)")
    require(b.num_cpus is None or b.num_cpus >= b.client_cpus, "backend.num_cpus", b.num_cpus,
             f"must be >= backend.client_cpus ({b.client_cpus}) or null for all")
    require(b.round_timeout > 0, "backend.round_timeout", b.round_timeout, "must be > 0 seconds")
    require(b.executors is None or b.executors >= 1, "backend.executors", b.executors,
            "must be >= 1, or null for as many as Ray runs at once")
    require(b.state_dir is None or bool(str(b.state_dir).strip()), "backend.state_dir",
            b.state_dir, "must name a folder, or be null for the run folder's state/")


def _is_ray_address(address: str) -> bool:
    if address == "auto":
        return True
    host, _, port = address.rpartition(":")
    return bool(host) and port.isdigit() and 0 < int(port) < 65536


def _check_partition(cfg: Config) -> None:
    """The scheme must be known and its settings of that scheme's class (partition.name
    changed alone would hand one scheme another's settings); then the settings' own rules
    (those against the pool's size run with the data, in validate)."""
    p = cfg.partition
    require(p.name in PARTITIONERS, "partition.name", p.name,
            f"must be one of {', '.join(PARTITIONERS.names())}")
    require(isinstance(p, PARTITIONERS.get(p.name).settings), "partition.name", p.name,
            f"must be the scheme of the chosen settings ({type(p).__name__}); choose the "
            f"scheme with partition={p.name}, not partition.name")
    p.check_settings(cfg)


def _check_shift(cfg: Config) -> None:
    """The shift must be known and its settings of that shift's class; then its own rules
    (whether it fits the data is checked with the data's source, in validate)."""
    s = cfg.shift
    require(s.name in SHIFTS, "shift.name", s.name, f"must be one of {', '.join(SHIFTS.names())}")
    require(isinstance(s, SHIFTS.get(s.name).settings), "shift.name", s.name,
            f"must be the shift of the chosen settings ({type(s).__name__}); choose the shift "
            f"with shift={s.name}, not shift.name")
    s.check_settings(cfg)
