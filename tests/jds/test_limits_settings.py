"""``[jds]``'s timeouts and connection limits reach the server's ``JdsLimits``, with the same
defaults (the settings cannot import ``sv2``, so the numbers are written twice)."""

from __future__ import annotations

from dataclasses import fields

import pytest

from payouts.errors import ConfigError
from payouts.settings import JdsSettings, Settings
from sv2.jds import JdsLimits
from sv2.jds.limits import FROM_SETTINGS
from sv2.jds.settings import server_arguments
from tests.jds.helpers import IDENTITY


def test_settings_defaults_are_the_servers() -> None:
    assert JdsLimits.from_settings(JdsSettings()) == JdsLimits()
    assert set(FROM_SETTINGS) <= {f.name for f in fields(JdsLimits)}
    assert set(FROM_SETTINGS.values()) <= set(JdsSettings.model_fields)


def test_settings_reach_the_server() -> None:
    s = Settings(
        network="regtest",
        jds={
            "listen": "127.0.0.1:0",
            "handshake_timeout_sec": 2,
            "setup_timeout_sec": 3,
            "idle_timeout_sec": 60,
            "max_connections": 10,
            "max_pending": 5,
            "max_connections_per_address": 0,  # no limit
            "max_pending_per_address": 2,
            "connects_per_address_per_sec": 0,  # no limit
        },
    )
    lim = server_arguments(s, (), identity=IDENTITY, mode=None)["limits"]
    assert lim == JdsLimits(
        handshake_timeout=2,
        setup_timeout=3,
        idle_timeout=60,
        max_connections=10,
        max_pending=5,
        max_connections_per_address=None,
        max_pending_per_address=2,
        connects_per_address_per_sec=None,
    )


@pytest.mark.parametrize(
    "key, value",
    [
        ("setup_timeout_sec", 0),
        ("max_pending", 0),
        ("max_pending_per_address", 0),
        ("connects_per_address_per_sec", -1),
        ("max_connections_per_address", -1),
    ],
)
def test_bad_limits_are_refused_naming_the_key(key: str, value: int) -> None:
    with pytest.raises((ConfigError, ValueError), match=key):
        Settings(jds={key: value})
