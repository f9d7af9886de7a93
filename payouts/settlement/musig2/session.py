"""The coordinator's MuSig2 signing session for the ``musig2`` settlement mode (pure logic).

One session signs one 32-byte sighash (the key-path spend of the coinbase output locked to the
committee's aggregate key) with the BIP-327 two-round protocol, collected over the API::

    COLLECTING_NONCES ──all nonces──► COLLECTING_PARTIAL_SIGS ──all valid psigs──► COMPLETE
            │                                   │
            └──── nonce deadline ───► FAILED ◄──┴──── signature deadline (or abort)

Design decisions (each one tested):

* **No clock inside.** Every call takes ``now`` (seconds, any monotonic epoch the caller picks);
  :meth:`SigningSession.tick` fails the session once ``now`` is *past* the deadline of the
  current round (``now > deadline``; a contribution at exactly the deadline is on time). Every
  ``add_*`` call ticks first, so a late contribution fails the session and raises
  :class:`~.errors.DeadlinePassedError`.
* **Blame per signer.** A nonce is parsed the moment it arrives; the error names the signer.
  When a partial signature is checked depends on :class:`PartialSigCheck`:

  - ``ON_ARRIVAL`` (default): BIP-327 PartialSigVerify the moment it arrives, so a bad one is
    refused to its sender at once (the API's contract: a signer learns of its fault on POST).
  - ``ON_AGGREGATE``: on arrival only the cheap part (32 bytes, a scalar below n); when the last
    one arrives, PartialSigAgg and **one** BIP-340 verify of the result. BIP-327 ("Partial
    Signature Verification") says verifying partials is not needed for security when the final
    signature is verified; it serves to identify a disruptive signer. So only when the final
    signature fails is every not-yet-verified partial verified, and each culprit is rejected
    exactly as ``ON_ARRIVAL`` would have rejected it (same code, same blame, its slot emptied so
    it may deliver again). At the signature deadline the unverified partials are verified too,
    so a bad one is blamed ``invalid-partial-signature`` as before. What changes is *when* a bad
    partial is refused: with the final one, not with its own arrival. Cost: one BIP-340 verify
    instead of n PartialSigVerify (about 0.1 ms each) when everyone is honest. (Invalid
    partials that cancel out in the sum give the honest signature, and it is accepted.)
* **A bad contribution is rejected, it does not fail the session.** The state of every other
  signer is untouched and the culprit may still deliver a valid value before the deadline.
  Why not fail fast: after the nonce round a signer's valid partial signature is unique (s is
  fixed by s·G = R₁ + b·R₂ + e·a·g·P), so accepting a later valid one is safe; the deadline
  bounds the delay either way; and one corrupted packet should not throw away a 100-signer
  round. The rejection is recorded, and if that signer never delivers, the deadline failure
  blames it with ``invalid-partial-signature`` (or ``invalid-nonce``) instead of a plain
  no-show. A caller that wants to fail fast calls :meth:`SigningSession.abort`.
* **Duplicates.** Re-sending the identical value is idempotent (network retries); a different
  value for a slot already filled is rejected (``duplicate-nonce`` /
  ``duplicate-partial-signature``), so a signer cannot swap its nonce after others saw it. With
  ``ON_AGGREGATE`` a slot may hold a partial not verified yet: a different value for it first
  verifies the held one; if that one is bad it is rejected (as it would have been on arrival)
  and the new value takes the slot, otherwise the new value is the duplicate. Partial
  signatures carry no other authentication, so nobody can block a slot with junk either way.
* **Failure hands over to the fallback.** On FAILED, :attr:`SigningSession.failed_signers` lists
  who did not deliver; building the script-path fallback is the settlement layer's job.

The session holds no secret: signers run :func:`payouts.crypto.musig2.nonce_gen` and
:func:`~payouts.crypto.musig2.partial_sign` on their own machines.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from coincurve import PublicKeyXOnly

from payouts.crypto import musig2
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
    UnknownSignerError,
    WrongStateError,
)
from payouts.tx.hashes import tagged_hash

#: Default bound on the committee size: keeps one lazy-signer round cheap to run and to retry.
DEFAULT_MAX_SIGNERS = 100


#: The tag of the message a signer signs (BIP-340) to submit its nonce to a session.
NONCE_AUTH_TAG = "payouts.dev/musig2-nonce"


def nonce_auth_message(session_id: str, signer_index: int, pubnonce: bytes) -> bytes:
    """The 32-byte message a signer signs (BIP-340) to submit its nonce: without it anyone
    could take signer ``signer_index``'s slot with junk and get it blamed."""
    return tagged_hash(
        NONCE_AUTH_TAG, session_id.encode() + signer_index.to_bytes(4, "big") + pubnonce
    )


