"""Settings: TOML file, PAYOUTS_* environment, validation with clear messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from payouts.errors import ConfigError
from payouts.settings import load_settings


def test_defaults_use_sqlite_in_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PAYOUTS_DATA_DIR", str(tmp_path / "d"))
    s = load_settings()
    assert s.effective_database_url == f"sqlite:///{tmp_path / 'd' / 'payouts.db'}"
    assert s.accounting.scheme == "tides" and s.accounting.tides_k == 8
    assert s.accounting.value_weighting is True


def test_file_then_environment_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "p.toml"
    cfg.write_text('network = "signet"\n[accounting]\nscheme = "pplns"\npplns_n = 5000\n')
    s = load_settings(cfg)
    assert (s.network, s.accounting.scheme, s.accounting.pplns_n) == ("signet", "pplns", 5000)
    monkeypatch.setenv("PAYOUTS_ACCOUNTING__PPLNS_N", "7")
    monkeypatch.setenv("PAYOUTS_DATABASE_URL", "postgresql+psycopg://u@h/db")
    s = load_settings(cfg)
    assert s.accounting.pplns_n == 7 and s.effective_database_url.startswith("postgresql")


def test_invalid_values_name_every_key(tmp_path: Path) -> None:
    cfg = tmp_path / "p.toml"
    cfg.write_text('network = "moon"\n[pool]\nfee_bps = 20000\n[accounting]\nbogus = 1\n')
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    text = str(err.value)
    assert "network" in text and "pool.fee_bps" in text and "accounting.bogus" in text


def test_missing_or_broken_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("network = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad)
