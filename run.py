"""Run an experiment: `python run.py [overrides]`, or a sweep: `python run.py -m a=1,2`;
continue a stopped one: `python run.py resume=RUN_DIR`."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from flayer.config.command_line import check_command_line
from flayer.config.store import register_schemas
from flayer.util.errors import ConfigError, DataError

CONF_DIR = Path(__file__).resolve().parent / "conf"

register_schemas()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(dcfg: DictConfig) -> None:
    from flayer.run.experiment import run
    from flayer.run.folder import CONFIG_FILE, RunIncomplete
    from flayer.run.runlog import LOG_FILE
    from flayer.run.stops import Stopped, exit_now, stop_message

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
    except Stopped as stop:  # the folder holds a run to continue once its config is written
        written = (run_dir / CONFIG_FILE).is_file()
        print(stop_message(stop, run_dir if written else None), file=sys.stderr)
        exit_now(stop.exit_code)
    except Exception as exc:  # a bug, or Ray or Flower failing: one line, the traceback filed
        # (a sweep ends here too, at once: `resume=auto` continues it)
        where = run_dir / LOG_FILE
        print(f"error: the run failed: {type(exc).__name__}: {exc}"
              + (f"; the traceback is in {where}" if where.is_file() else ""), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    from flayer.run.stops import exit_on_signals

    exit_on_signals()  # a stop before the run starts: one line, exit 130/143, no traceback
    check_command_line(sys.argv[1:], CONF_DIR)  # one line, exit 2, for what cannot compose
    main()
