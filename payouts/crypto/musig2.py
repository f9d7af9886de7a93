"""MuSig2 (BIP-327) over libsecp256k1's musig module, through coincurve 21's raw CFFI.

The algorithms are libsecp256k1's; this module adds what the C API leaves to the caller:

* **Blame.** Every parse of a contribution (a signer's public key, public nonce or partial
  signature, and the aggregate nonce) maps a failure to :class:`InvalidContributionError`
  carrying the signer index and the contribution kind, like BIP-327's exception of that name
  (BIP-327 "Specification", "Key Aggregation", "Nonce Aggregation", "Partial Signature
  Aggregation").
* **One-shot secret nonces.** :class:`SecNonce` can sign once. A second use raises
  :class:`NonceReuseError` before libsecp is reached, and should the C struct be replayed anyway,
  libsecp's own ARG_CHECK (the secnonce is zeroed after signing) comes back through the raising
  illegal callback in :mod:`payouts.crypto.secp` as the same exception, never ``abort()``
  (BIP-327 "Signing Flow", "Secure nonce generation": a nonce reused is a key leaked).
* **Preconditions in Python** that the C API either lacks or answers with a bare 0: messages
  are 32 bytes (the module has no length parameter), tweaks below n, the signer's key among the
  aggregated keys (optional in BIP-327 "Sign"; libsecp does not check it).

What libsecp256k1 cannot express, and this module therefore does not offer: messages other than
32 bytes, and DeterministicSign. Both are fine for taproot sighashes, the only thing the payout
engine signs.

Typical flow (BIP-327 "Signing Flow")::

    ctx = key_agg(pubkeys).taproot_tweak(merkle_root)      # everyone
    secnonce, pubnonce = nonce_gen(sk, pk, ctx, sighash)   # each signer, round 1
    aggnonce = nonce_agg(pubnonces)                        # coordinator
    session = SessionContext(aggnonce, ctx, sighash)       # everyone
    psig = partial_sign(secnonce, sk, session)             # each signer, round 2
    ok = partial_sig_verify(psig, pubnonce_i, pk_i, session, signer_index=i)
    sig = partial_sig_agg(psigs, session)                  # 64-byte BIP-340 signature
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Sequence
from typing import Any, Final, Literal, NoReturn

from payouts.crypto.secp import CTX, SecpError, check, ffi, lib
from payouts.tx.hashes import tagged_hash  # BIP-340 tagged hash, re-exported (tests, benches)

__all__ = [
    "AGGNONCE_SIZE",
    "PSIG_SIZE",
    "PUBNONCE_SIZE",
    "SIG_SIZE",
    "ContributionKind",
    "InvalidContributionError",
    "KeyAggContext",
    "MuSig2Error",
    "MuSig2ValueError",
    "NonceReuseError",
    "SecNonce",
    "SessionContext",
    "check_pubnonce",
    "individual_pubkey",
    "key_agg",
    "key_sort",
    "nonce_agg",
    "nonce_gen",
    "partial_sig_agg",
    "partial_sig_verify",
    "partial_sign",
    "psig_well_formed",
    "tagged_hash",
]

PUBKEY_SIZE: Final = 33
PUBNONCE_SIZE: Final = 66
AGGNONCE_SIZE: Final = 66
PSIG_SIZE: Final = 32
SIG_SIZE: Final = 64
#: secp256k1 group order n (BIP-327 "Notation").
N: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141

ContributionKind = Literal["pubkey", "pubnonce", "aggnonce", "psig"]


class MuSig2Error(Exception):
    """Base of every error this module raises."""


class MuSig2ValueError(MuSig2Error, ValueError):
    """A precondition on the caller's own arguments failed (BIP-327 raises ``ValueError``)."""


class NonceReuseError(MuSig2ValueError):
    """A secret nonce was used (or offered) a second time, or is zeroed/invalid.

    BIP-327 "Sign" overwrites the secnonce with zeros so that a second call fails with
    "first secnonce value is out of range"; this is that error.
    """


