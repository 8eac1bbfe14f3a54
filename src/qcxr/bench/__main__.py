"""`python -m qcxr.bench <subcommand> [args]`: benchmarks, one module per subcommand."""

import importlib
import logging
import sys

# Subcommand -> module with a `main(argv)`.
SUBCOMMANDS = {
    "loader": "qcxr.bench.loader",
    "heads": "qcxr.bench.heads",
    "train-step": "qcxr.bench.train_step",  # the paper's Table III protocol (CDL vs DQC)
    "train-step-torch": "qcxr.bench.train_step_torch",  # ResNet-18 (28) step vs PyTorch
    "batch-norm": "qcxr.bench.batch_norm",  # train-mode vs fixed-statistics BN, PneumoniaMNIST
    "qcnn": "qcxr.bench.qcnn",
    "noise": "qcxr.bench.noise",
}


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a benchmark's main(argv)."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in SUBCOMMANDS:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        logging.getLogger(__name__).error(
            "usage: python -m qcxr.bench {%s} [args]", ",".join(sorted(SUBCOMMANDS))
        )
        return 2
    return int(importlib.import_module(SUBCOMMANDS[argv[0]]).main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
