"""Every option of every group and every preset composes and instantiates; seeds are typed;
`seed=a-b` sweeps."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from hydra_plugins.qcxr_sweeper.range_sweeper import (
    RangeSweeper,
    expand_int_range,
    rewrite_int_range,
)
from qcxr.models.backbones import Backbone
from qcxr.quantum import Ansatz
from tests.train_helpers import CONF, compose_run

WL = ["qcxr.*"]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_groups_present():
    for group in ("backbone", "head", "ansatz", "task", "optimizer", "trainer", "tracker",
                  "paths", "data", "experiment"):
        assert (CONF / group).is_dir(), group
    assert set(_options("optimizer")) == {"adam", "adamw", "sgd", "lion", "lamb", "adafactor"}
    assert {"paper_cxr8", "paper_cxr14", "paper_cxr19"} <= set(_options("experiment"))


@pytest.mark.parametrize("head", _options("head"))
@pytest.mark.parametrize("ansatz", _options("ansatz"))
def test_head_and_ansatz_instantiate(tmp_path, head, ansatz):
    cfg = compose_run(tmp_path, [f"head={head}", f"ansatz={ansatz}", "task=cxr8"])
    built = instantiate(cfg.head, _execution_whitelist_=WL)
    if head == "dqc":
        assert isinstance(built.ansatz, Ansatz) and built.ansatz.name == ansatz
        assert built.ansatz.num_qubits == 8
    else:
        assert "ansatz" not in cfg.head and built.num_labels == 8


@pytest.mark.parametrize("option", _options("optimizer"))
def test_optimizer_options_build(tmp_path, option):
    import jax.numpy as jnp
    import optax

    cfg = compose_run(tmp_path, [f"optimizer={option}", "optimizer.schedule=warmup_cosine",
                                 "optimizer.warmup_steps=2", "optimizer.accumulation_steps=2"])
    tx = instantiate(cfg.optimizer, _execution_whitelist_=WL)(total_steps=10)
    params = {"w": jnp.ones((3, 2))}
    state = tx.init(params)
    updates, _ = tx.update({"w": jnp.ones((3, 2))}, state, params)
    assert jnp.all(jnp.isfinite(optax.apply_updates(params, updates)["w"]))


@pytest.mark.parametrize("option", _options("backbone"))
def test_backbone_options(tmp_path, option):
    cfg = compose_run(tmp_path, [f"backbone={option}"], tiny=False)
    node = OmegaConf.to_container(cfg.backbone)
    if "pretrained" in node:
        node["pretrained"] = False  # no weights in the test environment; the mapping is tested
    built = instantiate(OmegaConf.create(node), _execution_whitelist_=WL)
    assert isinstance(built, Backbone) and built.image_size == cfg.backbone.image_size


@pytest.mark.parametrize("task", _options("task"))
def test_task_options(tmp_path, task):
    from qcxr.data import LABEL_SETS

    cfg = compose_run(tmp_path, [f"task={task}"])
    assert len(LABEL_SETS[cfg.task.labels]) == cfg.task.num_labels
    assert cfg.head.num_labels == cfg.task.num_labels


@pytest.mark.parametrize("tracker", _options("tracker"))
def test_tracker_options(tmp_path, tracker):
    cfg = compose_run(tmp_path, [f"tracker={tracker}"])
    built = instantiate(cfg.tracker, _execution_whitelist_=WL)
    assert hasattr(built, "log_metrics")


@pytest.mark.parametrize("preset", _options("experiment"))
def test_presets_compose(tmp_path, preset):
    cfg = compose_run(tmp_path, [f"experiment={preset}"], tiny=False)
    assert cfg.backbone._target_.endswith("resnet50")
    assert cfg.data._target_ == "qcxr.data.nih_cxr_lt"
    assert cfg.optimizer._target_.endswith(".adam") and cfg.optimizer.learning_rate == 1e-4
    assert cfg.trainer.batch_size == 32 and cfg.trainer.patience == 5
    assert cfg.trainer.max_epochs == 50 and cfg.head.num_labels == cfg.task.num_labels
    header = (CONF / "experiment" / f"{preset}.yaml").read_text().splitlines()[:12]
    assert any("python train.py" in line for line in header)
    node = OmegaConf.to_container(cfg.backbone)
    node["pretrained"] = False
    assert instantiate(OmegaConf.create(node), _execution_whitelist_=WL).feature_dim == 2048
    instantiate(cfg.head, _execution_whitelist_=WL)


@pytest.mark.parametrize("bad", ["seed=abc", "seed=1.5", "trainer.max_epochs=x",
                                 "optimizer.learning_rate=fast", "seed=0-4", "seed=a-b"])
def test_wrong_types_fail_at_compose(tmp_path, bad):
    with pytest.raises(ConfigCompositionException):
        compose_run(tmp_path, [bad])


def test_int_range_expands():
    assert expand_int_range("0-4") == [0, 1, 2, 3, 4]
    assert expand_int_range("3-3") == [3]
    assert expand_int_range("dqc") is None and expand_int_range("1e-4") is None
    with pytest.raises(ValueError):
        expand_int_range("4-0")


def test_range_sweeper_grid():
    parser = OverridesParser.create()
    overrides = parser.parse_overrides(["head=dqc,cdl", "seed=0-4", "trainer.max_epochs=3"])
    (batch,) = RangeSweeper.split_arguments(overrides, None)
    assert len(batch) == 10
    seeds = sorted({int(o[1].split("=")[1]) for o in batch})
    assert seeds == [0, 1, 2, 3, 4]
    (same,) = RangeSweeper.split_arguments(parser.parse_overrides(["seed=range(0,5)"]), None)
    assert [o[0] for o in same] == [f"seed={i}" for i in range(5)]


def test_sweeper_is_the_default():
    # The default sweep option `none` selects the range sweeper; a study (sweeps/) selects Optuna.
    assert "- sweep: none" in Path(CONF / "config.yaml").read_text()
    assert "override /hydra/sweeper: range" in Path(CONF / "sweep" / "none.yaml").read_text()


def test_override_lines_rewritten():
    assert rewrite_int_range("seed=0-4") == "seed=0,1,2,3,4"
    assert rewrite_int_range("optimizer.learning_rate=1e-4") == "optimizer.learning_rate=1e-4"
    assert rewrite_int_range("head=dqc,cdl") == "head=dqc,cdl"
