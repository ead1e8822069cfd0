"""Atomic output: nothing under the final name until complete; permissions follow the umask."""

from __future__ import annotations

import os
import stat

import pytest

from avel.io import atomic_path, write_json


def test_failure_leaves_nothing(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_mode_follows_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644


def test_one_thread_fixture_is_active_in_module_fixtures(one_thread):
    import torch

    assert torch.get_num_threads() == 1
