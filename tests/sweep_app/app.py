"""A toy Hydra app for the study sweeper's mechanics (tests/test_sweeps.py): no training.

The objective is (x - 0.3)^2; `fail_above` makes every trial with x above it fail, by raising
(`fail_mode=raise`) or by returning NaN (`fail_mode=return_nan`), the two ways a qcxr run fails.
"""

import math
import time

import hydra
from omegaconf import DictConfig


@hydra.main(config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """One toy trial."""
    time.sleep(float(cfg.sleep_s))
    if cfg.fail_above is not None and cfg.x > cfg.fail_above:
        if cfg.fail_mode == "return_nan":
            return math.nan
        raise FloatingPointError(f"forced failure at x={cfg.x}")
    return float((cfg.x - 0.3) ** 2)


if __name__ == "__main__":
    main()