class InvalidContributionError(MuSig2Error):
    """A party sent a value that does not parse (BIP-327 ``InvalidContributionError``).

    ``signer`` is the index of the culprit in the list the caller passed, or ``None`` for the
    aggregator (who has no index: the aggregate nonce); ``contrib`` is the kind of value.
    """

    def __init__(self, signer: int | None, contrib: ContributionKind, detail: str = "") -> None:
        who = "aggregator" if signer is None else f"signer {signer}"
        super().__init__(f"invalid {contrib} from {who}" + (f": {detail}" if detail else ""))
        self.signer = signer
        self.contrib: ContributionKind = contrib


# ---------------------------------------------------------------------------------------------
# Small helpers

# Parsed C types and sizes, looked up once: a session makes a few hundred of these calls, and
# parsing the type string each time is a measurable share of the wrapper's overhead.
_T_UCHAR32 = ffi.typeof("unsigned char[32]")
_T_UCHAR66 = ffi.typeof("unsigned char[66]")
_T_SECNONCE = ffi.typeof("secp256k1_musig_secnonce *")
_T_PUBNONCE = ffi.typeof("secp256k1_musig_pubnonce *")
_T_KEYPAIR = ffi.typeof("secp256k1_keypair *")
_T_PUBKEY = ffi.typeof("secp256k1_pubkey *")
_T_PSIG = ffi.typeof("secp256k1_musig_partial_sig *")
_SECNONCE_SIZE: Final = ffi.sizeof("secp256k1_musig_secnonce")
_KEYPAIR_SIZE: Final = ffi.sizeof("secp256k1_keypair")
_ZERO32: Final = bytes(32)


def _bytes(value: object, size: int, what: str) -> bytes:
    if type(value) is bytes and len(value) == size:
        return value
    if not isinstance(value, bytes | bytearray) or len(value) != size:
        raise MuSig2ValueError(f"{what} must be {size} bytes")
    return bytes(value)


def _blame(ok: int, signer: int | None, contrib: ContributionKind, what: str) -> None:
    # check() must run after every libsecp call (it also clears a pending illegal-argument
    # message); a failed parse of someone's contribution is their fault, not ours.
    try:
        check(ok, what)
    except SecpError as e:
        raise InvalidContributionError(signer, contrib, str(e)) from e


def _parse_pubkey(data: object, signer: int | None) -> Any:
    """cpoint() of BIP-327: exactly 33 bytes, prefix 02/03, x on the curve and below p."""
    pk = ffi.new("secp256k1_pubkey *")
    # ec_pubkey_parse would also accept 65-byte uncompressed keys, which BIP-327 does not.
    if not isinstance(data, bytes | bytearray) or len(data) != PUBKEY_SIZE:
        raise InvalidContributionError(signer, "pubkey", "not 33 bytes")
    _blame(
        lib.secp256k1_ec_pubkey_parse(CTX, pk, bytes(data), PUBKEY_SIZE),
        signer,
        "pubkey",
        "ec_pubkey_parse",
    )
    return pk


def _serialize_pubkey(pk: Any) -> bytes:
    out = ffi.new("unsigned char[33]")
    outlen = ffi.new("size_t *", PUBKEY_SIZE)
    check(
        lib.secp256k1_ec_pubkey_serialize(CTX, out, outlen, pk, lib.SECP256K1_EC_COMPRESSED),
        "ec_pubkey_serialize",
    )
    return bytes(ffi.buffer(out, PUBKEY_SIZE))


@functools.lru_cache(maxsize=4096)
def _pubnonce_struct(data: bytes) -> Any:
    """Parsed pubnonce, or None if it does not parse.

    Cached because a session parses every nonce twice (NonceAgg, then PartialSigVerify) and a
    parse is two point decompressions; the struct is only ever passed as a const input.
    """
    pn = ffi.new("secp256k1_musig_pubnonce *")
    ok = lib.secp256k1_musig_pubnonce_parse(CTX, pn, data)
    try:
        check(ok, "musig_pubnonce_parse")
    except SecpError as e:
        if "illegal argument" in str(e):
            raise  # not a verdict on the nonce: never cache it
        return None
    return pn


