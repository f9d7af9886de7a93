"""``[settlement.musig2]``: the documented snippets load, the committee is sorted into BIP-327
KeySort order, the environment works for every key, bounds match the settlement layer's, and
an error line never shows the fallback secret."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from payouts.crypto import musig2 as mu
from payouts.crypto.schnorr import xonly_pubkey
from payouts.errors import ConfigError
from payouts.settings import load_settings
from payouts.settlement.modes import mode_from_settings
from payouts.settlement.musig2.output import MAX_FALLBACK_DELAY, MAX_FEE_RATE, MIN_FALLBACK_DELAY
from payouts.tx.hashes import sha256

DOCS = Path(__file__).resolve().parents[1] / "docs"
FALLBACK_SK = sha256(b"settings tests: fallback")
KEYS = [mu.individual_pubkey(sha256(b"settings tests: signer %d" % i)).hex() for i in range(3)]
BASE = {"distribution": {"mode": "musig2"}}


def musig2(**extra: object) -> dict[str, object]:
    table = {"committee": KEYS, "fallback_key": xonly_pubkey(FALLBACK_SK).hex(), **extra}
    return {**BASE, "settlement": {"musig2": table}}


def snippet(doc: str) -> str:
    """The ```toml block of ``doc`` that holds the [settlement.musig2] table."""
    blocks = re.findall(r"```toml\n(.*?)```", (DOCS / doc).read_text(), re.S)
    (block,) = [b for b in blocks if "[settlement.musig2]" in b]
    return block


@pytest.mark.parametrize("doc", ["lifecycle.md", "tutorial-pool-operators.md"])
def test_the_documented_snippets_load(doc: str, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PAYOUTS_CONFIG", raising=False)
    cfg = tmp_path / "p.toml"
    cfg.write_text(f'network = "regtest"\ndata_dir = "{tmp_path}"\n' + snippet(doc))
    s = load_settings(cfg)
    m = s.settlement.musig2
    assert m is not None and s.distribution.mode == "musig2"
    assert len(m.committee) == 3 and m.committee == sorted(m.committee)
    assert (m.fallback_timelock, m.fee_rate, m.ctv_leaf) == (244, 2, False)
    mode = mode_from_settings(s).musig2
    assert mode is not None and mode.committee == m.committee_keys()


def test_committee_is_sorted_and_defaults_apply(tmp_path: Path) -> None:
    s = load_settings(data_dir=tmp_path, **musig2(committee=KEYS[::-1]))
    m = s.settlement.musig2
    assert m is not None
    assert m.committee_keys() == tuple(mu.key_sort([bytes.fromhex(k) for k in KEYS]))
    assert (m.fallback_timelock, m.fee_rate, m.ctv_leaf, m.fallback_secret_key) == (
        244, 1, False, None)


def test_every_key_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                        ) -> None:
    env = {
        "PAYOUTS_DISTRIBUTION__MODE": "musig2",
        "PAYOUTS_SETTLEMENT__MUSIG2__COMMITTEE": '["' + '","'.join(KEYS) + '"]',
        "PAYOUTS_SETTLEMENT__MUSIG2__FALLBACK_KEY": xonly_pubkey(FALLBACK_SK).hex(),
        "PAYOUTS_SETTLEMENT__MUSIG2__FALLBACK_TIMELOCK": "300",
        "PAYOUTS_SETTLEMENT__MUSIG2__FEE_RATE": "5",
        "PAYOUTS_SETTLEMENT__MUSIG2__CTV_LEAF": "true",
        "PAYOUTS_SETTLEMENT__MUSIG2__FALLBACK_SECRET_KEY": FALLBACK_SK.hex(),
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    m = load_settings(data_dir=tmp_path).settlement.musig2
    assert m is not None and m.committee == sorted(KEYS)
    assert (m.fallback_timelock, m.fee_rate, m.ctv_leaf) == (300, 5, True)
    assert m.fallback_secret_key == FALLBACK_SK.hex()


def test_bounds_are_the_settlement_layers(tmp_path: Path) -> None:
    for ok in (MIN_FALLBACK_DELAY, MAX_FALLBACK_DELAY):
        load_settings(data_dir=tmp_path, **musig2(fallback_timelock=ok))
    for bad in (MIN_FALLBACK_DELAY - 1, MAX_FALLBACK_DELAY + 1):
        with pytest.raises(ConfigError, match=r"settlement\.musig2\.fallback_timelock"):
            load_settings(data_dir=tmp_path, **musig2(fallback_timelock=bad))
    load_settings(data_dir=tmp_path, **musig2(fee_rate=MAX_FEE_RATE))
    for bad in (0, MAX_FEE_RATE + 1):
        with pytest.raises(ConfigError, match=r"settlement\.musig2\.fee_rate"):
            load_settings(data_dir=tmp_path, **musig2(fee_rate=bad))
    many = [mu.individual_pubkey(sha256(b"k%d" % i)).hex() for i in range(256)]
    load_settings(data_dir=tmp_path, **musig2(committee=many[:255]))
    with pytest.raises(ConfigError, match=r"settlement\.musig2\.committee: List should have at "
                                          r"most 255 items"):
        load_settings(data_dir=tmp_path, **musig2(committee=many))


@pytest.mark.parametrize(("extra", "message"), [
    ({"fallback_key": "00" * 32}, "fallback_key is not the x coordinate of a curve point"),
    ({"fallback_key": "ab" * 33}, "fallback_key must be 32 bytes"),
    ({"committee": [KEYS[0][2:]]}, "committee key 0 must be 33 bytes"),
    ({"committee": [KEYS[0], "zz"]}, "committee key 1 is not hex"),
    ({"committee": [KEYS[1], KEYS[1]]}, f"committee key {KEYS[1]} is listed twice"),
    ({"committee": ["04" + KEYS[0][2:]]}, "committee key 0 (04"),
])
def test_bad_values_are_named(tmp_path: Path, extra: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(data_dir=tmp_path, **musig2(**extra))
    assert message in err.value.message


def test_a_wrong_fallback_secret_is_refused_without_being_shown(tmp_path: Path) -> None:
    for secret in (sha256(b"another key").hex(), "ff" * 32, "00" * 31):
        with pytest.raises(ConfigError) as err:
            load_settings(data_dir=tmp_path, **musig2(fallback_secret_key=secret))
        assert "fallback_secret_key" in err.value.message
        assert secret not in err.value.message