class SessionState(enum.StrEnum):
    """Where a signing session is (BIP-327 "Signing Flow" rounds, plus the two ends)."""

    COLLECTING_NONCES = "collecting-nonces"
    COLLECTING_PARTIAL_SIGS = "collecting-partial-sigs"
    COMPLETE = "complete"
    FAILED = "failed"


class FailureReason(enum.StrEnum):
    """Why a session ended in FAILED."""

    NONCE_DEADLINE = "nonce-deadline"
    SIGNATURE_DEADLINE = "signature-deadline"
    ABORTED = "aborted"
    AGGREGATE_INVALID = "aggregate-signature-invalid"


class PartialSigCheck(enum.StrEnum):
    """When the coordinator verifies partial signatures (module docstring, "Blame per signer")."""

    ON_ARRIVAL = "on-arrival"
    ON_AGGREGATE = "on-aggregate"


class Blame(enum.StrEnum):
    """What a signer in :attr:`SigningSession.failed_signers` failed to do."""

    NO_NONCE = "no-nonce"
    INVALID_NONCE = "invalid-nonce"
    NO_PARTIAL_SIG = "no-partial-signature"
    INVALID_PARTIAL_SIG = "invalid-partial-signature"


@dataclass(frozen=True)
class Rejection:
    """One rejected contribution, kept for the audit trail.

    ``at`` is when the contribution arrived (with ``ON_AGGREGATE``, a bad partial signature is
    recorded when it is found out, with its arrival time).
    """

    signer_index: int
    code: str
    at: float


@dataclass(frozen=True)
class SessionProgress:
    """Everything a session learned since it opened, as plain values (nothing secret: the
    secret nonces stay with the signers). :meth:`SigningSession.progress` takes it and
    :meth:`SigningSession.restore` puts it back on a session opened with the same parameters,
    so a session can live in the store and resume in any process
    (:mod:`payouts.settlement.musig2.registry`).

    ``psigs`` are the held partial signatures; those in ``unverified`` (index -> arrival time)
    have passed only the range check (``ON_AGGREGATE``). ``last_bad``: each signer's last
    partial signature found bad. The signers blamed for a bad nonce / psig are the ones with
    such a rejection, so they are not kept twice."""

    state: SessionState
    pubnonces: Mapping[int, bytes]
    psigs: Mapping[int, bytes]
    unverified: Mapping[int, float]
    last_bad: Mapping[int, bytes]
    rejections: tuple[Rejection, ...]
    aggnonce: bytes | None
    signature: bytes | None
    failure: Failure | None


@dataclass(frozen=True)
class Failure:
    """How the session failed: reason, when, and who is blamed for what."""

    reason: FailureReason
    at: float
    blame: Mapping[int, Blame] = field(default_factory=dict)
    detail: str = ""

    @property
    def failed_signers(self) -> tuple[int, ...]:
        """Indices of the signers who did not deliver, ascending."""
        return tuple(sorted(self.blame))


def _finite(now: float, what: str = "now") -> float:
    if isinstance(now, bool) or not isinstance(now, int | float) or not math.isfinite(now):
        raise InvalidTimeError(f"{what} must be a finite number, got {now!r}")
    return float(now)


