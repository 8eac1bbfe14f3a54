"""Configs (docs/style.md, Tests): every option of every group and every experiment preset composes
through Hydra and instantiates with tiny overrides, and the values in the YAML reach the built
objects; schemas carry types only; wrong types and bad values fail at compose time; `key=a-b`
expands for integer-typed keys only (issue 11).

The real multiruns (launchers, job folders, MLflow tags) are in tests/test_multirun.py.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException, OverrideParseException
from omegaconf import OmegaConf

from hydra_plugins.qcxr_sweeper.range_sweeper import RangeSweeper, rewrite_int_range
from qcxr import run as run_module
from qcxr import schema
from qcxr.data import LABEL_SETS, DataError
from qcxr.models.backbones import Backbone
from qcxr.quantum import Ansatz
from qcxr.run import ConfigError, build, register_configs, validate_config
from tests.train_helpers import CONF, TINY, compose_run, mlflow_client

GROUPS = ("backbone", "head", "ansatz", "task", "optimizer", "data", "trainer", "tracker", "paths")
DATA_ENV = (
    "NIH_CXR_LT_IMAGES",
    "NIH_CXR_LT_LABELS",
    "MIMIC_CXR_LT_IMAGES",
    "MIMIC_CXR_LT_LABELS",
    "CXR_LT_2024_LABELS",
    "MEDMNIST_NPZ",
    "QCXR_IMAGES",
    "QCXR_LABELS",
    "HAM10000_ROOT",
    "ISIC2017_ROOT",
)


JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _yaml(group: str, option: str) -> dict:
    """An option's own values as written in its YAML (without the defaults list)."""
    node = OmegaConf.to_container(OmegaConf.load(CONF / group / f"{option}.yaml"))
    node.pop("defaults", None)
    return node


def _no_weights(node) -> object:
    """A backbone node with pretrained=false: no weights here (the mapping is tested apart)."""
    plain = OmegaConf.to_container(node)
    if "pretrained" in plain:
        plain["pretrained"] = False
    return OmegaConf.create(plain)


# ---- every group option -------------------------------------------------------------------------
def test_every_group_has_options_and_a_schema_per_option():
    for group in GROUPS:
        options = _options(group)
        assert options, group
        for option in options:
            defaults = OmegaConf.load(CONF / group / f"{option}.yaml").get("defaults")
            assert defaults is not None and defaults[-1] == "_self_", (group, option)
            entry = str(defaults[0])
            assert entry.startswith(f"/schema/{group}/") and entry.endswith("@_here_")
            assert entry.split("/")[-1].removesuffix("@_here_") in schema.GROUP_SCHEMAS[group]


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in GROUPS for o in _options(g)])
def test_option_composes_complete_and_with_its_yaml_values(tmp_path, group, option):
    """The composed group holds exactly the schema's keys, none missing, with the YAML's values."""
    # the tested group keeps its YAML values; the other groups are tiny
    tiny = [o for o in TINY if not o.startswith((f"{group}.", f"{group}="))]
    cfg = compose_run(tmp_path, [*tiny, f"{group}={option}"], tiny=False)
    node = cfg[group]
    assert not OmegaConf.missing_keys(node), (group, option)
    written = _yaml(group, option)
    for key, value in written.items():
        if isinstance(value, str) and "${" in value:
            continue
        assert OmegaConf.to_container(node, resolve=True)[key] == value, (group, option, key)
    (schema_name,) = [
        str(d).split("/")[-1].removesuffix("@_here_")
        for d in OmegaConf.load(CONF / group / f"{option}.yaml").defaults[:1]
    ]
    declared = {f.name for f in dataclasses.fields(schema.GROUP_SCHEMAS[group][schema_name])}
    assert set(node) == declared, (group, option, set(node) ^ declared)


