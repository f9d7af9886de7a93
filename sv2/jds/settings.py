"""What a JD server takes from :class:`payouts.settings.Settings` (``[jds]``), and its Noise
identity over time: the certificate is signed with ``jds.authority_secret_key`` and re-signed
when half of its validity has passed (sv2-spec 04-Protocol-Security.md §4.5.2; SRI signs one
per connection, re-signing periodically keeps the cost off the handshake path)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from payouts.errors import ConfigError
from payouts.settings import Settings
from payouts.settlement.modes import SettlementMode, mode_from_settings
from sv2.authority import decode_authority_secret_key
from sv2.jds.limits import JdsLimits
from sv2.noise import ServerIdentity


class RotatingIdentity:
    """A server identity re-signed by ``authority_sk`` (if given) once half of its
    certificate's validity has passed; without a key it never changes."""

    def __init__(
        self,
        identity: ServerIdentity,
        authority_sk: bytes | None = None,
        validity: int = 3600,
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.identity = identity
        self.authority_sk = authority_sk
        self.validity = validity
        self._now = wall_clock

    def current(self) -> ServerIdentity:
        """The identity to present to the next connection."""
        sk = self.authority_sk
        if sk is not None:
            cert = self.identity.certificate
            if self._now() > cert.valid_from + (cert.not_valid_after - cert.valid_from) / 2:
                self.identity = ServerIdentity.signed_by(
                    sk, static_key=self.identity.static_key, validity_s=self.validity
                )
        return self.identity


def server_arguments(
    settings: Settings,
    implemented: tuple[int, ...],
    *,
    identity: ServerIdentity | None,
    mode: SettlementMode | None,
) -> dict[str, Any]:
    """The :class:`~sv2.jds.server.JobDeclarationServer` constructor arguments ``[jds]``
    implies: listen address, extensions (those of ``implemented`` only), token lifetime, the
    settlement mode (default :func:`~payouts.settlement.modes.mode_from_settings`) and, without
    an ``identity``, one signed by ``jds.authority_secret_key`` with the key to re-sign it;
    the timeouts and connection limits (:meth:`JdsLimits.from_settings`)."""
    jds = settings.jds
    sk = None
    if identity is None:
        if not jds.authority_secret_key:
            raise ConfigError("jds.authority_secret_key is required to serve Noise")
        sk = decode_authority_secret_key(jds.authority_secret_key)
        identity = ServerIdentity.signed_by(sk, validity_s=jds.cert_validity_sec)
    host, _, port = jds.listen.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"jds.listen must be host:port, got {jds.listen!r}")
    return {
        "identity": identity,
        "host": host.strip("[]"),
        "port": int(port),
        "supported_extensions": [e for e in jds.supported_extensions if e in implemented],
        "required_extensions": jds.required_extensions,
        "token_lifetime": jds.token_lifetime_sec,
        "server_id": jds.effective_server_id,
        "mode": mode if mode is not None else mode_from_settings(settings),
        "authority_secret_key": sk,
        "cert_validity": jds.cert_validity_sec,
        "limits": JdsLimits.from_settings(jds),
    }


__all__ = ["RotatingIdentity", "server_arguments"]
