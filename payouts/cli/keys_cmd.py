"""``payouts keys``: the pool's authority key (sv2-spec 04-Protocol-Security.md §4.5, §4.7).

The authority key signs the Noise certificate of the pool's SV2 servers (the JD server; the
Mining Protocol endpoint uses the same key). Miners pin its public key; the secret stays in a
file only the pool's user can read. ``generate`` makes one (secret to a file created with mode
0600, never printed; the public key printed in the spec's base58check form); ``show`` prints the
public key of a key file or of the configured one. Rotation: docs/jds.md "Authority key".
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import typer

from payouts.errors import ConfigError, ValidationError

app = typer.Typer(help="The pool's authority key: the Noise certificates of its SV2 servers.",
                  no_args_is_help=True)


def _new_secret() -> bytes:
    from payouts.crypto.ellswift import is_valid_secret_key

    while True:  # 1..n-1; a draw outside it has probability ~2^-128
        sk = secrets.token_bytes(32)
        if is_valid_secret_key(sk):
            return sk


def write_secret_file(path: Path, text: str, *, force: bool = False) -> None:
    """Write ``text`` to a new file readable by its owner only (0600 from the start: the
    secret is never in a file others could open, even for a moment)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise ValidationError(f"{path} exists; a key file is not overwritten (--force to replace "
                              "it: miners pinned to its public key then fail to connect)",
                              code="key-file-exists") from None
    with os.fdopen(fd, "w", encoding="ascii") as f:
        os.fchmod(f.fileno(), 0o600)  # an existing file replaced with --force keeps no wider mode
        f.write(text + "\n")


@app.command("generate")
def generate(
    out: Path = typer.Option(..., "--out", "-o", help="File to write the secret key to "
                             "(created with mode 0600; never overwritten without --force)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing key file."),
) -> None:
    """Make a new authority key: the secret goes to --out, the public key is printed.

    The secret is written in SRI's base58check form (what [jds] authority_secret_key_file
    reads); the public key printed on stdout is the sv2-spec §4.7 base58check form that miners
    pin (payouts jdc run --authority-key, SRI's authority_pubkey).
    """
    from sv2.authority import (
        authority_public_key,
        encode_authority_public_key,
        encode_authority_secret_key,
    )

    sk = _new_secret()
    write_secret_file(out, encode_authority_secret_key(sk), force=force)
    typer.echo(encode_authority_public_key(authority_public_key(sk)))
    typer.echo(f"# secret key written to {out} (mode 0600); in the settings file:\n"
               f"#   [jds]\n#   authority_secret_key_file = \"{out}\"", err=True)


@app.command("show")
def show(
    key_file: Path | None = typer.Option(
        None, "--key-file", "-k", help="A secret key file (default: the configured key)."),
    config: Path | None = typer.Option(None, "--config", "-c", help="TOML settings file."),
) -> None:
    """Print the public key (sv2-spec §4.7 base58check) of a secret key file, or of the one the
    settings configure ([jds] authority_secret_key_file or authority_secret_key)."""
    from payouts.cli.preflight import authority_public_key_of

    if key_file is not None:
        try:
            text = key_file.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError) as e:
            why = e.strerror if isinstance(e, OSError) else "not ASCII text"
            raise ValidationError(f"cannot read {key_file}: {why}", code="bad-file") from None
    else:
        from payouts.settings import load_settings

        configured = load_settings(config).jds.authority_secret_key
        if not configured:
            raise ConfigError("no authority key configured ([jds] authority_secret_key_file); "
                              "give --key-file, or make one with payouts keys generate")
        text = configured
    typer.echo(authority_public_key_of(text))