@pytest.mark.parametrize(
    "option",
    [
        pytest.param(o, marks=pytest.mark.slow) if o.startswith("resnet") else o  # ~40 s on CPU
        for o in _options("backbone")
    ],
)
def test_backbone_builds_and_its_features_have_the_configured_size(tmp_path, option):
    size = ["backbone.image_size=32"]
    if option == "resnet18_28":  # no crop: its resize size is its image size
        size.append("backbone.resize_size=32")
    cfg = compose_run(tmp_path, [f"backbone={option}", *size], tiny=False)
    built = build(_no_weights(cfg.backbone))
    assert isinstance(built, Backbone) and built.name == option
    assert built.image_size == 32 and built.freeze is cfg.backbone.freeze
    variables = built.init(jax.random.key(0))
    features = built.module.apply(variables, jnp.ones((2, 32, 32, 3), jnp.float32))
    assert features.shape == (2, built.feature_dim) and bool(jnp.all(jnp.isfinite(features)))
    if option == "tiny":
        assert built.feature_dim == _yaml("backbone", "tiny")["feature_dim"]
    else:
        dims = {"resnet18": 512, "resnet50": 2048, "mobilenet_v2": 1280, "mobilenet_v2_paper": 1280}
        dims["resnet18_28"] = 512
        assert built.feature_dim == dims[option]
        assert built.resize_size == cfg.backbone.resize_size
        if option != "resnet18_28":
            assert built.resize_size == _yaml("backbone", option)["resize_size"]


# Only dqc.yaml pulls the ansatz in: the dqc head is built with every ansatz; each other head,
# which never sees one, once, with a non-default ansatz chosen to show that it does not leak in.
# One case per distinct code path: 7 instead of the 16 of the full head x ansatz product.
HEAD_ANSATZ = [("dqc", a) for a in _options("ansatz")] + [
    (h, "basic_entangler") for h in _options("head") if h != "dqc"
]


@pytest.mark.parametrize(("head", "ansatz"), HEAD_ANSATZ)
def test_head_and_ansatz_build_and_give_one_logit_per_label(tmp_path, head, ansatz):
    cfg = compose_run(
        tmp_path, [f"head={head}", f"ansatz={ansatz}", "task=cxr14", "ansatz.num_layers=1"]
    )
    built = build(cfg.head)
    if head == "dqc":
        assert isinstance(built.ansatz, Ansatz) and built.ansatz.name == ansatz
        assert (built.ansatz.num_qubits, built.ansatz.num_layers) == (14, 1)
        assert built.ansatz.encoding == _yaml("ansatz", ansatz)["encoding"]
    else:
        assert "ansatz" not in cfg.head  # only dqc.yaml pulls the ansatz in (docs/style.md)
    features = jnp.linspace(-1.0, 1.0, 2 * 8, dtype=jnp.float32).reshape(2, 8)
    variables = built.init(jax.random.key(0), features)
    logits = built.apply(variables, features)
    assert logits.shape == (2, 14) and bool(jnp.all(jnp.isfinite(logits)))


@pytest.mark.parametrize("option", _options("ansatz"))
def test_ansatz_values_reach_the_circuit(tmp_path, option):
    cfg = compose_run(tmp_path, [f"ansatz={option}", "ansatz.num_layers=2", "ansatz.init=small"])
    built = build(cfg.ansatz)
    assert (built.name, built.num_qubits, built.num_layers, built.init) == (option, 8, 2, "small")


@pytest.mark.parametrize("option", _options("optimizer"))
def test_optimizer_learning_rate_reaches_the_updates(tmp_path, option):
    """Each optimizer is linear in its learning rate: doubling it doubles the first update."""
    params = {"w": jnp.linspace(0.5, 1.5, 6, dtype=jnp.float32).reshape(3, 2)}
    grads = {"w": jnp.linspace(-1.0, 1.0, 6, dtype=jnp.float32).reshape(3, 2)}
    updates = []
    for scale in (1.0, 2.0):
        lr = scale * float(_yaml("optimizer", option)["learning_rate"])
        cfg = compose_run(tmp_path, [f"optimizer={option}", f"optimizer.learning_rate={lr}"])
        assert cfg.optimizer.learning_rate == pytest.approx(lr)
        tx = build(cfg.optimizer)(total_steps=10)
        update, _ = tx.update(grads, tx.init(params), params)
        updates.append(np.asarray(update["w"]))
    assert np.abs(updates[0]).max() > 0
    np.testing.assert_allclose(updates[1], 2 * updates[0], rtol=1e-5, atol=1e-12)
    stepped = optax.apply_updates(params, {"w": jnp.asarray(updates[0])})
    assert bool(jnp.all(jnp.isfinite(stepped["w"])))