def _parse_pubnonce(data: object, signer: int | None) -> Any:
    if not isinstance(data, bytes | bytearray) or len(data) != PUBNONCE_SIZE:
        raise InvalidContributionError(signer, "pubnonce", "not 66 bytes")
    pn = _pubnonce_struct(bytes(data))
    if pn is None:
        raise InvalidContributionError(signer, "pubnonce", "musig_pubnonce_parse failed")
    return pn


def check_pubnonce(pubnonce: object, signer: int | None = None) -> None:
    """Raise :class:`InvalidContributionError` unless ``pubnonce`` parses (BIP-327 "NonceAgg").

    The parse NonceAgg would do, without aggregating: a coordinator checks each nonce as it
    arrives, and the parsed struct is cached for the aggregation that follows.
    """
    _parse_pubnonce(pubnonce, signer)


def psig_well_formed(psig: object) -> bool:
    """Whether ``psig`` is 32 bytes encoding a scalar below n.

    The part of BIP-327 "PartialSigVerifyInternal" (``s >= n`` fails) and of "PartialSigAgg"
    (``InvalidContributionError``) that needs no curve arithmetic.
    """
    return (
        isinstance(psig, bytes | bytearray)
        and len(psig) == PSIG_SIZE
        and int.from_bytes(psig, "big") < N
    )


def individual_pubkey(seckey: bytes) -> bytes:
    """BIP-327 "IndividualPubkey": the 33-byte compressed public key of ``seckey``."""
    pk = ffi.new("secp256k1_pubkey *")
    sk = ffi.new("unsigned char[32]", _bytes(seckey, 32, "seckey"))
    try:
        ok = lib.secp256k1_ec_pubkey_create(CTX, pk, sk)
        try:
            check(ok, "ec_pubkey_create")
        except SecpError as e:
            raise MuSig2ValueError("The secret key must be in range 1..n-1.") from e
    finally:
        ffi.memmove(sk, bytes(32), 32)
    return _serialize_pubkey(pk)


# ---------------------------------------------------------------------------------------------
# Key sorting and aggregation (BIP-327 "Key Sorting", "Key Aggregation", "Applying Tweaks")


def key_sort(pubkeys: Sequence[bytes]) -> list[bytes]:
    """BIP-327 "KeySort": the 33-byte keys in lexicographical byte order.

    Done on bytes, without parsing, as the BIP specifies (its vector includes a key that is not
    on the curve); ``secp256k1_ec_pubkey_sort`` would need every key to parse first.
    """
    keys = [bytes(k) for k in pubkeys]
    for i, k in enumerate(keys):
        if len(k) != PUBKEY_SIZE:
            raise InvalidContributionError(i, "pubkey", "not 33 bytes")
    return sorted(keys)


