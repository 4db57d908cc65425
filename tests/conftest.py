"""Shared fixtures: small random Janus checkpoints built and loaded through the real paths."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random `tiny` checkpoint saved with save_pretrained (6x6 tokens, 96 px)."""
    from generator.presets import make_model

    return make_model(tmp_path_factory.mktemp("tiny"), "tiny", seed=0)


@pytest.fixture(scope="session")
def tiny(tiny_dir: Path):
    """The tiny checkpoint loaded on CPU in fp32."""
    from generator.checkpoint import load_checkpoint

    return load_checkpoint(tiny_dir, device="cpu")
