"""The resolver `${qcxr_job_dir:...}`: a multirun job's folder name that is always a safe path.

conf/config.yaml names each job's folder
`${hydra.job.num}_${qcxr_job_dir:${hydra.job.override_dirname}}`.
Hydra's `override_dirname` escapes `\\ ( ) [ ] { } : = ,` and spaces with a backslash and keeps
`/`, so `tracker.tracking_uri=sqlite:////tmp/x/mlflow.db` became the nested folders
`0_...tracker.tracking_uri=sqlite\\:/tmp/x/mlflow.db,...`: Orbax's tensorstore reads `\\` as a
path separator (and `[ ]` as a pattern), wrote the checkpoints to another folder, and every job
of the multirun trained fully and then failed restoring its best checkpoint (issue 11). This
resolver keeps letters, digits and `. , = + -` and turns every other run of characters into one
`_`, so the name is one folder level; a name over `MAX_CHARS` is cut and ends with a digest of
the whole, so it stays unique and under the file system's 255-byte limit.

Hydra imports this module when it scans for plugins, in the launching process and in each
launcher worker, before any job's folder is resolved; registering a resolver is the whole effect.
"""

from __future__ import annotations

import hashlib
import re

from omegaconf import OmegaConf

RESOLVER = "qcxr_job_dir"
MAX_CHARS = 150
_UNSAFE = re.compile(r"[^A-Za-z0-9.,=+-]+")


def safe_dirname(text: str) -> str:
    """A single, portable folder name for `text` (a job's override_dirname).

    Args:
        text: any string, e.g. `seed=0,tracker.tracking_uri=sqlite\\:////tmp/x/mlflow.db`.

    Returns:
        `text` with each run of characters outside `[A-Za-z0-9.,=+-]` replaced by `_`, and
        leading dots dropped (never `.` or `..`); over MAX_CHARS characters it is cut and ends
        with `-` and 8 hex digits of the SHA-256 of `text`.
    """
    name = _UNSAFE.sub("_", str(text)).lstrip(".")
    if len(name) > MAX_CHARS:
        digest = hashlib.sha256(str(text).encode()).hexdigest()[:8]
        name = f"{name[: MAX_CHARS - 9]}-{digest}"
    return name


OmegaConf.register_resolver(RESOLVER, safe_dirname, replace=True)