class KeyAggContext:
    """BIP-327 "KeyAgg Context": aggregate key Q plus accumulated tweak state (gacc, tacc).

    Wraps libsecp's opaque ``secp256k1_musig_keyagg_cache``; instances are immutable (tweaking
    returns a new context over a copied cache), so one context can serve many sessions.
    """

    __slots__ = ("_cache", "_parsed", "_pubkey_set", "pubkeys", "tweaks")

    def __init__(
        self,
        cache: Any,
        pubkeys: Sequence[bytes],
        tweaks: Sequence[tuple[bytes, bool]] = (),
        parsed: dict[bytes, Any] | None = None,
    ) -> None:
        """Wrap an initialised cache. Use :func:`key_agg`; tests may pass a hand-made cache."""
        self._cache = cache
        self.pubkeys: tuple[bytes, ...] = tuple(pubkeys)
        self.tweaks: tuple[tuple[bytes, bool], ...] = tuple(tweaks)
        # Parsed keys, reused by nonce_gen and partial_sig_verify: decompressing a point costs
        # about as much as the musig arithmetic around it (shared, never mutated).
        self._parsed: dict[bytes, Any] = {} if parsed is None else parsed
        self._pubkey_set = frozenset(self.pubkeys)

    def _pubkey_struct(self, pubkey: object, signer: int | None) -> Any:
        """The parsed ``secp256k1_pubkey *`` of an aggregated key, parsing others afresh."""
        if isinstance(pubkey, bytes | bytearray):
            hit = self._parsed.get(bytes(pubkey))
            if hit is not None:
                return hit
        return _parse_pubkey(pubkey, signer)

    @property
    def cache(self) -> Any:
        """The raw ``secp256k1_musig_keyagg_cache *`` (do not mutate)."""
        return self._cache

    @property
    def plain_pubkey(self) -> bytes:
        """BIP-327 "GetPlainPubkey": the 33-byte compressed (tweaked) aggregate key."""
        pk = ffi.new("secp256k1_pubkey *")
        check(lib.secp256k1_musig_pubkey_get(CTX, pk, self._cache), "musig_pubkey_get")
        return _serialize_pubkey(pk)

    @property
    def xonly_pubkey(self) -> bytes:
        """BIP-327 "GetXonlyPubkey": the 32-byte x-only key a BIP-340 verifier uses."""
        return self.plain_pubkey[1:]

    def contains(self, pubkey: bytes) -> bool:
        """Whether ``pubkey`` is one of the aggregated keys (BIP-327 "Sign" optional check)."""
        return bytes(pubkey) in self._pubkey_set

    def tweak_add(self, tweak: bytes, *, xonly: bool) -> KeyAggContext:
        """BIP-327 "ApplyTweak": a new context with ``tweak`` added (x-only or plain).

        Raises :class:`MuSig2ValueError` for a tweak >= n or a result at infinity (the two
        ``ValueError`` cases of the BIP).
        """
        t = _bytes(tweak, 32, "tweak")
        if int.from_bytes(t, "big") >= N:
            # libsecp answers 0 for both failure cases; the BIP tells them apart, so do we.
            raise MuSig2ValueError("The tweak must be less than n.")
        cache = ffi.new("secp256k1_musig_keyagg_cache *")
        ffi.memmove(cache, self._cache, ffi.sizeof("secp256k1_musig_keyagg_cache"))
        fn = (
            lib.secp256k1_musig_pubkey_xonly_tweak_add
            if xonly
            else lib.secp256k1_musig_pubkey_ec_tweak_add
        )
        try:
            check(fn(CTX, ffi.NULL, cache, t), "musig_pubkey_tweak_add")
        except SecpError as e:
            raise MuSig2ValueError("The result of tweaking cannot be infinity.") from e
        return KeyAggContext(cache, self.pubkeys, (*self.tweaks, (t, xonly)), self._parsed)

    def taproot_tweak(self, merkle_root: bytes = b"") -> KeyAggContext:
        """BIP-341 output-key tweak of this (internal) key: t = hash_TapTweak(P || root).

        ``merkle_root`` is empty for a key-path-only output (BIP-86) or the 32-byte script tree
        root. BIP-327 "Applying Tweaks" says taproot tweaks are x-only tweaks.
        """
        root = bytes(merkle_root)
        if len(root) not in (0, 32):
            raise MuSig2ValueError("merkle_root must be empty or 32 bytes")
        return self.tweak_add(tagged_hash("TapTweak", self.xonly_pubkey + root), xonly=True)