@pytest.mark.parametrize("option", _options("task"))
def test_task_label_count_flows_to_head_and_ansatz(tmp_path, option):
    cfg = compose_run(tmp_path, [f"task={option}"])
    assert cfg.task.num_labels == len(LABEL_SETS[cfg.task.labels])
    assert cfg.head.num_labels == cfg.ansatz.num_qubits == cfg.task.num_labels
    assert cfg.tracker.experiment == option  # one MLflow experiment per task
    validate_config(cfg)


@pytest.mark.parametrize("option", _options("data"))
def test_data_option_builds(tmp_path, monkeypatch, option):
    for var in DATA_ENV:
        monkeypatch.delenv(var, raising=False)
    overrides = [f"data={option}", f"data.cache_dir={tmp_path / 'images'}"]
    if option == "synthetic":
        overrides += ["data.num_train=8", "data.num_val=4", "data.num_test=4"]
    cfg = compose_run(tmp_path, overrides, tiny=False)
    assert cfg.data._target_ == f"qcxr.data.{option}"
    factory = build(cfg.data)
    if option == "synthetic":
        dm = factory(task="cxr8", batch_size=2, seed=0, image_size=8)
        batch = next(iter(dm.batches("train", 0)))
        assert batch["image"].shape == (2, 8, 8, 3) and batch["labels"].shape == (2, 8)
        assert dm.num_labels == 8
    else:  # no location configured: fails at start naming the key and the variable
        with pytest.raises(DataError, match=r"data\.(image_dir|npz|root)=.*environment variable"):
            factory(task="cxr8", batch_size=2, seed=0, image_size=8)


def test_trainer_values_are_typed(tmp_path):
    cfg = compose_run(tmp_path, ["trainer.batch_size=8"])
    assert cfg.trainer.batch_size == 8 and isinstance(cfg.trainer.max_epochs, int)
    assert cfg.trainer.compute_dtype == "float32" and isinstance(cfg.trainer.resume, bool)


@pytest.mark.parametrize("option", _options("tracker"))
def test_tracker_records_a_run(tmp_path, option):
    cfg = compose_run(tmp_path, [f"tracker={option}", "tags.note=2024-05"])
    tracker = build(cfg.tracker)
    run_id = tracker.start("probe", {"note": str(cfg.tags.note)})
    tracker.log_params({"seed": 0})
    tracker.log_metrics({"val/loss": 0.5}, step=1)
    tracker.end("FINISHED")
    if option == "none":
        assert tracker.metrics == {"val/loss": 0.5} and tracker.status == "FINISHED"
        assert not (tmp_path / "mlruns").exists()
        return
    client = mlflow_client(tmp_path)
    run = client.get_run(run_id)
    assert client.get_experiment(run.info.experiment_id).name == "synthetic"
    assert run.data.tags["note"] == "2024-05" and run.data.params["seed"] == "0"
    assert run.data.metrics["val/loss"] == 0.5 and run.info.status == "FINISHED"


def test_paths_read_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("QCXR_CACHE_DIR", str(tmp_path / "from_env"))
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose("config", overrides=[f"paths.root_dir={tmp_path}"])
    assert cfg.paths.cache_dir == str(tmp_path / "from_env")
    assert cfg.paths.mlruns_dir == str(tmp_path / "mlruns")


