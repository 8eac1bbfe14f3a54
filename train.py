"""Train one configuration: `python train.py [overrides]`; grids with `-m` (see conf/config.yaml).

Thin Hydra entry: compose the config, call `qcxr.run.run(cfg)`, return the objective as a float
(val mean AUROC of the best checkpoint by default), which Optuna's sweeper maximises.
"""

import hydra
from omegaconf import DictConfig

from qcxr.run import register_configs, run


@hydra.main(config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """Run one job and return its objective."""
    return run(cfg)


if __name__ == "__main__":
    register_configs()
    main()
