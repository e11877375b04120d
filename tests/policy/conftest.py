"""Fixtures for policy tests: a copy of the shipped policy in a temporary folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from guard.policy.settings import PolicySettings
from guard.telemetry import REGISTRY

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    d = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", d)
    return d


@pytest.fixture
def settings(policy_dir: Path) -> PolicySettings:
    return PolicySettings(
        model=policy_dir / "model.conf", rules=[policy_dir / "policy.csv"], watch=True, watch_interval_s=0.05
    )


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0
