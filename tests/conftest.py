"""Shared fixtures: the authors' release in ../shared (CI has it beside the clone)."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
RELEASE = SHARED / "ave-release"


@pytest.fixture(scope="session")
def release() -> Path:
    if not RELEASE.is_dir():
        pytest.skip(f"{RELEASE} not found (the authors' release must sit beside the clone)")
    return RELEASE
