"""Shared fixtures: the real-data folder beside the repository, tiny shapes."""

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The `../shared/data` folder of small real chest X-ray sets; skips where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (tests marked realdata need it)")
    return SHARED_DATA
