"""Run an experiment: `python run.py [overrides]`, or a sweep: `python run.py -m a=1,2`."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from flayer.errors import ConfigError, DataError
from flayer.schemas import register_schemas

register_schemas()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(dcfg: DictConfig) -> None:
    from flayer.experiment import run
    from flayer.rundir import RunIncomplete

    try:
        run(dcfg, Path(HydraConfig.get().runtime.output_dir))
    except (ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except RunIncomplete as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
