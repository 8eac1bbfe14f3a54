"""Orbax checkpoints of a run: the latest state (for resume) and the best one (lowest val loss).

Layout under the run's checkpoint folder: `latest/<epoch>/{state,meta}` and
`best/<epoch>/{state,meta}`, one step kept in each. `state` is the whole train state: params,
model state (the batch-norm running statistics), optimizer state and step. `meta` is JSON: the
loop's bookkeeping (epoch, best epoch and loss, epochs without improvement, global step, history,
tracker run id), so a restarted run continues exactly where the latest checkpoint left it.

A checkpoint written before the train state held a model state (before train-mode batch norm)
has none: its model always ran on the initial statistics, which the template (built from the same
seed and weights) holds, so they are taken from the template, with a warning.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)

# tensorstore's file driver turns "\\" into "/" and treats "[" "]" specially, so a folder whose
# path holds one of them gets its arrays written elsewhere: saving "works", restoring fails
# (issue 11: Hydra escapes ":" in job folder names as "\\:").
UNSAFE_PATH_CHARS = "\\[]"
# The train state's key of the model's non-trainable variables (steps.init_state).
MODEL_STATE = "model_state"


class Checkpoints:
    """The latest and the best checkpoint of one run.

    Args:
        directory: the run's checkpoint folder (created when missing).
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory).resolve()
        unsafe = sorted(set(UNSAFE_PATH_CHARS) & set(str(self.directory)))
        if unsafe:
            raise ValueError(
                f"checkpoint folder {self.directory} contains {''.join(unsafe)!r}, which Orbax's "
                "tensorstore reads as a path separator or pattern: the checkpoints would be "
                "written to another folder and could not be restored. Run in a folder without "
                "these characters (e.g. hydra.run.dir / hydra.sweep.subdir)"
            )
        options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True)

        def manager(folder: str) -> ocp.CheckpointManager:
            # Handlers named up front, so a fresh process can read a saved state's tree
            # (item_metadata) before restoring it.
            handlers = {
                "state": ocp.StandardCheckpointHandler(),
                "meta": ocp.JsonCheckpointHandler(),
            }
            return ocp.CheckpointManager(
                self.directory / folder, options=options, item_handlers=handlers
            )

        self._latest = manager("latest")
        self._best = manager("best")

    @staticmethod
    def _save(manager, epoch: int, state: Any, meta: dict) -> None:
        # A run killed (scancel, preemption) after saving an epoch's best checkpoint but before
        # its latest resumes from the epoch before and saves that epoch's best again. The epoch
        # recomputes the same state from the same keys, so the old one is replaced; Orbax would
        # refuse the step (StepAlreadyExistsError) and the resumed run would fail.
        if int(epoch) in manager.all_steps():
            manager.delete(int(epoch))
        manager.save(
            int(epoch),
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
            force=True,
        )
        manager.wait_until_finished()

    @staticmethod
    def _restore(manager, template: Any) -> tuple[Any, dict] | None:
        step = manager.latest_step()
        if step is None:
            return None
        kept = {}
        if isinstance(template, dict) and MODEL_STATE in template:
            saved = manager.item_metadata(step)["state"]
            if MODEL_STATE not in getattr(saved, "tree", saved):
                log.warning(
                    "checkpoint %s/%d has no %s (written before train-mode batch norm): its model "
                    "ran on the initial batch-norm statistics, which are taken from this run's "
                    "init; a resumed run trains batch norm in train mode from them",
                    manager.directory,
                    step,
                    MODEL_STATE,
                )
                kept = {MODEL_STATE: template[MODEL_STATE]}
                template = {k: v for k, v in template.items() if k != MODEL_STATE}
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        out = manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
            ),
        )
        return {**out["state"], **kept}, dict(out["meta"])

    def save_latest(self, epoch: int, state: Any, meta: dict) -> None:
        """Save the state after `epoch` (1-based) as the latest."""
        self._save(self._latest, epoch, state, meta)

    def save_best(self, epoch: int, state: Any, meta: dict) -> None:
        """Save the state after `epoch` as the best so far."""
        self._save(self._best, epoch, state, meta)

    def restore_latest(self, template: Any) -> tuple[Any, dict] | None:
        """The latest (state, meta), or None when there is none; `template` gives the tree."""
        return self._restore(self._latest, template)

    def restore_best(self, template: Any) -> tuple[Any, dict] | None:
        """The best (state, meta), or None when there is none."""
        return self._restore(self._best, template)

    @property
    def best_path(self) -> Path | None:
        """Folder of the best checkpoint (for logging it as an artifact), or None."""
        step = self._best.latest_step()
        return None if step is None else self.directory / "best" / str(step)

    def close(self) -> None:
        """Finish pending writes and release the managers."""
        self._latest.close()
        self._best.close()
