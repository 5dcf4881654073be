"""Whether the Hugging Face hub may be asked, and whether its local cache holds a dataset:
`hub_online` is the one place that decides between the hub and the cache."""

from __future__ import annotations

import contextlib
import glob
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

from flayer.data.cache import Memo

PROBE_TIMEOUT_S = 3.0  # how long to wait for the hub's host before reading the local cache

# Once per process: every process asks the source for its size and fingerprint several times
# while it builds its clients (`flayer.data.cache.forget` drops it).
_ONLINE: Memo[bool] = Memo("whether the hub answers", key=("hub endpoint",))


def hub_online() -> bool:
    """Whether the hub may be asked: not switched off (HF_HUB_OFFLINE) and its host answers;
    probed once per process.

    The `datasets` library retries an unreachable hub for about half a minute before it falls
    back to its cache; a quick connection probe avoids that wait in every process."""
    import datasets

    if datasets.config.HF_HUB_OFFLINE:
        return False
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # only the proxy knows; let the library try
    endpoint = datasets.config.HF_ENDPOINT

    def probe() -> bool:
        url = urlparse(endpoint)
        port = url.port or (80 if url.scheme == "http" else 443)
        try:
            with socket.create_connection((url.hostname or "", port), timeout=PROBE_TIMEOUT_S):
                return True
        except OSError:
            return False

    return _ONLINE.get((endpoint,), probe)


def hub_cached(hub_id: str) -> bool:
    """Whether `datasets` holds a prepared copy of hub_id in its cache (as its offline mode
    looks for it)."""
    import datasets
    from datasets.naming import camelcase_to_snakecase

    parts = hub_id.split("/")
    parts[-1] = camelcase_to_snakecase(parts[-1])
    root = Path(os.path.expanduser(str(datasets.config.HF_DATASETS_CACHE))) / "___".join(parts)
    return any(Path(p).is_dir() for p in glob.glob(str(root / "*" / "*" / "*")))


@contextlib.contextmanager
def offline() -> Iterator[None]:
    """Switch `datasets` and `huggingface_hub` to offline mode (read the cache, no retries)."""
    import datasets
    import huggingface_hub.constants as hub_constants

    saved = datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE = saved
