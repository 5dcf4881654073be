"""Feature shifts: a per-client change of the inputs on top of any split (label skew stays the
partitioner's). `none` changes nothing; `rotate` turns each group of clients' images by the
group's angle; `noise` adds Gaussian noise of a per-client level.

One module per shift holds its settings class (a ShiftConfig subclass with its own
`check_settings`) and its transform, registered together by the shift's name; every module in
this package is imported, so a new shift is its module, its conf/shift/<name>.yaml (whose
defaults name `/shift_<name>_schema`) and its test. A module imports torch inside its
transform: the settings are read and checked without it.

A shift is applied when a client's data is loaded (`shift_samples`), once per process and
client, to the client's train and test samples separately; it is seeded by the run seed, the
client and the part, so every process and every method sees the same shifted samples.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from omegaconf import MISSING

from flayer.config.schema import Config, ShiftConfig
from flayer.util.errors import DataError
from flayer.util.registry import Registry, import_modules

if TYPE_CHECKING:
    import torch

    from flayer.data.source import DataSource

S = TypeVar("S", bound=ShiftConfig)


@dataclass(frozen=True)
class Target:
    """Whose samples a shift changes, and how a stored pixel reads."""

    seed: int  # the run seed
    client: int  # partition id, 0 .. num_clients - 1
    num_clients: int
    part: str  # "train" or "test": each draws its own random numbers
    # a pixel's stored values at black and at white (uint8 images: 0 and 255); None for a
    # shift that changes no images
    pixels: tuple[float, float] | None

    @property
    def black(self) -> float:
        return self._pixels[0]

    @property
    def span(self) -> float:
        """White minus black: the stored units of the pixel range [0, 1]."""
        return self._pixels[1] - self._pixels[0]

    @property
    def _pixels(self) -> tuple[float, float]:
        if self.pixels is None:
            raise ValueError("a shift that changes images needs the data's pixel range")
        return self.pixels


# (a client's stored samples, the shift's settings, whose they are) -> the shifted samples
Transform = Callable[["torch.Tensor", S, Target], "torch.Tensor"]


@dataclass(frozen=True)
class Shift(Generic[S]):
    """A shift: its transform and the settings class it reads (its Hydra schema)."""

    name: str
    transform: Transform[S]
    settings: type[S]


SHIFTS: Registry[Shift[Any]] = Registry("shift")


def register_shift(settings: type[S]) -> Callable[[Transform[S]], Transform[S]]:
    """Decorator registering a transform with its settings class, under the name the class
    defaults to (so the name is written once). The function is returned unchanged."""
    name = getattr(settings, "name", MISSING)
    if not isinstance(name, str) or name == MISSING:
        raise ValueError(f"{settings.__name__} needs a default name (its shift's name)")

    def add(transform: Transform[S]) -> Transform[S]:
        SHIFTS.register(name)(Shift(name=name, transform=transform, settings=settings))
        return transform

    return add


def shift_key(shift: ShiftConfig) -> str:
    """The shift's settings as a hashable key part (a list of angles is no tuple member)."""
    return f"{type(shift).__name__}{sorted(asdict(shift).items())}"


def shift_samples(cfg: Config, source: DataSource, client: int, part: str,
                  x: torch.Tensor) -> torch.Tensor:
    """Client `client`'s stored samples `x` (its `part`) as the run's shift makes them (`none`:
    the samples themselves)."""
    shift, pixels = cfg.shift, None
    if shift.images_only:  # checked before the run where the data is known there
        pixels = source.pixel_range()
        if pixels is None or x.dim() < 3:
            what = "token ids" if pixels is None else f"of shape {tuple(x.shape[1:])}"
            raise DataError(f"shift={shift.name} changes images (samples x [channels x] "
                            f"height x width); the {cfg.dataset.name} samples are {what}; "
                            "use shift=none")
    target = Target(seed=cfg.seed, client=client, num_clients=cfg.num_clients, part=part,
                    pixels=pixels)
    return SHIFTS.get(shift.name).transform(x, shift, target)


import_modules(__name__, __path__)  # each shift's module registers it
