"""The command line as a new user meets it (issue #14): one line and exit 2 for a user error,
help text as written, no heavy imports for --help and the amounts check, keys, and the one
settings check of config check and serve."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from payouts.cli.root import COMMANDS, load_command
from payouts.settings_reference import render
from tests.api.test_cli import _free_port

ROOT = Path(__file__).resolve().parents[2]
POOL = "bcrt1q5xs6rgdp5xs6rgdp5xs6rgdp5xs6rgdpa854mc"


def payouts(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PAYOUTS_")}
    base["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "payouts", *args], cwd=cwd or ROOT,
                          env={**base, **(env or {})}, capture_output=True, text=True,
                          input=stdin, timeout=timeout)


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def test_no_arguments_prints_the_help_and_exits_2() -> None:
    proc = payouts()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "Usage:" in proc.stderr and "Commands:" in proc.stderr


def test_an_unknown_revision_is_one_line_and_creates_nothing(tmp_path: Path) -> None:
    line = one_error_line(payouts("db", "upgrade", "-r", "9999",
                                  env={"PAYOUTS_DATA_DIR": str(tmp_path / "d")}))
    assert "unknown-revision" in line and "9999" in line
    assert not (tmp_path / "d").exists()


def test_read_only_commands_create_nothing(tmp_path: Path) -> None:
    (tmp_path / "payouts.toml").write_text('data_dir = "./data"\n')
    assert payouts("config", "check", cwd=tmp_path).returncode == 0
    current = payouts("db", "current", cwd=tmp_path)
    assert current.returncode == 1 and "no database yet" in current.stdout
    assert payouts("config", "show", cwd=tmp_path).returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["payouts.toml"]


def test_help_keeps_brackets_and_words() -> None:
    text = " ".join(payouts("serve", "--help").stdout.split())
    assert "with [jds] enabled = true" in text
    assert "from the node ([node])" in text
    assert "[settlement] poll_interval_sec" in text


@pytest.mark.parametrize("name", list(COMMANDS))
def test_the_root_help_lines_are_each_commands_own(name: str) -> None:
    command = load_command(name)
    own = " ".join((command.help or "").split())
    assert own.startswith(COMMANDS[name].summary), (name, own)


@pytest.mark.parametrize("argv", [["--help"], ["distribution", "amounts", "D", "-T", "5000"]])
def test_quick_commands_load_no_heavy_library(argv: list[str], tmp_path: Path) -> None:
    dist = tmp_path / "d.json"
    dist.write_text(json.dumps({"pool_payout": {"script": "51", "weight": 1},
                                "payouts": [{"script": "0014" + "11" * 20, "weight": 3}]}))
    argv = [str(dist) if a == "D" else a for a in argv]
    code = (f"import sys\nsys.argv = ['payouts', *{argv!r}]\nfrom payouts.cli import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "heavy = ('numpy', 'sqlalchemy', 'fastapi', 'sv2', 'pydantic_settings', 'alembic',"
            " 'uvicorn', 'pbk')\n"
            "print([m for m in sys.modules if m.split('.')[0] in heavy], file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.stderr.strip().splitlines()[-1] == "[]", proc.stderr


def test_amounts_fast_and_typer_forms_agree(tmp_path: Path) -> None:
    dist = tmp_path / "d.json"
    dist.write_text(json.dumps({
        "pool_payout": {"script": "51", "weight": 10},
        "payouts": [{"script": "0014" + f"{i:02x}" * 20, "weight": 1000 + i}
                    for i in range(80)]}))  # beyond the Python-int path: columns too
    fast = payouts("distribution", "amounts", str(dist), "-T", "5000000000")
    typed = payouts("distribution", "amounts", str(dist), "--revenue", "5000000000", "--")
    assert fast.returncode == 0 and typed.returncode == 0, typed.stderr
    assert json.loads(fast.stdout) == json.loads(typed.stdout)
    bad = payouts("distribution", "amounts", str(dist), "-T", "-1")
    assert bad.returncode == 2


# -- keys -------------------------------------------------------------------------------------


def test_keys_generate_writes_a_private_file_and_prints_the_public_key(tmp_path: Path) -> None:
    from sv2.authority import (
        authority_public_key,
        decode_authority_public_key,
        decode_authority_secret_key,
    )

    key = tmp_path / "authority.key"
    proc = payouts("keys", "generate", "--out", str(key))
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    public = proc.stdout.strip()
    secret = decode_authority_secret_key(key.read_text().strip())
    assert decode_authority_public_key(public) == authority_public_key(secret)
    assert public not in key.read_text() and key.read_text().strip() not in proc.stdout
    assert "authority_secret_key_file" in proc.stderr
    again = payouts("keys", "generate", "--out", str(key))
    assert "key-file-exists" in one_error_line(again)
    assert payouts("keys", "show", "--key-file", str(key)).stdout.strip() == public
    other = payouts("keys", "generate", "--out", str(tmp_path / "k2"))
    assert other.stdout.strip() != public  # a fresh key each time


def _config(tmp_path: Path, extra: str = "") -> Path:
    key = tmp_path / "authority.key"
    if not key.exists():
        assert payouts("keys", "generate", "--out", str(key)).returncode == 0
    cfg = tmp_path / "payouts.toml"
    cfg.write_text(f'network = "regtest"\ndata_dir = "./data"\n[pool]\npayout_address = '
                   f'"{POOL}"\n[jds]\nenabled = true\nlisten = "127.0.0.1:{_free_port()}"\n'
                   f'authority_secret_key_file = "authority.key"\n{extra}')
    return cfg


def test_config_show_prints_the_public_key_from_a_relative_key_file(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    public = payouts("keys", "show", "--key-file", str(tmp_path / "authority.key")).stdout
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shown = json.loads(payouts("config", "show", "-c", str(cfg), cwd=elsewhere).stdout)
    assert shown["jds"]["authority_public_key"] == public.strip()
    assert shown["jds"]["authority_secret_key"] == "***"
    assert shown["data_dir"] == str(tmp_path / "data")  # the file's folder, not the cwd
    assert payouts("keys", "show", "-c", str(cfg), cwd=elsewhere).stdout == public


# (settings, the key the error must name, a word of the reason)
REFUSED = [
    ('network = "mainnet"\n', "node.backend", "regtest"),
    ("", "pool.payout_address", "is a regtest address"),  # a bcrt1 address on signet
    ('[jds]\nlisten = "127.0.0.1"\n', "jds.listen", "host:port"),
    ('[jds]\nauthority_secret_key = "not-a-key"\n', "jds.authority_secret_key", "authority"),
]


@pytest.mark.parametrize(("toml", "key", "word"), REFUSED,
                         ids=["kernel-on-mainnet", "address-network", "listen", "bad-key"])
def test_config_check_and_serve_refuse_the_same_things(tmp_path: Path, toml: str, key: str,
                                                       word: str) -> None:
    cfg = tmp_path / "payouts.toml"
    body = (f'data_dir = "./data"\n[pool]\npayout_address = "{POOL}"\n'
            '[jds]\nenabled = true\n')
    if key == "pool.payout_address":
        body = f'network = "signet"\ndata_dir = "./data"\n[node]\nbackend = "bitcoind"\n' \
               f'[pool]\npayout_address = "{POOL}"\n'
    if toml.startswith("[jds]"):
        body = body.replace("[jds]\nenabled = true\n", toml.replace("[jds]\n", "[jds]\n"
                                                                   "enabled = true\n"))
        if "authority_secret_key" not in toml:
            body += 'authority_secret_key = "' + _secret_text(tmp_path) + '"\n'
    else:
        body = toml + body
    cfg.write_text(body)
    check = payouts("config", "check", "-c", str(cfg))
    serve = payouts("serve", "-c", str(cfg), "--port", str(_free_port()))
    for proc in (check, serve):
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr
        assert key in proc.stderr and word in proc.stderr, proc.stderr
    assert [ln for ln in check.stderr.splitlines() if key in ln] == \
        [ln for ln in serve.stderr.splitlines() if key in ln]
    assert not (tmp_path / "data").exists()  # serve stopped before the database


def _secret_text(tmp_path: Path) -> str:
    key = tmp_path / "k"
    payouts("keys", "generate", "--out", str(key))
    return key.read_text().strip()


def test_an_environment_variable_is_named_in_its_error(tmp_path: Path) -> None:
    cfg = tmp_path / "payouts.toml"
    cfg.write_text("[pool]\nfee_bps = 100\n")
    proc = payouts("config", "check", "-c", str(cfg), env={"PAYOUTS_POOL__FEE_BPS": "abc"})
    assert proc.returncode == 2
    assert "PAYOUTS_POOL__FEE_BPS (environment)" in proc.stderr
    assert f"in {cfg}" not in proc.stderr  # the file is not blamed
    missing = payouts("config", "check", env={
        "PAYOUTS_JDS__AUTHORITY_SECRET_KEY_FILE": str(tmp_path / "nope")})
    assert "PAYOUTS_JDS__AUTHORITY_SECRET_KEY_FILE" in missing.stderr


def test_a_port_in_use_is_one_line_before_the_database(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    listen = next(ln for ln in cfg.read_text().splitlines() if ln.startswith("listen"))
    port = int(listen.split(":")[-1].strip('"'))
    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        busy.bind(("127.0.0.1", port))
        busy.listen()
        line = one_error_line(payouts("serve", "-c", str(cfg), "--port", str(_free_port())))
    assert "jds.listen" in line and "in use" in line and str(port) in line
    assert not (tmp_path / "data").exists()


def test_an_unreachable_node_on_a_first_start_is_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "payouts.toml"
    cfg.write_text(f'data_dir = "./data"\n[node]\nbackend = "bitcoind"\nrpc_url = '
                   f'"http://127.0.0.1:{_free_port()}"\nrpc_user = "u"\nrpc_password = "p"\n')
    line = one_error_line(payouts("serve", "-c", str(cfg), "--port", str(_free_port())))
    assert "node is unreachable" in line
    assert not (tmp_path / "data").exists()


def test_the_cookie_file_is_a_setting(tmp_path: Path) -> None:
    cfg = tmp_path / "payouts.toml"
    cfg.write_text('[node]\nbackend = "bitcoind"\ncookie_file = "regtest/.cookie"\n')
    line = one_error_line(payouts("config", "check", "-c", str(cfg)))
    assert "node.cookie_file" in line and str(tmp_path / "regtest" / ".cookie") in line
    (tmp_path / "regtest").mkdir()
    (tmp_path / "regtest" / ".cookie").write_text("__cookie__:secret")
    assert payouts("config", "check", "-c", str(cfg)).returncode == 0


def test_the_settings_reference_is_generated_from_the_model() -> None:
    page = (ROOT / "docs" / "settings.md").read_text()
    assert page == render(), "docs/settings.md is stale: payouts config reference > it"
    for key in ("cookie_file", "rpc_url", "authority_secret_key_file", "PAYOUTS_NODE__RPC_USER"):
        assert key in page


def test_no_document_offers_a_fixed_secret_to_copy() -> None:
    """Keys in the docs are made by the reader (payouts keys generate, a wallet): no secret
    key value, no hard-coded secret bytes, none of the old tutorial's key (0x5a repeated)."""
    import re

    patterns = [r"authority_secret_key\s*=\s*\"[1-9A-HJ-NP-Za-km-z]{20,}\"",
                r"fallback_secret_key\s*=\s*\"[0-9a-fA-F]{64}\"", r"gnwngtq",
                r"['\"]5a['\"]\s*\*\s*32", r"fromhex\(['\"][0-9a-f]{2}['\"]\s*\*\s*32\)",
                r"seckey\s*=\s*bytes"]
    for path in [*(ROOT / "docs").rglob("*.md"), ROOT / "README.md"]:
        text = path.read_text(encoding="utf-8")
        for pattern in patterns:
            assert not re.search(pattern, text), (path.name, pattern)