# ---- experiment presets -------------------------------------------------------------------------
@pytest.mark.parametrize("preset", [p for p in _options("experiment") if p.startswith("paper_")])
def test_preset_composes_and_builds(tmp_path, preset):
    cfg = compose_run(tmp_path, [f"experiment={preset}", "ansatz.num_layers=1"], tiny=False)
    task = preset.removeprefix("paper_")
    assert cfg.task.name == task and cfg.task.num_labels == len(LABEL_SETS[task])
    assert cfg.data._target_ == "qcxr.data.nih_cxr_lt"
    assert cfg.optimizer._target_ == "qcxr.train.optim.adam"
    assert cfg.optimizer.learning_rate == 1e-4
    assert (cfg.trainer.batch_size, cfg.trainer.patience, cfg.trainer.max_epochs) == (32, 5, 50)
    assert cfg.backbone.pretrained is True and cfg.backbone.freeze is False
    header = (CONF / "experiment" / f"{preset}.yaml").read_text().splitlines()[:12]
    assert any("python train.py" in line for line in header)
    validate_config(cfg)
    backbone = build(_no_weights(cfg.backbone))
    assert backbone.name == "resnet50" and backbone.feature_dim == 2048
    assert (backbone.image_size, backbone.resize_size) == (224, 256)
    head = build(cfg.head)
    assert head.ansatz.num_qubits == cfg.task.num_labels and head.ansatz.init == "normal_2pi"


@pytest.mark.parametrize(
    "preset",
    [p for p in _options("experiment") if not p.startswith(("paper_", "cxr_lt_2024_"))],
)
def test_multiclass_preset_composes_and_builds(tmp_path, preset):
    """The second paper's presets (issue 13): a multiclass task, its source, a built backbone
    whose preprocessing is stated, a head with one output per class, a stated command."""
    cfg = compose_run(tmp_path, [f"experiment={preset}", "ansatz.num_layers=1"], tiny=False)
    assert cfg.task.kind == "multiclass"
    assert cfg.task.num_labels == len(LABEL_SETS[cfg.task.labels])
    header = (CONF / "experiment" / f"{preset}.yaml").read_text().splitlines()[:16]
    assert any("python train.py" in line for line in header)
    validate_config(cfg)
    backbone = build(_no_weights(cfg.backbone))
    if preset.startswith("mobilenet_cdl_"):
        dataset = preset.removeprefix("mobilenet_cdl_")
        source = {"dermamnist": "medmnist"}.get(dataset, dataset)
        assert cfg.task.name == dataset and cfg.data._target_ == f"qcxr.data.{source}"
        assert backbone.name == "mobilenet_v2_paper" and backbone.feature_dim == 1280
        prep = backbone.preprocessing
        assert (prep.image_size, prep.resize_size, prep.resize_mode) == (128, 128, "square")
        assert cfg.optimized_metric == "val/accuracy"
    head = build(cfg.head)
    logits = head.apply(head.init(jax.random.key(0), jnp.ones((2, 4))), jnp.ones((2, 4)))
    assert logits.shape == (2, cfg.task.num_labels)


# ---- schemas: types only ------------------------------------------------------------------------
@pytest.mark.parametrize("preset", [p for p in _options("experiment") if p.startswith("cxr_lt_")])
def test_cxr_lt_2024_preset_composes(tmp_path, preset):
    """CXR-LT 2024 (issue 14): the challenge's task and files, one qubit per label, a command."""
    cfg = compose_run(tmp_path, [f"experiment={preset}", "head=dqc"], tiny=False)
    task = {"cxr_lt_2024_task1": "cxr40", "cxr_lt_2024_task2": "cxr26"}[preset]
    assert cfg.task.name == task and cfg.task.kind == "multilabel"
    assert cfg.head.num_labels == cfg.ansatz.num_qubits == len(LABEL_SETS[task])
    assert cfg.head.method == "auto" and cfg.data._target_ == "qcxr.data.cxr_lt_2024"
    number = preset[-1]
    assert cfg.data.val_file == f"development_labeled_task{number}.csv"
    assert cfg.data.test_file == f"test_labeled_task{number}.csv"
    assert cfg.data.train_file == "train_labeled.csv"
    header = (CONF / "experiment" / f"{preset}.yaml").read_text().splitlines()[:16]
    assert any(f"python train.py -m experiment={preset} head=cdl,dqc" in x for x in header)
    assert any("not yet measured" in line for line in header)
    validate_config(cfg)
    head = build(cfg.head)  # a module: nothing is simulated before the first batch
    assert head.ansatz.num_qubits == len(LABEL_SETS[task]) and head.sim.method == "auto"


