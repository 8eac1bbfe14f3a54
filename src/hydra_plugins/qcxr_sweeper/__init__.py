"""qcxr's Hydra sweeper: the basic sweeper plus integer ranges `key=a-b` (see range_sweeper.py)."""
