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


def test_output_lock_refuses_a_second_writer_and_is_released(tmp_path):
    import subprocess
    import sys

    from avel.errors import AvelError
    from avel.io import output_lock

    other = ("import sys\nfrom avel.io import output_lock\nfrom avel.errors import AvelError\n"
             "try:\n    with output_lock(sys.argv[1]): pass\nexcept AvelError as e:\n    print(e); sys.exit(3)\n")
    with output_lock(tmp_path / "run"):
        r = subprocess.run([sys.executable, "-c", other, str(tmp_path / "run")], capture_output=True, text=True)
        assert r.returncode == 3
        assert "another avel process" in r.stdout and str(tmp_path / "run") in r.stdout
        with pytest.raises(AvelError, match="another avel process"):  # flock is per open file, not per process
            with output_lock(tmp_path / "run"):
                pass
    r = subprocess.run([sys.executable, "-c", other, str(tmp_path / "run")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout  # released when the block ends
