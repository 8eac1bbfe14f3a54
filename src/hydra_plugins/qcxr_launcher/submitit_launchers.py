"""Makes the launchers of `_submitit.py` known to Hydra's plugin scan (which skips `_` modules and
registers the plugin classes it finds as members of the modules it imports); without the
`cluster` extra (no submitit plugin) it offers none."""

import contextlib

with contextlib.suppress(ImportError):
    from hydra_plugins.qcxr_launcher._submitit import LocalLauncher, SlurmLauncher

    __all__ = ["LocalLauncher", "SlurmLauncher"]
