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


TINY_SYNTH = {"videos": 120, "seed": 0, "categories": 6}  # ~0.25 GB visual file, generated in about a second


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small AVE-Synth directory shared by the whole session (do not modify it; copy if needed).

    120 videos over the first 6 AVE categories (20 per category, so models learn at this size),
    5 background-only videos, seed 0. Open it with `avel.data.dataset.AVEDataset.open(path)`.
    """
    from avel.data.synth import generate

    return generate(tmp_path_factory.mktemp("tiny_synth") / "ave-synth", progress=False, **TINY_SYNTH)


@pytest.fixture(scope="session")
def weights(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Random He-initialised VGG-19 / VGGish weight files in their real layouts, written once per session
    (avel.features.weights.random_weight_files): the backbones' stand-ins, as the real ones cannot be downloaded."""
    from avel.features.weights import random_weight_files

    return random_weight_files(tmp_path_factory.getbasetemp() / "avel-random-weights")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one intra-op thread avoids OpenMP spin-waits on a shared 2-core machine
    (and keeps CPU runs repeatable). Use with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session", autouse=True)
def precision_decided(tmp_path_factory: pytest.TempPathFactory):
    """The session's own avel cache (the user's is never written; every avel process a test starts
    inherits it, so all of them read one per-machine precision measurement), and the --precision auto
    decision made once for each workload before any test, so that no test's captured stderr depends
    on whether an earlier test already announced it."""
    import os

    from avel import precision

    saved = os.environ.get("AVEL_CACHE")
    os.environ["AVEL_CACHE"] = str(tmp_path_factory.mktemp("avel-cache"))
    for workload in precision.WORKLOADS:
        precision.decide("auto", "cpu", workload=workload)
    yield
    if saved is None:
        os.environ.pop("AVEL_CACHE", None)
    else:
        os.environ["AVEL_CACHE"] = saved
