"""The server certificate in handshake act 2 (sv2-spec ``04-Protocol-Security.md`` §4.5.2–4.5.3).

SIGNATURE_NOISE_MESSAGE, 74 bytes::

    version U16 LE | valid_from U32 LE | not_valid_after U32 LE | signature 64 (BIP-340)

The signature is by the pool's **authority** key over
``m = SHA256(version || valid_from || not_valid_after || server_static_xonly32)`` — the first 10
bytes of the message followed by the x-only form of the server's *static* Noise key (spec §4.5.3.1;
SRI ``signature_message.rs``: ``from_hashed_data::<sha256::Hash>([&msg[0..10], pk].concat())``).

Verification rules (SRI ``verify_with_now``, PR stratum #2017; sv2-tp ``certificate_test``):

* only version 0 exists (sv2-tp rejects others; SRI ignores the field — we reject);
* ``valid_from - 10 <= now <= not_valid_after + 10``: a 10-second leeway for clock skew.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import coincurve

from payouts.crypto.ellswift import ELLSWIFT_SIZE, ellswift_decode_xonly, is_valid_secret_key
from sv2.noise_errors import CertificateError, CertificateFailure

CERTIFICATE_SIZE = 74
CERTIFICATE_VERSION = 0
TIME_LEEWAY_S = 10
"""Seconds of clock skew tolerated on both ends of the validity window (SRI ``TIME_LEEWAY``)."""

_U32 = 0xFFFFFFFF

__all__ = [
    "CERTIFICATE_SIZE",
    "CERTIFICATE_VERSION",
    "TIME_LEEWAY_S",
    "Certificate",
    "make_certificate",
    "to_xonly",
]


def to_xonly(pubkey: bytes) -> bytes:
    """Normalise a server static key to its 32-byte x-only form.

    Accepts x-only (32), SEC1 compressed (33) or uncompressed (65), or ElligatorSwift (64) bytes.
    """
    if len(pubkey) == 32:
        coincurve.PublicKeyXOnly(pubkey)  # validates: raises ValueError if not on the curve
        return bytes(pubkey)
    if len(pubkey) == ELLSWIFT_SIZE:
        return ellswift_decode_xonly(pubkey)
    if len(pubkey) in (33, 65):
        return bytes(coincurve.PublicKey(pubkey).format()[1:])
    raise ValueError(f"cannot interpret a {len(pubkey)}-byte public key")


@dataclass(frozen=True, slots=True)
class Certificate:
    """A parsed SIGNATURE_NOISE_MESSAGE."""

    version: int
    valid_from: int
    not_valid_after: int
    signature: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.version <= 0xFFFF:
            raise ValueError("version must fit a U16")
        if not (0 <= self.valid_from <= _U32 and 0 <= self.not_valid_after <= _U32):
            raise ValueError("validity times must fit a U32")
        if len(self.signature) != 64:
            raise ValueError("signature must be 64 bytes")

    def signed_fields(self) -> bytes:
        """The 10 bytes of the message that the signature covers, before the server key."""
        return (
            self.version.to_bytes(2, "little")
            + self.valid_from.to_bytes(4, "little")
            + self.not_valid_after.to_bytes(4, "little")
        )

    def to_bytes(self) -> bytes:
        """74-byte wire form."""
        return self.signed_fields() + self.signature

    @classmethod
    def from_bytes(cls, data: bytes) -> Certificate:
        """Parse the 74-byte wire form (any version: :meth:`verify` decides what is acceptable)."""
        if len(data) != CERTIFICATE_SIZE:
            raise ValueError(f"certificate must be {CERTIFICATE_SIZE} bytes, got {len(data)}")
        return cls(
            version=int.from_bytes(data[0:2], "little"),
            valid_from=int.from_bytes(data[2:6], "little"),
            not_valid_after=int.from_bytes(data[6:10], "little"),
            signature=bytes(data[10:74]),
        )

    def message_hash(self, server_static: bytes) -> bytes:
        """``m = SHA256(version || valid_from || not_valid_after || server_static_xonly)``."""
        return hashlib.sha256(self.signed_fields() + to_xonly(server_static)).digest()

    def verify(
        self,
        server_static: bytes,
        authority_pubkey: bytes,
        now: int,
        *,
        leeway: int = TIME_LEEWAY_S,
    ) -> None:
        """Raise :class:`CertificateError` unless this certificate authenticates ``server_static``.

        Checks, in order: version == 0, the BIP-340 signature under ``authority_pubkey`` (32-byte
        x-only), then the validity window with ``leeway`` seconds either side. The version comes
        first because the meaning of the other fields depends on it; the signature before the
        times so that a forged certificate is reported as forged, not as expired.
        """
        if self.version != CERTIFICATE_VERSION:
            raise CertificateError(
                CertificateFailure.UNSUPPORTED_VERSION,
                f"certificate version {self.version} is not supported (only 0)",
            )
        try:
            ok = bool(
                coincurve.PublicKeyXOnly(authority_pubkey).verify(
                    self.signature, self.message_hash(server_static)
                )
            )
        except ValueError:  # malformed signature or key: treat as not signed by the authority
            ok = False
        if not ok:
            raise CertificateError(
                CertificateFailure.BAD_SIGNATURE,
                "certificate is not signed by the configured authority for this server key",
            )
        if now < self.valid_from - leeway:
            raise CertificateError(
                CertificateFailure.NOT_YET_VALID,
                f"certificate valid from {self.valid_from}, now {now} (leeway {leeway}s)",
            )
        if now > self.not_valid_after + leeway:
            raise CertificateError(
                CertificateFailure.EXPIRED,
                f"certificate expired at {self.not_valid_after}, now {now} (leeway {leeway}s)",
            )


def make_certificate(
    authority_sk: bytes,
    server_static_pk: bytes,
    valid_from: int,
    not_valid_after: int,
    *,
    version: int = CERTIFICATE_VERSION,
    aux_rand: bytes = b"",
) -> Certificate:
    """Sign a certificate binding ``server_static_pk`` to the authority (what an SV2 pool does).

    ``server_static_pk`` may be x-only, SEC1 or ElligatorSwift (see :func:`to_xonly`).
    ``aux_rand`` is BIP-340 auxiliary randomness: ``b""`` draws it from the OS (coincurve's
    default); 32 explicit bytes make the signature reproducible.
    ``version`` other than 0 exists only to test rejection.
    """
    if not is_valid_secret_key(authority_sk):
        raise ValueError("authority secret key must be 32 bytes in [1, n-1]")
    unsigned = Certificate(version, valid_from, not_valid_after, b"\x00" * 64)
    msg = unsigned.message_hash(server_static_pk)
    sig = bytes(coincurve.PrivateKey(authority_sk).sign_schnorr(msg, aux_rand))
    return Certificate(version, valid_from, not_valid_after, sig)
