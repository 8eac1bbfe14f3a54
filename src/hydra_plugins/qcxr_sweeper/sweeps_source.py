"""The `sweep` config group read from the repository's top-level `sweeps/` folder (issue 5).

docs/style.md keeps Optuna study definitions in `sweeps/<study>.yaml` at the repository root, beside
`conf/`, and `conf/config.yaml` has a `sweep: null` slot in its defaults list. Hydra looks a group
up as `<search path root>/<group>/<option>.yaml`, so a plain search path entry cannot make
`sweeps/dqc_tuning.yaml` the option `sweep=dqc_tuning`. Two small plugins do it:

- `SweepsSearchPath` appends `qcxr-sweeps://<conf>/../sweeps` to the search path, next to the
  primary config folder (`conf/`, found from the `main` search path entry, which Hydra computes
  from `train.py`'s location), so studies are found from any working directory;
- `SweepsConfigSource` serves that folder as the group `sweep`: `sweep/<name>` is
  `sweeps/<name>.yaml`, and nothing else is visible (the SQLite study files beside it are not
  configs).

The sweeper (`optuna_study.py`) finds the same folder in `hydra.runtime.config_sources` to put a
study's default SQLite storage there.
"""

from __future__ import annotations

import builtins
import os
from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.object_type import ObjectType
from hydra.plugins.config_source import ConfigLoadError, ConfigResult, ConfigSource
from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import OmegaConf

SCHEME = "qcxr-sweeps"
GROUP = "sweep"
SWEEPS_FOLDER = "sweeps"  # beside the primary config folder (conf/): the repository root


class SweepsConfigSource(ConfigSource):
    """A folder of `<study>.yaml` files served as the config group `sweep`."""

    @staticmethod
    def scheme() -> str:
        return SCHEME

    def _real(self, config_path: str) -> str | None:
        # "" is the virtual root holding only the group; "sweep[/x]" maps onto the folder.
        parts = config_path.strip("/").split("/", 1)
        if parts[0] != GROUP:
            return None
        return os.path.join(self.path, parts[1]) if len(parts) == 2 else self.path

    def load_config(self, config_path: str) -> ConfigResult:
        real = self._real(self._normalize_file_name(config_path))
        if real is None or not os.path.isfile(real):
            raise ConfigLoadError(f"Config not found : {config_path} (in {self.path})")
        with open(real, encoding="utf-8") as f:
            header = ConfigSource._get_header_dict(f.read(512))
            f.seek(0)
            cfg = OmegaConf.load(f)
        return ConfigResult(
            config=cfg, path=f"{SCHEME}://{self.path}", provider=self.provider, header=header
        )

    def available(self) -> bool:
        return os.path.isdir(self.path)

    def is_group(self, config_path: str) -> bool:
        if config_path.strip("/") == "":
            return True
        real = self._real(config_path)
        return real is not None and os.path.isdir(real)

    def is_config(self, config_path: str) -> bool:
        if config_path.strip("/") == "":
            return False
        real = self._real(self._normalize_file_name(config_path))
        return real is not None and os.path.isfile(real)

    def list(self, config_path: str, results_filter: ObjectType | None) -> builtins.list[str]:
        if config_path.strip("/") == "":
            return [GROUP] if results_filter in (None, ObjectType.GROUP) else []
        real = self._real(config_path)
        if real is None or not os.path.isdir(real):
            return []
        files: builtins.list[str] = []
        for name in os.listdir(real):
            self._list_add_result(
                files=files,
                file_path=f"{config_path.strip('/')}/{name}",
                file_name=name,
                results_filter=results_filter,
            )
        return sorted(set(files))


def sweeps_dir_for(config_dir: str) -> Path:
    """The study folder that belongs to a primary config folder: `<config_dir>/../sweeps`."""
    return Path(config_dir).resolve().parent / SWEEPS_FOLDER


class SweepsSearchPath(SearchPathPlugin):
    """Adds the repository's `sweeps/` (beside the primary config folder) as the group `sweep`."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        for element in search_path.get_path():
            if element.provider != "main" or element.path is None:
                continue
            path = element.path
            if path.startswith("file://"):
                path = path[len("file://") :]
            elif "://" in path:
                continue  # a packaged config (pkg://) has no repository beside it
            sweeps = sweeps_dir_for(path)
            if sweeps.is_dir():
                search_path.append("qcxr-sweeps", f"{SCHEME}://{sweeps}")
            return