def key_agg(
    pubkeys: Sequence[bytes], tweaks: Sequence[bytes] = (), is_xonly: Sequence[bool] = ()
) -> KeyAggContext:
    """BIP-327 "KeyAgg" in the order given (it does not sort), then "ApplyTweak" for each tweak.

    Raises :class:`InvalidContributionError` (``contrib="pubkey"``) naming the first key that
    does not parse, and :class:`MuSig2ValueError` for an empty list or a bad tweak.
    """
    if len(pubkeys) == 0:
        raise MuSig2ValueError("at least one public key is needed")
    if len(tweaks) != len(is_xonly):
        raise MuSig2ValueError("The `tweaks` and `is_xonly` arrays must have the same length.")
    keys = [bytes(k) if isinstance(k, bytes | bytearray) else k for k in pubkeys]
    ctx = (
        _key_agg_cached(tuple(keys))
        if all(isinstance(k, bytes) for k in keys)
        else _key_agg_fresh(keys)  # raises: something in there is not a key
    )
    for t, x in zip(tweaks, is_xonly, strict=True):
        ctx = ctx.tweak_add(t, xonly=x)
    return ctx


def _key_agg_fresh(keys: Sequence[Any]) -> KeyAggContext:
    parsed = [_parse_pubkey(k, i) for i, k in enumerate(keys)]
    ptrs = ffi.new("secp256k1_pubkey *[]", parsed)
    cache = ffi.new("secp256k1_musig_keyagg_cache *")
    # The aggregate of hashed-coefficient terms reaching infinity is a discrete-log break, so a
    # 0 here can only mean an argument error; check() reports it.
    check(
        lib.secp256k1_musig_pubkey_agg(CTX, ffi.NULL, cache, ptrs, len(parsed)), "musig_pubkey_agg"
    )
    return KeyAggContext(cache, keys, (), dict(zip(keys, parsed, strict=True)))


@functools.lru_cache(maxsize=64)
def _key_agg_cached(keys: tuple[bytes, ...]) -> KeyAggContext:
    """KeyAgg of one committee, computed once per process (while it stays among the last 64).

    libsecp's ``musig_pubkey_agg`` runs one scalar multiplication per key (no multi-exp without a
    scratch space), about 5 ms for 100 keys, and the same committee is aggregated when its output
    is built, when the JD client checks it and when its signing session opens. Sharing the
    context is safe: it is immutable (tweaks copy the cache). A failure raises and is not cached.
    """
    return _key_agg_fresh(keys)


# ---------------------------------------------------------------------------------------------
# Nonces (BIP-327 "Nonce Generation", "Nonce Aggregation")


class SecNonce:
    """A signer's secret nonce: usable for exactly one :func:`partial_sign` call.

    Never serialized, pickled or copied: a secnonce written to disk and restored after a crash
    is the classic way to sign twice with one nonce and leak the key (BIP-327 "Signing Flow").
    """

    __slots__ = ("_struct", "_used", "pubkey", "pubnonce")

    def __init__(self, struct: Any, pubkey: bytes, pubnonce: bytes | None = None) -> None:
        """Wrap a ``secp256k1_musig_secnonce *``. Use :func:`nonce_gen`."""
        self._struct = struct
        self._used = False
        self.pubkey = bytes(pubkey)
        self.pubnonce = None if pubnonce is None else bytes(pubnonce)

    @property
    def used(self) -> bool:
        """True once the nonce went into :func:`partial_sign` (or was wiped)."""
        return self._used

    def wipe(self) -> None:
        """Zero the secret and mark the nonce used (e.g. when a session is abandoned)."""
        self._used = True
        ffi.memmove(self._struct, bytes(_SECNONCE_SIZE), _SECNONCE_SIZE)

    def _consume(self) -> Any:
        if self._used:
            raise NonceReuseError("secret nonce already used: never sign twice with one nonce")
        # Marked before libsecp runs: partial_sign zeroes the struct even when it fails.
        self._used = True
        return self._struct

    def __del__(self) -> None:
        # Best effort: do not leave k1, k2 in freed memory.
        with contextlib.suppress(Exception):  # interpreter shutdown may have freed ffi
            ffi.memmove(self._struct, bytes(_SECNONCE_SIZE), _SECNONCE_SIZE)

    def _refuse(self, *_: object) -> NoReturn:
        raise TypeError("a SecNonce cannot be copied or serialized (nonce reuse leaks the key)")

    __copy__ = _refuse
    __deepcopy__ = _refuse
    __reduce__ = _refuse
    __reduce_ex__ = _refuse

    def __repr__(self) -> str:
        return f"SecNonce(pubkey={self.pubkey.hex()}, used={self._used})"