def test_schemas_hold_no_values():
    """Values live in the YAML; a schema default could disagree with it (TinySchema did)."""
    for options in schema.GROUP_SCHEMAS.values():
        for node in options.values():
            for f in dataclasses.fields(node):
                assert f.default == schema.MISSING, (node.__name__, f.name, f.default)
    for f in dataclasses.fields(schema.RunSchema):
        if f.name != "tags":
            assert f.default == schema.MISSING, f.name
    assert "default_data" not in {f.name for f in dataclasses.fields(schema.TaskSchema)}


@pytest.mark.parametrize(
    "bad",
    [
        "seed=abc",
        "seed=1.5",
        "seed=a-b",
        "seed=1-2-3",
        "trainer.max_epochs=x",
        "optimizer.learning_rate=fast",
        "data.num_train=many",
        "data.augment=maybe",
        "backbone.image_size=big",
        "task.num_labels=eight",
    ],
)
def test_wrong_types_fail_at_compose(tmp_path, bad):
    key = bad.split("=")[0]
    with pytest.raises(ConfigCompositionException) as err:
        compose_run(tmp_path, [bad])
    assert key in str(err.value) + str(err.value.__cause__)


def test_tags_are_an_open_mapping_of_strings(tmp_path):
    cfg = compose_run(tmp_path, ["tags.note=2024-05", "tags.ticket=12-15", "tags.run=7"])
    assert dict(cfg.tags) == {"note": "2024-05", "ticket": "12-15", "run": "7"}


# ---- values the schema cannot check: validated before anything is built ------------------------
@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("seed=-1", "seed=-1 is out of range"),
        ("seed=4294967296", "seed=4294967296 is out of range"),
        ("trainer.max_epochs=0", "trainer.max_epochs=0 must be at least 1"),
        ("trainer.patience=0", "trainer.patience=0 must be at least 1"),
        ("trainer.patience=-3", "trainer.patience=-3 must be at least 1"),
        ("trainer.batch_size=0", "trainer.batch_size=0 must be at least 1"),
        ("task.num_labels=5", "task.num_labels=5 does not match task.labels='cxr8', which has 8"),
        ("task.labels=cxr99", "unknown label set 'cxr99'"),
        ("head.num_labels=5", "head.num_labels=5 differs from task.num_labels=8"),
    ],
)
def test_bad_values_fail_before_anything_is_built(tmp_path, bad, message):
    cfg = compose_run(tmp_path, [bad])
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        run_module.run(cfg)
    assert not (tmp_path / "run").exists()  # no output folder, no checkpoint
    assert not (tmp_path / "mlruns").exists()  # no tracker run
    assert not (tmp_path / "cache").exists()  # no data generated


def test_a_run_folder_orbax_would_misplace_fails_first(tmp_path):
    cfg = compose_run(tmp_path, [])
    cfg.paths.output_dir = str(tmp_path / "job[1]")  # e.g. hydra.run.dir=outputs/job[1]
    with pytest.raises(ConfigError, match=r"the run folder .*job\[1\] contains '\[\]'"):
        run_module.run(cfg)
    assert not (tmp_path / "job[1]").exists()


def test_valid_edges_pass(tmp_path):
    validate_config(
        compose_run(
            tmp_path, ["seed=0", "trainer.max_epochs=1", "trainer.patience=1", "seed=4294967295"]
        )
    )


# ---- the range syntax: integer-typed keys only --------------------------------------------------
def test_integer_keys_come_from_the_schemas():
    keys = schema.int_keys()
    assert {
        "seed",
        "trial",
        "trainer.max_epochs",
        "trainer.patience",
        "trainer.batch_size",
        "ansatz.num_layers",
        "task.num_labels",
        "data.num_train",
        "backbone.image_size",
    } <= keys
    assert (
        not {
            "tags",
            "tags.note",
            "optimizer.learning_rate",
            "head.chunk_size",
            "study",
            "task.name",
            "tracker.tracking_uri",
            "data.augment",
        }
        & keys
    )


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("seed=0-4", "seed=0,1,2,3,4"),
        ("seed=3-3", "seed=3"),
        ("+seed=1-2", "+seed=1,2"),
        ("ansatz.num_layers=1-3", "ansatz.num_layers=1,2,3"),
        ("trainer.batch_size= 2 - 4", "trainer.batch_size=2,3,4"),
        ("tags.note=2024-05", "tags.note=2024-05"),
        ("tags.ticket=12-15", "tags.ticket=12-15"),
        ("optimizer.learning_rate=1e-4", "optimizer.learning_rate=1e-4"),
        ("head=dqc,cdl", "head=dqc,cdl"),
        ("seed=range(0,5)", "seed=range(0,5)"),
    ],
)
def test_range_rewrite(line, expected):
    assert rewrite_int_range(line) == expected