class SigningSession:
    """A MuSig2 signing session over a bounded committee (see the module docstring).

    ``pubkeys`` are the committee's 33-byte keys in aggregation order (signer index = position;
    the caller fixes the order, typically with :func:`~payouts.crypto.musig2.key_sort`).
    ``msg`` is the 32-byte sighash. ``taproot_merkle_root`` selects the key the signature is
    for: ``None`` the plain aggregate key, ``b""`` the BIP-86 output key (no script tree), or a
    32-byte script-tree root (BIP-341 key-path spend of an output that also has script leaves).
    ``psig_check`` picks when partial signatures are verified (:class:`PartialSigCheck`).
    """

    def __init__(
        self,
        pubkeys: Sequence[bytes],
        msg: bytes,
        *,
        nonce_deadline: float,
        sig_deadline: float,
        taproot_merkle_root: bytes | None = None,
        max_signers: int = DEFAULT_MAX_SIGNERS,
        psig_check: PartialSigCheck = PartialSigCheck.ON_ARRIVAL,
    ) -> None:
        """Validate the parameters and aggregate the committee key (BIP-327 KeyAgg)."""
        if max_signers < 1:
            raise SessionConfigError("max_signers must be at least 1")
        try:
            check = PartialSigCheck(psig_check)
        except ValueError as e:
            msg_ = f"psig_check must be a PartialSigCheck, got {psig_check!r}"
            raise SessionConfigError(msg_) from e
        if not 1 <= len(pubkeys) <= max_signers:
            raise SessionConfigError(f"committee size must be 1..{max_signers}, got {len(pubkeys)}")
        if not isinstance(msg, bytes | bytearray) or len(msg) != 32:
            raise SessionConfigError("msg must be the 32-byte sighash")
        self.nonce_deadline = _finite(nonce_deadline, "nonce_deadline")
        self.sig_deadline = _finite(sig_deadline, "sig_deadline")
        if not self.nonce_deadline < self.sig_deadline:
            raise SessionConfigError("nonce_deadline must come before sig_deadline")
        seen: dict[bytes, int] = {}
        for i, pk in enumerate(pubkeys):
            key = bytes(pk) if isinstance(pk, bytes | bytearray) else b""
            if key in seen and key:
                # BIP-327 allows repeated keys, but in a payout committee it is a configuration
                # error (one payee holding two slots) that would also blur blame.
                raise DuplicatePubkeyError(
                    f"signer {i} repeats the key of signer {seen[key]}", signer_index=i
                )
            seen[key] = i
        try:
            internal = musig2.key_agg(list(pubkeys))
        except musig2.InvalidContributionError as e:
            raise InvalidPubkeyError(str(e), signer_index=e.signer) from e
        if taproot_merkle_root is not None and len(taproot_merkle_root) not in (0, 32):
            raise SessionConfigError("taproot_merkle_root must be None, empty or 32 bytes")
        self.internal_keyagg = internal
        #: what a signer needs to rebuild :attr:`keyagg` (None: untweaked; b"": BIP-86)
        self.taproot_merkle_root = taproot_merkle_root
        self.keyagg = (
            internal if taproot_merkle_root is None else internal.taproot_tweak(taproot_merkle_root)
        )
        self.msg = bytes(msg)
        self.max_signers = max_signers
        self.psig_check = check
        self._n = len(pubkeys)
        self._state = SessionState.COLLECTING_NONCES
        self._pubnonces: dict[int, bytes] = {}
        # Delivered partial signatures; those in _unverified (index -> arrival time) have passed
        # only the range check so far (ON_AGGREGATE), the others PartialSigVerify or the final
        # BIP-340 verify.
        self._psigs: dict[int, bytes] = {}
        self._unverified: dict[int, float] = {}
        # Each signer's last psig found bad: a retry of it is refused without curve work (one
        # per signer, so junk under many values cannot grow it).
        self._last_bad: dict[int, bytes] = {}
        self._bad_nonce: set[int] = set()
        self._bad_psig: set[int] = set()
        self._rejections: list[Rejection] = []
        self._aggnonce: bytes | None = None
        self._ctx: musig2.SessionContext | None = None
        self._signature: bytes | None = None
        self._failure: Failure | None = None

    # ------------------------------------------------------------------------------ views

    @property
    def state(self) -> SessionState:
        """The current state."""
        return self._state

    @property
    def pubkeys(self) -> tuple[bytes, ...]:
        """The committee keys, in signer-index order."""
        return self.keyagg.pubkeys

    @property
    def n_signers(self) -> int:
        """Committee size."""
        return self._n

    @property
    def internal_key(self) -> bytes:
        """The x-only MuSig2 aggregate key (BIP-341 internal key when a tweak is set)."""
        return self.internal_keyagg.xonly_pubkey

    @property
    def output_key(self) -> bytes:
        """The x-only key the final signature verifies under (tweaked, if a tweak is set)."""
        return self.keyagg.xonly_pubkey

    @property
    def aggnonce(self) -> bytes | None:
        """The 66-byte aggregate nonce, once every nonce is in (signers need it for round 2)."""
        return self._aggnonce

    @property
    def session_context(self) -> musig2.SessionContext | None:
        """The BIP-327 session context, once every nonce is in."""
        return self._ctx

    @property
    def pubnonces(self) -> Mapping[int, bytes]:
        """Accepted public nonces by signer index (read-only view)."""
        return MappingProxyType(self._pubnonces)

    @property
    def missing_nonces(self) -> tuple[int, ...]:
        """Signers whose nonce has not been accepted yet."""
        return tuple(i for i in range(self._n) if i not in self._pubnonces)

    @property
    def missing_partial_sigs(self) -> tuple[int, ...]:
        """Signers whose partial signature has not been accepted yet.

        With ``ON_AGGREGATE`` an accepted one may still turn out bad when the last one arrives;
        its signer is then missing again (see :attr:`unverified_partial_sigs`).
        """
        return tuple(i for i in range(self._n) if i not in self._psigs)

    @property
    def unverified_partial_sigs(self) -> tuple[int, ...]:
        """Signers whose accepted partial signature is not verified yet (``ON_AGGREGATE``)."""
        return tuple(sorted(self._unverified))

    @property
    def rejections(self) -> tuple[Rejection, ...]:
        """Every rejected contribution, in arrival order."""
        return tuple(self._rejections)

    @property
    def failure(self) -> Failure | None:
        """Why the session failed, or ``None``."""
        return self._failure

    @property
    def failed_signers(self) -> tuple[int, ...]:
        """Who did not deliver (empty unless FAILED; empty too when aborted without blame)."""
        return () if self._failure is None else self._failure.failed_signers

    def final_signature(self) -> bytes:
        """The 64-byte BIP-340 signature under :attr:`output_key`; only in COMPLETE."""
        if self._state is not SessionState.COMPLETE or self._signature is None:
            raise WrongStateError(f"no final signature in state {self._state}")
        return self._signature

    # ------------------------------------------------------------------------------ persistence

    def progress(self) -> SessionProgress:
        """A copy of this session's progress (see :class:`SessionProgress`)."""
        return SessionProgress(
            self._state, dict(self._pubnonces), dict(self._psigs), dict(self._unverified),
            dict(self._last_bad), tuple(self._rejections), self._aggnonce, self._signature,
            self._failure,
        )

    def restore(self, p: SessionProgress) -> None:
        """Put ``p`` (taken from a session opened with the same parameters) on this one: the
        values were checked when they arrived, so only the round-1 result is recomputed (the
        BIP-327 session context, from the aggregate nonce)."""
        self._state = p.state
        self._pubnonces = dict(p.pubnonces)
        self._psigs = dict(p.psigs)
        self._unverified = dict(p.unverified)
        self._last_bad = dict(p.last_bad)
        self._rejections = list(p.rejections)
        self._bad_nonce = {r.signer_index for r in p.rejections if r.code == InvalidNonceError.code}
        self._bad_psig = {
            r.signer_index for r in p.rejections if r.code == InvalidPartialSigError.code
        }
        self._aggnonce = p.aggnonce
        self._ctx = (
            None if p.aggnonce is None else musig2.SessionContext(p.aggnonce, self.keyagg, self.msg)
        )
        self._signature = p.signature
        self._failure = p.failure

    # ------------------------------------------------------------------------------ time

    def tick(self, now: float) -> SessionState:
        """Advance time: fail the session if the current round's deadline has passed."""
        t = _finite(now)
        if self._state is SessionState.COLLECTING_NONCES and t > self.nonce_deadline:
            blame = {
                i: Blame.INVALID_NONCE if i in self._bad_nonce else Blame.NO_NONCE
                for i in self.missing_nonces
            }
            self._fail(Failure(FailureReason.NONCE_DEADLINE, t, MappingProxyType(blame)))
        elif self._state is SessionState.COLLECTING_PARTIAL_SIGS and t > self.sig_deadline:
            # Blame as if every partial had been verified on arrival.
            self._verify_unverified()
            blame = {
                i: Blame.INVALID_PARTIAL_SIG if i in self._bad_psig else Blame.NO_PARTIAL_SIG
                for i in self.missing_partial_sigs
            }
            self._fail(Failure(FailureReason.SIGNATURE_DEADLINE, t, MappingProxyType(blame)))
        return self._state

    def abort(self, now: float, detail: str = "") -> None:
        """Fail the session now, blaming nobody (e.g. reorg, operator decision)."""
        t = _finite(now)
        if self._state in (SessionState.COMPLETE, SessionState.FAILED):
            raise WrongStateError(f"cannot abort in state {self._state}")
        self._fail(Failure(FailureReason.ABORTED, t, MappingProxyType({}), detail))

    def _fail(self, failure: Failure) -> None:
        self._failure = failure
        self._state = SessionState.FAILED

    def _enter(self, expected: SessionState, deadline_reason: FailureReason, now: float) -> None:
        """Tick, then require ``expected``; a failure by this round's deadline says so."""
        self.tick(now)
        if self._state is expected:
            return
        if self._failure is not None and self._failure.reason is deadline_reason:
            raise DeadlinePassedError(
                f"{deadline_reason} passed at {self._failure.at}; session failed"
            )
        raise WrongStateError(f"operation not allowed in state {self._state}")

    def _check_index(self, signer_index: int) -> int:
        if (
            isinstance(signer_index, bool)
            or not isinstance(signer_index, int)
            or not 0 <= signer_index < self._n
        ):
            raise UnknownSignerError(
                f"no signer {signer_index!r} in a committee of {self._n}",
                signer_index=signer_index if isinstance(signer_index, int) else None,
            )
        return signer_index

    def _reject(self, signer_index: int, code: str, now: float) -> None:
        self._rejections.append(Rejection(signer_index, code, float(now)))

    # ------------------------------------------------------------------------------ round 1

    def add_nonce(self, signer_index: int, pubnonce: bytes, now: float) -> SessionState:
        """Accept signer ``signer_index``'s 66-byte public nonce (BIP-327 round 1).

        When the last nonce arrives, aggregates them (NonceAgg) and moves to
        COLLECTING_PARTIAL_SIGS. Raises a :class:`~.errors.SessionError` subclass, leaving the
        other signers' state unchanged.
        """
        self._enter(SessionState.COLLECTING_NONCES, FailureReason.NONCE_DEADLINE, now)
        i = self._check_index(signer_index)
        value = bytes(pubnonce) if isinstance(pubnonce, bytes | bytearray) else pubnonce
        if i in self._pubnonces:
            if self._pubnonces[i] == value:
                return self._state  # retransmission: idempotent
            self._reject(i, DuplicateNonceError.code, now)
            raise DuplicateNonceError(f"signer {i} already sent another nonce", signer_index=i)
        try:
            musig2.check_pubnonce(value, i)  # NonceAgg would blame this signer later
        except musig2.InvalidContributionError as e:
            self._bad_nonce.add(i)
            self._reject(i, InvalidNonceError.code, now)
            raise InvalidNonceError(f"signer {i}: {e}", signer_index=i) from e
        self._pubnonces[i] = value
        if len(self._pubnonces) == self._n:
            self._aggnonce = musig2.nonce_agg([self._pubnonces[j] for j in range(self._n)])
            self._ctx = musig2.SessionContext(self._aggnonce, self.keyagg, self.msg)
            self._state = SessionState.COLLECTING_PARTIAL_SIGS
        return self._state

    # ------------------------------------------------------------------------------ round 2

    def add_partial_sig(self, signer_index: int, psig: bytes, now: float) -> SessionState:
        """Accept signer ``signer_index``'s 32-byte partial signature (BIP-327 round 2).

        A psig failing BIP-327 PartialSigVerify raises :class:`~.errors.InvalidPartialSigError`
        blaming the signer; the session stays in COLLECTING_PARTIAL_SIGS (module docstring).
        With ``ON_ARRIVAL`` every psig is verified here; with ``ON_AGGREGATE`` only one that is
        not a scalar below n is refused here, and the others are verified together below.
        When the last one arrives, aggregates them (PartialSigAgg) and checks the BIP-340
        signature under :attr:`output_key`: valid, the session is COMPLETE; invalid, every
        unverified psig is verified and each bad one rejected, its slot emptied again. The
        caller's own psig being among them raises for the caller; other culprits are recorded
        in :attr:`rejections` and show up again in :attr:`missing_partial_sigs`.
        """
        self._enter(SessionState.COLLECTING_PARTIAL_SIGS, FailureReason.SIGNATURE_DEADLINE, now)
        i = self._check_index(signer_index)
        t = float(now)
        value = bytes(psig) if isinstance(psig, bytes | bytearray) else psig
        held = self._psigs.get(i)
        if held is not None:
            if held == value:
                return self._state
            if self._verify_held(i):
                self._reject(i, DuplicatePartialSigError.code, t)
                raise DuplicatePartialSigError(
                    f"signer {i} already sent another partial signature", signer_index=i
                )
            # The held one was bad: it is rejected now, and this value is a fresh arrival.
        if self._last_bad.get(i) == value:
            ok = False  # a retry of a value already found bad: refused at once in either mode
        elif self.psig_check is PartialSigCheck.ON_ARRIVAL:
            ok = self._psig_verifies(i, value)
            if not ok and isinstance(value, bytes):
                self._last_bad[i] = value
        else:
            ok = musig2.psig_well_formed(value)
        if not ok:
            self._bad_psig.add(i)
            self._reject(i, InvalidPartialSigError.code, t)
            raise InvalidPartialSigError(
                f"partial signature of signer {i} does not verify", signer_index=i
            )
        self._psigs[i] = value
        if self.psig_check is PartialSigCheck.ON_AGGREGATE:
            self._unverified[i] = t
        if len(self._psigs) == self._n:
            self._finish(i, t)
        return self._state

    def _psig_verifies(self, i: int, value: object) -> bool:
        assert self._ctx is not None  # set on entering COLLECTING_PARTIAL_SIGS
        return musig2.partial_sig_verify(
            value,  # type: ignore[arg-type]  # a non-bytes value verifies as False
            self._pubnonces[i],
            self.pubkeys[i],
            self._ctx,
            signer_index=i,
        )

    def _verify_held(self, i: int) -> bool:
        """Verify signer i's held psig if not done yet; a bad one is dropped and rejected."""
        arrived = self._unverified.pop(i, None)
        if arrived is None:
            return True
        if self._psig_verifies(i, self._psigs[i]):
            return True
        self._last_bad[i] = self._psigs.pop(i)
        self._bad_psig.add(i)
        self._reject(i, InvalidPartialSigError.code, arrived)
        return False

    def _verify_unverified(self) -> list[int]:
        """Verify every held, unverified psig; return the signers whose psig was bad."""
        return [i for i in sorted(self._unverified) if not self._verify_held(i)]

    def _finish(self, caller: int, now: float) -> None:
        assert self._ctx is not None
        sig = musig2.partial_sig_agg([self._psigs[j] for j in range(self._n)], self._ctx)
        # With ON_ARRIVAL every partial verified, so this holds unless libsecp itself is broken,
        # and it is the last check before money moves. With ON_AGGREGATE it is *the* check.
        if PublicKeyXOnly(self.output_key).verify(sig, self.msg):
            self._unverified.clear()
            self._signature = sig
            self._state = SessionState.COMPLETE
            return
        bad = self._verify_unverified()
        if not bad:  # pragma: no cover - valid partials always sum to a valid signature
            self._fail(
                Failure(FailureReason.AGGREGATE_INVALID, now, MappingProxyType({}), sig.hex())
            )
            return
        if caller in bad:
            raise InvalidPartialSigError(
                f"partial signature of signer {caller} does not verify", signer_index=caller
            )


__all__ = [
    "DEFAULT_MAX_SIGNERS",
    "Blame",
    "Failure",
    "FailureReason",
    "PartialSigCheck",
    "Rejection",
    "SessionProgress",
    "SessionState",
    "SigningSession",
]