def nonce_gen(
    seckey: bytes | None,
    pubkey: bytes,
    keyagg: KeyAggContext | None = None,
    msg: bytes | None = None,
    extra_in: bytes | None = None,
    *,
    rand: bytes | None = None,
) -> tuple[SecNonce, bytes]:
    """BIP-327 "NonceGen": returns (secnonce, 66-byte pubnonce).

    ``rand`` is the 32-byte ``rand'`` of the BIP and defaults to ``os.urandom(32)``; pass it only
    in tests (a repeated ``rand`` with the same inputs repeats the nonce). ``seckey``, ``keyagg``
    (its x-only key is the BIP's ``aggpk``), ``msg`` and ``extra_in`` are optional hardening
    inputs; libsecp takes ``msg`` and ``extra_in`` as exactly 32 bytes when given. That
    ``seckey`` belongs to ``pubkey`` is not checked here (BIP-327 does not either);
    :func:`partial_sign` refuses a mismatch before the nonce is spent.
    """
    pk_bytes = _bytes(pubkey, PUBKEY_SIZE, "pubkey")
    pk = _parse_pubkey(pk_bytes, None) if keyagg is None else keyagg._pubkey_struct(pk_bytes, None)
    secrand = ffi.new(_T_UCHAR32, os.urandom(32) if rand is None else _bytes(rand, 32, "rand"))
    sk = ffi.NULL if seckey is None else ffi.new(_T_UCHAR32, _bytes(seckey, 32, "seckey"))
    msg_arg = ffi.NULL if msg is None else _bytes(msg, 32, "msg (libsecp256k1: msg32 only)")
    extra = ffi.NULL if extra_in is None else _bytes(extra_in, 32, "extra_in")
    cache = ffi.NULL if keyagg is None else keyagg._cache
    sn = ffi.new(_T_SECNONCE)
    pn = ffi.new(_T_PUBNONCE)
    try:
        ok = lib.secp256k1_musig_nonce_gen(CTX, sn, pn, secrand, sk, pk, msg_arg, cache, extra)
        try:
            check(ok, "musig_nonce_gen")
        except SecpError as e:
            # 0 for an all-zero rand or a seckey out of range (a mismatch is not checked).
            raise MuSig2ValueError(f"nonce generation failed: {e}") from e
    finally:
        # libsecp already zeroes secrand; the seckey copy is ours to wipe.
        if sk != ffi.NULL:
            ffi.memmove(sk, _ZERO32, 32)
    out = ffi.new(_T_UCHAR66)
    check(lib.secp256k1_musig_pubnonce_serialize(CTX, out, pn), "musig_pubnonce_serialize")
    pubnonce: bytes = ffi.buffer(out)[:]
    return SecNonce(sn, pk_bytes, pubnonce), pubnonce


def _nonce_agg_parsed(parsed: Sequence[Any]) -> bytes:
    if len(parsed) == 0:
        raise MuSig2ValueError("at least one public nonce is needed")
    agg = ffi.new("secp256k1_musig_aggnonce *")
    ptrs = ffi.new("secp256k1_musig_pubnonce *[]", list(parsed))
    check(lib.secp256k1_musig_nonce_agg(CTX, agg, ptrs, len(parsed)), "musig_nonce_agg")
    out = ffi.new("unsigned char[66]")
    # Either half may be infinity (serialized as 33 zero bytes): BIP-327 "NonceAgg" allows it so
    # that no signer can stall the session by cancelling the others' nonces.
    check(lib.secp256k1_musig_aggnonce_serialize(CTX, out, agg), "musig_aggnonce_serialize")
    return bytes(ffi.buffer(out, AGGNONCE_SIZE))


