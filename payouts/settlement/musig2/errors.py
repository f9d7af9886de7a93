"""Errors of the MuSig2 signing session, each with a stable machine-readable ``code``.

Every rejection names the signer it blames (``signer_index``) when there is one, so the API can
report it and the settlement layer can exclude that payee from the cooperative path next time.
"""

from __future__ import annotations

from payouts.errors import PayoutsError


class SessionError(PayoutsError):
    """Base of every signing-session error."""

    code = "musig2-session-error"

    def __init__(self, message: str, *, signer_index: int | None = None) -> None:
        super().__init__(message, signer_index=signer_index)
        self.signer_index = signer_index


class SessionConfigError(SessionError):
    """The session cannot be created with these parameters (size, message, deadlines, tweak)."""

    code = "invalid-session-config"


class InvalidPubkeyError(SessionError):
    """A committee public key does not parse (BIP-327 invalid contribution "pubkey")."""

    code = "invalid-pubkey"


class DuplicatePubkeyError(SessionError):
    """The same public key appears twice in the committee."""

    code = "duplicate-pubkey"


class UnknownSignerError(SessionError):
    """The signer index is not a committee position."""

    code = "unknown-signer"


class InvalidNonceError(SessionError):
    """A public nonce does not parse (BIP-327 invalid contribution "pubnonce")."""

    code = "invalid-nonce"


class DuplicateNonceError(SessionError):
    """The signer already delivered a different public nonce."""

    code = "duplicate-nonce"


class InvalidPartialSigError(SessionError):
    """A partial signature fails BIP-327 PartialSigVerify."""

    code = "invalid-partial-signature"


class DuplicatePartialSigError(SessionError):
    """The signer already delivered a different (valid) partial signature."""

    code = "duplicate-partial-signature"


class DeadlinePassedError(SessionError):
    """The contribution arrived after the deadline of its round; the session has failed."""

    code = "deadline-passed"


class WrongStateError(SessionError):
    """The operation is not allowed in the session's current state."""

    code = "wrong-state"


class InvalidTimeError(SessionError):
    """``now`` is not a finite number."""

    code = "invalid-time"


__all__ = [
    "DeadlinePassedError",
    "DuplicateNonceError",
    "DuplicatePartialSigError",
    "DuplicatePubkeyError",
    "InvalidNonceError",
    "InvalidPartialSigError",
    "InvalidPubkeyError",
    "InvalidTimeError",
    "SessionConfigError",
    "SessionError",
    "UnknownSignerError",
    "WrongStateError",
]
