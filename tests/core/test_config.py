"""Settings and contribution totals: round trips, and damaged files falling back to defaults."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from hiveling.core import config, paths


def test_settings_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    settings = config.Settings(
        device="cuda:1", memory_cap_gb=6.5, idle_only=True, schedule=["22:00", "07:00"]
    )
    config.save_settings(settings, path)
    assert config.load_settings(path) == settings


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[1, 2]",
        "",
        '{"device": 5, "idle_only": "yes"}',
        '{"device": null, "idle_only": null, "idle_minutes": null}',
        '{"schedule": ["22:00", 7], "idle_only": 1}',
    ],
)
def test_a_damaged_settings_file_gives_defaults_with_a_warning(
    tmp_path: Path, content: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "settings.json"
    path.write_text(content)
    with caplog.at_level(logging.WARNING):
        settings = config.load_settings(path)
    assert settings.device == "auto"
    assert settings.idle_only is False
    assert caplog.records, "the user is told their file was ignored"


def test_unknown_settings_from_a_newer_client_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    path.write_text('{"device": "cpu", "warp_drive": true}')
    assert config.load_settings(path).device == "cpu"


def test_contribution_totals_survive_and_a_corrupted_file_restarts_them(hiveling_home: Path) -> None:
    assert config.load_contribution("run-1") == config.Contribution()
    config.save_contribution("run-1", config.Contribution(samples=1200, seconds=60.5))
    assert config.load_contribution("run-1") == config.Contribution(samples=1200, seconds=60.5)
    config.save_contribution("run-1", config.Contribution(samples=1300, seconds=61.0, finished_at=500))
    assert config.load_contribution("run-1").finished_at == 500
    (paths.run_dir("run-1") / config.TOTALS_FILE).write_text('{"samples": "many"}')
    assert config.load_contribution("run-1") == config.Contribution()


def test_everything_lives_under_hiveling_home_and_run_folders_are_safe_names(hiveling_home: Path) -> None:
    assert paths.config_dir() == hiveling_home / "config"
    assert paths.run_dir("../../etc/passwd").parent == hiveling_home / "data" / "runs"