def nonce_agg(pubnonces: Sequence[bytes]) -> bytes:
    """BIP-327 "NonceAgg": the 66-byte aggregate nonce.

    Raises :class:`InvalidContributionError` (``contrib="pubnonce"``) naming the first signer
    whose nonce does not parse.
    """
    return _nonce_agg_parsed([_parse_pubnonce(p, i) for i, p in enumerate(pubnonces)])


# ---------------------------------------------------------------------------------------------
# Session, signing, verification, aggregation (BIP-327 "Session Context", "Signing",
# "Partial Signature Verification", "Partial Signature Aggregation")


class SessionContext:
    """BIP-327 "Session Context": aggregate nonce, keys and tweaks (``keyagg``), message.

    Built once per session with ``secp256k1_musig_nonce_process``; raises
    :class:`InvalidContributionError` (``signer=None, contrib="aggnonce"``) for an aggregate
    nonce that does not parse, and :class:`MuSig2ValueError` for a message that is not 32 bytes.
    """

    __slots__ = ("_session", "aggnonce", "keyagg", "msg")

    def __init__(self, aggnonce: bytes, keyagg: KeyAggContext, msg: bytes) -> None:
        """Process the aggregate nonce for ``msg`` under ``keyagg``."""
        self.msg = _bytes(msg, 32, "msg (libsecp256k1 signs 32-byte messages only)")
        an = ffi.new("secp256k1_musig_aggnonce *")
        if not isinstance(aggnonce, bytes | bytearray) or len(aggnonce) != AGGNONCE_SIZE:
            raise InvalidContributionError(None, "aggnonce", "not 66 bytes")
        _blame(
            lib.secp256k1_musig_aggnonce_parse(CTX, an, bytes(aggnonce)),
            None,
            "aggnonce",
            "musig_aggnonce_parse",
        )
        self.aggnonce = bytes(aggnonce)
        self.keyagg = keyagg
        self._session = ffi.new("secp256k1_musig_session *")
        check(
            lib.secp256k1_musig_nonce_process(CTX, self._session, an, self.msg, keyagg.cache),
            "musig_nonce_process",
        )

    @property
    def raw(self) -> Any:
        """The raw ``secp256k1_musig_session *``."""
        return self._session


def partial_sign(
    secnonce: SecNonce, seckey: bytes, session: SessionContext, *, verify: bool = True
) -> bytes:
    """BIP-327 "Sign": the signer's 32-byte partial signature; consumes ``secnonce``.

    Checks that do not touch the nonce come first and leave it usable (bad seckey, key not in
    the session's key list, key different from the one the nonce was generated for). From the
    libsecp call on, the nonce is spent whatever happens. A second use raises
    :class:`NonceReuseError`. ``verify`` re-verifies the result against the signer's own
    pubnonce (BIP-327 recommends it against fault attacks; libsecp does not do it).
    """
    if not isinstance(secnonce, SecNonce):
        raise TypeError("secnonce must be a SecNonce")
    if secnonce.used:
        raise NonceReuseError("secret nonce already used: never sign twice with one nonce")
    sk = ffi.new(_T_UCHAR32, _bytes(seckey, 32, "seckey"))
    keypair = ffi.new(_T_KEYPAIR)
    try:
        try:
            check(lib.secp256k1_keypair_create(CTX, keypair, sk), "keypair_create")
        except SecpError as e:
            raise MuSig2ValueError("The secret key must be in range 1..n-1.") from e
        pk = ffi.new(_T_PUBKEY)
        check(lib.secp256k1_keypair_pub(CTX, pk, keypair), "keypair_pub")
        pk_bytes = _serialize_pubkey(pk)
        if pk_bytes != secnonce.pubkey:
            raise MuSig2ValueError("Public key does not match nonce_gen argument")
        if not session.keyagg.contains(pk_bytes):
            raise MuSig2ValueError("The signer's pubkey must be included in the list of pubkeys.")
        ps = ffi.new(_T_PSIG)
        ok = lib.secp256k1_musig_partial_sign(
            CTX, ps, secnonce._consume(), keypair, session.keyagg._cache, session._session
        )
        try:
            check(ok, "musig_partial_sign")
        except SecpError as e:
            # Every other argument is ours and was checked above, so an ARG_CHECK here is the
            # secnonce: a bad magic (zeroed after use) or zero k1/k2 ("!is_zero").
            if "illegal argument" in str(e):
                raise NonceReuseError(f"secret nonce is zeroed or invalid (reused?): {e}") from e
            raise MuSig2ValueError(str(e)) from e
    finally:
        ffi.memmove(sk, _ZERO32, 32)
        ffi.memmove(keypair, bytes(_KEYPAIR_SIZE), _KEYPAIR_SIZE)
    out = ffi.new(_T_UCHAR32)
    check(lib.secp256k1_musig_partial_sig_serialize(CTX, out, ps), "musig_partial_sig_serialize")
    psig: bytes = ffi.buffer(out)[:]
    if (
        verify
        and secnonce.pubnonce is not None
        and not partial_sig_verify(psig, secnonce.pubnonce, pk_bytes, session)
    ):
        raise MuSig2Error("own partial signature does not verify (fault?)")  # pragma: no cover
    return psig


