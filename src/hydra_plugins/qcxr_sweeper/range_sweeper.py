"""`RangeSweeper`: Hydra's basic sweeper, plus integer ranges `a-b` for integer-typed keys.

`python train.py -m head=dqc,cdl seed=0-4` launches ten jobs: `seed=0-4` means every integer
from 0 to 4 (inclusive), the same as `seed=range(0,5)`, which keeps working (docs/style.md, sweeps).
The range is read only for keys that qcxr's typed schemas declare `int` (`qcxr.schema.int_keys`:
seed, trainer.max_epochs, ansatz.num_layers, ...); any other key keeps its value as written, so
`tags.note=2024-05` is the string "2024-05" and `tags.ticket=12-15` is one job, not four.
A non-integer seed (`seed=a-b`, `seed=1.5`) is not a range and fails at compose time against the
typed schema.

The one mechanism: Hydra composes the primary config with the command line before any sweeper
runs, so the range must already read as a sweep there. Importing this plugin (Hydra imports every
plugin module when it scans for plugins, before composing) makes Hydra's override parser read
`key=a-b`, for an integer-typed key, as the choice sweep `key=a,a+1,...,b`; the sweeper then
sees an ordinary sweep. Without `-m`, Hydra refuses it with its usual "add --multirun" message.

Before launching, the sweeper composes every job's config and checks it with
`qcxr.run.validate_config`, so a bad value anywhere in a grid (`seed=-1`,
`trainer.max_epochs=0`) fails the multirun before any job starts.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException, OverrideParseException

from qcxr.schema import int_keys

# `[+|++]key=a-b` with integers a, b (either may be negative): the only pattern of the syntax.
OVERRIDE_RANGE = re.compile(r"^(\+{0,2})([\w.]+)=\s*(-?\d+)\s*-\s*(-?\d+)\s*$")


@functools.cache
def _int_keys() -> frozenset[str]:
    return int_keys()


def rewrite_int_range(line: str, keys: frozenset[str] | None = None) -> str:
    """`key=a-b` -> `key=a,a+1,...,b` for an integer-typed key; any other line is unchanged.

    Args:
        line: one override as written on the command line.
        keys: the integer-typed keys (default: `qcxr.schema.int_keys()`).

    Returns:
        The override with the range written out as a choice sweep, or `line` itself.

    Raises:
        OverrideParseException: `a-b` with a > b on an integer key.
    """
    match = OVERRIDE_RANGE.match(line)
    if match is None:
        return line
    prefix, key, start, stop = (
        match.group(1),
        match.group(2),
        int(match.group(3)),
        int(match.group(4)),
    )
    if key not in (_int_keys() if keys is None else keys):
        return line
    if start > stop:
        raise OverrideParseException(
            override=line,
            message=f"{line!r}: the integer range {start}-{stop} is empty; write the smaller "
            f"bound first ({key}={stop}-{start})",
        )
    return f"{prefix}{key}={','.join(str(v) for v in range(start, stop + 1))}"


def _install() -> None:
    if getattr(OverridesParser.parse_overrides, "_qcxr_range", False):
        return
    original = OverridesParser.parse_overrides

    @functools.wraps(original)
    def parse_overrides(self, overrides):
        return original(self, [rewrite_int_range(o) for o in overrides])

    parse_overrides._qcxr_range = True
    OverridesParser.parse_overrides = parse_overrides


_install()


class RangeSweeper(BasicSweeper):
    """Hydra's BasicSweeper; every job's config is composed and validated before any launch."""

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        """Compose each job's config (as the basic sweeper does) and check it with qcxr's rules.

        Raises:
            ConfigCompositionException: a job's config fails `qcxr.run.validate_config`; the
                message names the job's overrides and the fix.
        """
        from qcxr.run import ConfigError, validate_config  # jax: only when a sweep runs

        assert self.config is not None and self.hydra_context is not None
        for overrides in batch:
            cfg = self.hydra_context.config_loader.load_sweep_config(
                master_config=self.config, sweep_overrides=list(overrides)
            )
            try:
                validate_config(cfg)
            except ConfigError as err:
                raise ConfigCompositionException(
                    f"job {' '.join(overrides)}: {err}; no job of this multirun was launched"
                ) from err


@dataclass
class RangeSweeperConf:
    """Config of `hydra/sweeper: range`."""

    _target_: str = "hydra_plugins.qcxr_sweeper.range_sweeper.RangeSweeper"
    max_batch_size: int | None = None
    params: dict[str, str] | None = None


ConfigStore.instance().store(
    group="hydra/sweeper", name="range", node=RangeSweeperConf, provider="qcxr"
)
