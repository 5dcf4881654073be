"""Run an experiment: `python run.py [overrides]`, or a sweep: `python run.py -m a=1,2`;
continue a stopped one: `python run.py resume=RUN_DIR`."""

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
    from flayer.stops import Stopped, exit_now

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        run(dcfg, run_dir, list(hydra_cfg.overrides.task))
    except (ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except RunIncomplete as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except Stopped as stop:
        print(f"stopped ({stop}); partial results in {run_dir}; continue with: "
              f"python run.py resume={run_dir}", file=sys.stderr)
        exit_now(stop.exit_code)


if __name__ == "__main__":
    main()
