"""`RangeSweeper`: Hydra's basic sweeper, plus integer ranges written `a-b`.

`python train.py -m head=dqc,cdl seed=0-4` launches ten jobs: `seed=0-4` means every integer
from 0 to 4 (inclusive), the same as `seed=range(0,5)`, which keeps working (STYLE.md, sweeps).
Only a plain value matching `<int>-<int>` is expanded; anything else is passed on unchanged, so a
non-integer seed still fails at compose time against the typed schema.

Hydra composes the primary config with the command line before any sweeper runs, so the range must
already read as a sweep there: importing this plugin (Hydra imports every plugin module when it
scans for plugins, before composing) makes Hydra's override parser read `key=a-b` as the choice
sweep `key=a,a+1,...,b`. Without `-m`, Hydra then refuses it with its usual "add --multirun"
message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override

INT_RANGE = re.compile(r"^\s*(-?\d+)\s*-\s*(-?\d+)\s*$")


def expand_int_range(value: str) -> list[int] | None:
    """The integers of `a-b` (inclusive, a <= b), or None when the value is not such a range.

    Args:
        value: an override's value as written.

    Returns:
        [a, a+1, ..., b] or None.

    Raises:
        ValueError: `a-b` with a > b.
    """
    match = INT_RANGE.match(value)
    if match is None:
        return None
    start, stop = int(match.group(1)), int(match.group(2))
    if start > stop:
        raise ValueError(f"empty integer range {value!r}: write the smaller bound first")
    return list(range(start, stop + 1))


class RangeSweeper(BasicSweeper):
    """Hydra's BasicSweeper where `key=a-b` (integers) sweeps a..b inclusive."""

    @staticmethod
    def split_arguments(overrides: list[Override], max_batch_size: int | None):
        parser = OverridesParser.create()
        rewritten = []
        for override in overrides:
            if not override.is_sweep_override() and isinstance(override._value, str):
                values = expand_int_range(override._value)
                if values is not None:
                    key = override.get_key_element()
                    text = f"{key}={','.join(str(v) for v in values)}"
                    override = parser.parse_override(text)
            rewritten.append(override)
        return BasicSweeper.split_arguments(rewritten, max_batch_size)


_OVERRIDE_RANGE = re.compile(r"^([\w.@/+~-]*[\w])=\s*(-?\d+)\s*-\s*(-?\d+)\s*$")


def rewrite_int_range(line: str) -> str:
    """`key=a-b` -> `key=a,...,b` (inclusive); any other override line is returned unchanged."""
    match = _OVERRIDE_RANGE.match(line)
    if match is None:
        return line
    values = expand_int_range(f"{match.group(2)}-{match.group(3)}")
    return f"{match.group(1)}={','.join(str(v) for v in values)}"


def _install() -> None:
    if getattr(OverridesParser.parse_overrides, "_qcxr_range", False):
        return
    original = OverridesParser.parse_overrides

    def parse_overrides(self, overrides):
        return original(self, [rewrite_int_range(o) for o in overrides])

    parse_overrides._qcxr_range = True
    OverridesParser.parse_overrides = parse_overrides


_install()


@dataclass
class RangeSweeperConf:
    """Config of `hydra/sweeper: range`."""

    _target_: str = "hydra_plugins.qcxr_sweeper.range_sweeper.RangeSweeper"
    max_batch_size: int | None = None
    params: dict[str, str] | None = None


ConfigStore.instance().store(group="hydra/sweeper", name="range", node=RangeSweeperConf,
                             provider="qcxr")
