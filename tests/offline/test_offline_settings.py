"""The offline store's settings: read from STREAMFS_OFFLINE_* once, checked, passed down."""

from __future__ import annotations

import pytest

from streamfs.errors import ConfigError
from streamfs.offline.log import OfflineSink
from streamfs.settings import Settings


def test_offline_settings_from_the_environment(tmp_path: object) -> None:
    settings = Settings.from_env(
        {
            "STREAMFS_OFFLINE_ROLL_MB": "8",
            "STREAMFS_OFFLINE_ROLL_INTERVAL_S": "30",
            "STREAMFS_OFFLINE_COMPACT_MB": "512",
            "STREAMFS_OFFLINE_SNAPSHOTS": "off",
        }
    )
    assert (settings.offline_roll_mb, settings.offline_roll_interval_s) == (8, 30)
    assert (settings.offline_compact_mb, settings.offline_snapshots) == (512, False)
    sink = OfflineSink.from_settings(str(tmp_path), settings)
    assert (sink.policy.roll_bytes, sink.policy.roll_interval_ms) == (8 << 20, 30_000)
    assert Settings.from_env({}).offline_snapshots


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("STREAMFS_OFFLINE_ROLL_MB", "big"),
        ("STREAMFS_OFFLINE_ROLL_INTERVAL_S", "0"),
        ("STREAMFS_OFFLINE_SNAPSHOTS", "maybe"),
    ],
)
def test_bad_offline_settings_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})
