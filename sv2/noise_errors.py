"""Errors of the SV2 Noise layer (handshake, certificate, encrypted transport).

Each carries a stable kebab-case ``code`` (see :mod:`payouts.errors`). sv2-spec
``04-Protocol-Security.md`` §4.5: "Should the decryption (i.e. authentication code validation)
fail at any point, the session must be terminated" — so every :class:`NoiseError` raised while
*receiving* is final for that handshake or transport object.
"""

from __future__ import annotations

import enum

from payouts.errors import PayoutsError


class NoiseError(PayoutsError):
    """Base class of every Noise handshake / transport failure."""

    code = "noise-error"


class HandshakeError(NoiseError):
    """Handshake message of the wrong size, failed authentication, or an out-of-order call."""

    code = "noise-handshake-failed"


class CertificateFailure(enum.Enum):
    """Why a server certificate (SIGNATURE_NOISE_MESSAGE, spec §4.5.2–4.5.3) was rejected."""

    UNSUPPORTED_VERSION = "unsupported-version"
    BAD_SIGNATURE = "bad-signature"  # not signed by the configured authority for this static key
    NOT_YET_VALID = "not-yet-valid"
    EXPIRED = "expired"


class CertificateError(HandshakeError):
    """The server's certificate does not authenticate it; ``reason`` says which check failed."""

    code = "noise-invalid-certificate"

    def __init__(self, reason: CertificateFailure, message: str) -> None:
        super().__init__(message, code=f"noise-certificate-{reason.value}")
        self.reason = reason


class DecryptError(NoiseError):
    """A transport ciphertext failed authentication (tampered, replayed, reordered or truncated).

    ``frames`` holds any frames that were completely and validly decrypted earlier in the same
    :meth:`~sv2.noise_transport.Transport.feed` call, so that nothing authentic is silently lost.
    """

    code = "noise-decrypt-failed"

    def __init__(self, message: str, frames: list[bytes] | None = None) -> None:
        super().__init__(message)
        self.frames: list[bytes] = frames or []


class FrameTooLargeError(NoiseError):
    """A frame's plaintext payload exceeds the transport's ``max_frame_size``."""

    code = "noise-frame-too-large"

    def __init__(self, message: str, frames: list[bytes] | None = None) -> None:
        super().__init__(message)
        self.frames: list[bytes] = frames or []


class NonceExhaustedError(NoiseError):
    """The 64-bit nonce would wrap (Noise reserves 2**64-1); the session must be re-keyed."""

    code = "noise-nonce-exhausted"


class TransportClosedError(NoiseError):
    """The transport already failed once and refuses further use."""

    code = "noise-transport-closed"


__all__ = [
    "CertificateError",
    "CertificateFailure",
    "DecryptError",
    "FrameTooLargeError",
    "HandshakeError",
    "NoiseError",
    "NonceExhaustedError",
    "TransportClosedError",
]
