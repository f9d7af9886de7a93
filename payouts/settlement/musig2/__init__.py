"""The ``musig2`` settlement mode: a coinbase output locked to the MuSig2 (BIP-327) aggregate key
of a bounded payee committee, spent by one cooperatively signed key-path signature.

:mod:`.session` holds the coordinator's signing-session state machine; :mod:`.errors` its
error types; :mod:`.registry` keeps sessions in the store, so every process serves them.
The cryptography is :mod:`payouts.crypto.musig2`.
"""

from payouts.settlement.musig2.errors import (
    DeadlinePassedError,
    DuplicateNonceError,
    DuplicatePartialSigError,
    DuplicatePubkeyError,
    InvalidNonceError,
    InvalidPartialSigError,
    InvalidPubkeyError,
    InvalidTimeError,
    SessionConfigError,
    SessionError,
    UnknownSignerError,
    WrongStateError,
)
from payouts.settlement.musig2.session import (
    DEFAULT_MAX_SIGNERS,
    Blame,
    Failure,
    FailureReason,
    PartialSigCheck,
    Rejection,
    SessionState,
    SigningSession,
)

__all__ = [
    "DEFAULT_MAX_SIGNERS",
    "Blame",
    "DeadlinePassedError",
    "DuplicateNonceError",
    "DuplicatePartialSigError",
    "DuplicatePubkeyError",
    "Failure",
    "FailureReason",
    "InvalidNonceError",
    "InvalidPartialSigError",
    "InvalidPubkeyError",
    "InvalidTimeError",
    "PartialSigCheck",
    "Rejection",
    "SessionConfigError",
    "SessionError",
    "SessionState",
    "SigningSession",
    "UnknownSignerError",
    "WrongStateError",
]
