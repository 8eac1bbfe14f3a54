"""`qcxr.run.resume_plan`: what a run folder's saved state lets a re-run do (no training here; the
end-to-end versions with real runs are in tests/test_run_lifecycle.py)."""

from __future__ import annotations

import json
import math

import pytest

from qcxr.run import STATE_FILE, RunError, resume_plan

CONFIG = {
    "head._target_": "qcxr.models.heads.dqc_head",
    "optimizer.learning_rate": 1e-4,
    "trainer.max_epochs": 2,
    "trainer.progress": True,
    "seed": 0,
}


def _folder(tmp_path, status, epochs_run=2, stopped_early=False, config=CONFIG):
    state = {
        "run_id": "abc",
        "config": config,
        "status": status,
        "epochs_run": epochs_run,
        "stopped_early": stopped_early,
        "resumes": 0,
    }
    (tmp_path / STATE_FILE).write_text(json.dumps(state))
    return tmp_path


def test_empty_folder_starts_a_new_run(tmp_path):
    assert resume_plan(tmp_path, CONFIG, resume=True) == (None, {})
    assert resume_plan(tmp_path, CONFIG, resume=False) == (None, {})


@pytest.mark.parametrize("status", ["RUNNING", "KILLED", "FAILED"])
def test_an_unfinished_run_with_the_same_config_is_resumed(tmp_path, status):
    state, changed = resume_plan(_folder(tmp_path, status, epochs_run=1), CONFIG, resume=True)
    assert state["run_id"] == "abc" and changed == {}


@pytest.mark.parametrize("status", ["RUNNING", "FINISHED"])
def test_a_changed_config_is_refused_naming_folder_keys_and_fix(tmp_path, status):
    new = {**CONFIG, "head._target_": "qcxr.models.heads.cdl_head", "optimizer.learning_rate": 1e-3}
    with pytest.raises(RunError) as err:
        resume_plan(_folder(tmp_path, status), new, resume=True)
    text = str(err.value)
    assert str(tmp_path) in text and "hydra.run.dir" in text
    assert "head._target_: 'qcxr.models.heads.dqc_head' -> 'qcxr.models.heads.cdl_head'" in text
    assert "optimizer.learning_rate: 0.0001 -> 0.001" in text


def test_a_key_missing_on_one_side_counts_as_a_change(tmp_path):
    with pytest.raises(RunError, match=r"head.ansatz.num_qubits: '<absent>' -> 8"):
        resume_plan(
            _folder(tmp_path, "KILLED"), {**CONFIG, "head.ansatz.num_qubits": 8}, resume=True
        )


def test_resumable_keys_may_change_and_are_reported(tmp_path):
    new = {**CONFIG, "trainer.max_epochs": 5, "trainer.progress": False}
    state, changed = resume_plan(_folder(tmp_path, "FINISHED"), new, resume=True)
    assert state["run_id"] == "abc"
    assert changed == {"trainer.max_epochs": (2, 5), "trainer.progress": (True, False)}


def test_a_finished_run_with_nothing_left_is_not_reopened(tmp_path):
    with pytest.raises(RunError, match="nothing is left to train with trainer.max_epochs=2"):
        resume_plan(_folder(tmp_path, "FINISHED"), CONFIG, resume=True)
    early = _folder(tmp_path, "FINISHED", stopped_early=True)
    with pytest.raises(RunError, match="stopped early after 2 epochs"):
        resume_plan(early, {**CONFIG, "trainer.max_epochs": 9}, resume=True)


def test_resume_false_over_an_existing_run_is_refused(tmp_path):
    with pytest.raises(RunError, match="trainer.resume=false would overwrite"):
        resume_plan(_folder(tmp_path, "KILLED"), CONFIG, resume=False)


def test_checkpoints_without_a_recorded_config_are_refused(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(RunError, match="config was not recorded"):
        resume_plan(tmp_path, CONFIG, resume=True)


def test_a_damaged_state_file_is_named(tmp_path):
    (tmp_path / STATE_FILE).write_text("{not json")
    with pytest.raises(RunError, match=rf"{STATE_FILE} is not valid JSON"):
        resume_plan(tmp_path, CONFIG, resume=True)


@pytest.mark.parametrize("schedule", ["cosine", "warmup_cosine", "multistep"])
@pytest.mark.parametrize("status", ["FINISHED", "KILLED"])
def test_a_larger_max_epochs_under_a_decaying_schedule_is_refused(tmp_path, schedule, status):
    # total_steps (max_epochs x batches) shapes these schedules: resuming with another max_epochs
    # would silently follow another learning-rate curve (issue 20 item 2).
    config = {**CONFIG, "optimizer.schedule": schedule}
    folder = _folder(tmp_path, status, epochs_run=2, config=config)
    with pytest.raises(RunError, match=f"optimizer.schedule={schedule}.*optimizer.schedule=cons"):
        resume_plan(folder, {**config, "trainer.max_epochs": 4}, resume=True)


def test_a_larger_max_epochs_under_a_constant_schedule_still_resumes(tmp_path):
    config = {**CONFIG, "optimizer.schedule": "constant"}
    folder = _folder(tmp_path, "FINISHED", epochs_run=2, config=config)
    state, changed = resume_plan(folder, {**config, "trainer.max_epochs": 4}, resume=True)
    assert state is not None and changed == {"trainer.max_epochs": (2, 4)}


def test_finished_cosine_run_is_not_told_to_raise_max_epochs(tmp_path):
    config = {**CONFIG, "optimizer.schedule": "cosine"}
    folder = _folder(tmp_path, "FINISHED", epochs_run=2, config=config)
    with pytest.raises(RunError) as err:
        resume_plan(folder, config, resume=True)
    assert "raise trainer.max_epochs" not in str(err.value)
    assert "new run in another hydra.run.dir" in str(err.value)


def test_step_learning_rates_share_one_rate_per_accumulated_update():
    from qcxr.train.optim import step_learning_rates

    lr = step_learning_rates(1.0, "cosine", total_steps=8, accumulation_steps=2)  # 4 updates
    rates = [lr(s) for s in range(8)]
    assert rates[0] == rates[1] == 1.0 and rates[2] == rates[3] < 1.0
    assert rates[6] == pytest.approx(0.5 * (1 + math.cos(math.pi * 3 / 4)))
    assert step_learning_rates(0.3)(5) == pytest.approx(0.3)


def test_rebuilt_docstring_lists_exactly_its_fields():
    # Its docstring described a `source` field that does not exist (issue 20 item 6).
    import dataclasses
    import re

    from qcxr.run import Rebuilt

    doc = Rebuilt.__doc__.split("Attributes:", 1)[1]
    documented = set(re.findall(r"^ {8}(\w+):", doc, flags=re.M))
    assert documented == {f.name for f in dataclasses.fields(Rebuilt)}