def partial_sig_verify(
    psig: bytes,
    pubnonce: bytes,
    pubkey: bytes,
    session: SessionContext,
    *,
    signer_index: int | None = None,
) -> bool:
    """BIP-327 "PartialSigVerifyInternal": does ``psig`` verify for this signer?

    A psig that is not a scalar below n verifies as False (as in the BIP). A pubnonce or pubkey
    that does not parse raises :class:`InvalidContributionError` blaming ``signer_index``.
    """
    pn = _parse_pubnonce(pubnonce, signer_index)
    pk = session.keyagg._pubkey_struct(pubkey, signer_index)
    ps = ffi.new("secp256k1_musig_partial_sig *")
    if not isinstance(psig, bytes | bytearray) or len(psig) != PSIG_SIZE:
        return False
    ok = lib.secp256k1_musig_partial_sig_parse(CTX, ps, bytes(psig))
    try:
        check(ok, "musig_partial_sig_parse")
    except SecpError:
        return False
    ok = lib.secp256k1_musig_partial_sig_verify(CTX, ps, pn, pk, session.keyagg.cache, session.raw)
    try:
        check(ok, "musig_partial_sig_verify")
    except SecpError as e:
        if "illegal" in str(e):  # an argument error is ours, not a verdict on the signer
            raise
        return False
    return True


def partial_sig_agg(psigs: Sequence[bytes], session: SessionContext) -> bytes:
    """BIP-327 "PartialSigAgg": the 64-byte BIP-340 signature.

    Does not verify the partial signatures (verify each one first, or the final signature).
    Raises :class:`InvalidContributionError` (``contrib="psig"``) for the first one that is not
    a scalar below n.
    """
    n = len(psigs)
    if n == 0:
        raise MuSig2ValueError("at least one partial signature is needed")
    # One C array for all of them instead of an allocation per psig.
    arr = ffi.new("secp256k1_musig_partial_sig[]", n)
    ptrs = ffi.new("secp256k1_musig_partial_sig *[]", n)
    parse = lib.secp256k1_musig_partial_sig_parse
    for i, p in enumerate(psigs):
        if not isinstance(p, bytes | bytearray) or len(p) != PSIG_SIZE:
            raise InvalidContributionError(i, "psig", "not 32 bytes")
        ptrs[i] = arr + i
        _blame(parse(CTX, ptrs[i], bytes(p)), i, "psig", "musig_partial_sig_parse")
    out = ffi.new("unsigned char[64]")
    check(
        lib.secp256k1_musig_partial_sig_agg(CTX, out, session._session, ptrs, n),
        "musig_partial_sig_agg",
    )
    sig: bytes = ffi.buffer(out)[:]
    return sig