def test_empty_range_names_the_fix():
    with pytest.raises(OverrideParseException, match=r"write the smaller bound first \(seed=0-4\)"):
        rewrite_int_range("seed=4-0")
    assert rewrite_int_range("tags.span=4-0") == "tags.span=4-0"  # a string: no range at all


def test_hydra_parser_reads_ranges_for_integer_keys_only():
    parsed = OverridesParser.create().parse_overrides(
        ["seed=0-4", "tags.note=2024-05", "tags.ticket=12-15"]
    )
    assert [o.is_sweep_override() for o in parsed] == [True, False, False]
    assert [o.value() for o in parsed[1:]] == ["2024-05", "12-15"]


def test_range_sweeper_grid():
    parser = OverridesParser.create()
    overrides = parser.parse_overrides(["head=dqc,cdl", "seed=0-4", "tags.ticket=12-15"])
    (batch,) = RangeSweeper.split_arguments(overrides, None)
    assert len(batch) == 10
    assert sorted({int(o[1].split("=")[1]) for o in batch}) == [0, 1, 2, 3, 4]
    assert all(o[2] == "tags.ticket=12-15" for o in batch)
    (same,) = RangeSweeper.split_arguments(parser.parse_overrides(["seed=range(0,5)"]), None)
    assert [o[0] for o in same] == [f"seed={i}" for i in range(5)]


def test_a_range_without_multirun_is_refused(tmp_path):
    with pytest.raises(ConfigCompositionException, match="--multirun"):
        compose_run(tmp_path, ["seed=0-4"])


# ---- launchers ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("override", "target", "n_jobs"),
    [
        ([], JOBLIB, 2),
        (
            ["hydra/launcher=basic"],
            "hydra._internal.core_plugins.basic_launcher.BasicLauncher",
            None,
        ),
        (
            ["hydra/launcher=joblib"],
            "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",
            -1,
        ),
    ],
)
def test_launcher_is_a_config_choice(tmp_path, override, target, n_jobs):
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose(
            "config", overrides=[f"paths.root_dir={tmp_path}", *override], return_hydra_config=True
        )
    assert cfg.hydra.launcher._target_ == target
    assert cfg.hydra.launcher.get("n_jobs") == n_jobs
    assert "launcher" not in OmegaConf.load(CONF / "config.yaml").get("hydra", {})


def test_sweep_none_selects_the_range_sweeper(tmp_path):
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose("config", overrides=[f"paths.root_dir={tmp_path}"], return_hydra_config=True)
    assert cfg.hydra.sweeper._target_ == "hydra_plugins.qcxr_sweeper.range_sweeper.RangeSweeper"


def test_job_folder_name_is_one_safe_level():
    from hydra_plugins.qcxr_sweeper.job_dir import MAX_CHARS, safe_dirname

    name = safe_dirname(r"seed=0,tracker.tracking_uri=sqlite\:////tmp/x/mlflow.db")
    assert name == "seed=0,tracker.tracking_uri=sqlite_tmp_x_mlflow.db"
    assert safe_dirname(r"data.fractions=\[0.8\,0.1\,0.1\]") == "data.fractions=_0.8_,0.1_,0.1_"
    assert safe_dirname("../up") == "_up" and safe_dirname("") == ""
    long = safe_dirname("x=" + "a" * 400)
    assert len(long) == MAX_CHARS and long != safe_dirname("x=" + "a" * 399)
    assert Path(long).name == long


def test_checkpoints_refuse_a_folder_orbax_would_misplace(tmp_path):
    from qcxr.train.checkpoint import Checkpoints

    for name in ("a\\:b", "a[b]"):
        with pytest.raises(ValueError, match="tensorstore"):
            Checkpoints(tmp_path / name / "checkpoints")
