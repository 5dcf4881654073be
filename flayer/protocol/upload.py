"""What a client uploads, how it travels (kept values plus bit-packed masks) and how the
server checks a reply against the method's declaration before it may touch the model."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from flayer.protocol import keys
from flayer.protocol.aggregation import Contribution


@dataclass(frozen=True)
class TensorSpec:
    """A declared upload tensor: its shape, and for a masked one how many values it keeps."""

    shape: tuple[int, ...]
    kept: int | None = None  # None: sent in full


UploadSpec = Mapping[str, TensorSpec]


@dataclass
class Upload:
    """Client side: full tensors, plus a bool mask for each tensor sent in part."""

    arrays: dict[str, np.ndarray]
    masks: dict[str, np.ndarray] = field(default_factory=dict)


def spec_record(spec: UploadSpec) -> ConfigRecord:
    """The declaration as message config (name -> [kept or -1, *shape]), so that an executor
    checks its clients' uploads exactly as the server would."""
    return ConfigRecord({name: [-1 if ts.kept is None else ts.kept, *ts.shape]
                         for name, ts in spec.items()})


def spec_of(record: ConfigRecord) -> UploadSpec:
    out = {}
    for name, value in record.items():
        kept, *shape = (int(v) for v in value)
        out[name] = TensorSpec(tuple(shape), None if kept < 0 else kept)
    return out


class ReplyError(ValueError):
    """A reply that does not match its method's declaration."""


def pack_mask(mask: np.ndarray) -> np.ndarray:
    return np.packbits(mask.astype(bool).ravel())


def unpack_mask(packed: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    n = int(np.prod(shape))
    return np.unpackbits(packed, count=n).astype(bool).reshape(shape)


def encode(upload: Upload) -> dict[str, ArrayRecord]:
    """Records for a reply: kept values only for masked tensors, and their packed masks."""
    arrays = ArrayRecord()
    masks = ArrayRecord()
    for name, value in upload.arrays.items():
        if name in upload.masks:
            mask = upload.masks[name]
            arrays[name] = Array(np.ascontiguousarray(value[mask]))
            masks[name] = Array(pack_mask(mask))
        else:
            arrays[name] = Array(np.ascontiguousarray(value))
    records = {keys.ARRAYS: arrays}
    if len(masks):
        records[keys.MASKS] = masks
    return records


def reply_nbytes(content: RecordDict) -> int:
    """Bytes of every array the client put in its reply (masks included)."""
    return sum(
        arr.numpy().nbytes for rec in content.array_records.values() for arr in rec.values()
    )


def decode(content: RecordDict, spec: UploadSpec, weight: float) -> Contribution:
    """Check a reply against the declaration and turn it into a Contribution."""
    if keys.ARRAYS not in content.array_records:
        raise ReplyError("no arrays in reply")
    sent = content.array_records[keys.ARRAYS]
    masks = content.array_records.get(keys.MASKS, ArrayRecord())
    if set(sent) != set(spec):
        raise ReplyError(
            f"uploaded tensors {sorted(set(sent) ^ set(spec))} differ from the declaration"
        )
    if set(masks) - set(spec):
        raise ReplyError(f"masks for undeclared tensors {sorted(set(masks) - set(spec))}")
    arrays: dict[str, np.ndarray] = {}
    bools: dict[str, np.ndarray] = {}
    for name, ts in spec.items():
        value = sent[name].numpy()
        if ts.kept is None:
            if name in masks:
                raise ReplyError(f"{name}: declared in full but sent with a mask")
            if tuple(value.shape) != ts.shape:
                raise ReplyError(f"{name}: shape {value.shape}, declared {ts.shape}")
        else:
            if name not in masks:
                raise ReplyError(f"{name}: declared masked but sent without a mask")
            packed = masks[name].numpy()
            n = int(np.prod(ts.shape))
            if packed.dtype != np.uint8 or packed.shape != ((n + 7) // 8,):
                raise ReplyError(f"{name}: mask of shape {packed.shape}, dtype {packed.dtype}")
            mask = unpack_mask(packed, ts.shape)
            if value.shape != (ts.kept,) or int(mask.sum()) != ts.kept:
                raise ReplyError(
                    f"{name}: {value.shape} values and {int(mask.sum())} mask bits, "
                    f"declared {ts.kept} kept"
                )
            bools[name] = mask
        if not np.all(np.isfinite(value)):
            raise ReplyError(f"{name}: NaN or Inf values")
        arrays[name] = value
    return Contribution(weight=weight, arrays=arrays, masks=bools)
