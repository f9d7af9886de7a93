"""SV2 Noise handshake ``Noise_NX_Secp256k1+EllSwift_ChaChaPoly_SHA256`` as sans-I/O state machines.

Follows sv2-spec ``04-Protocol-Security.md`` §4.3–4.5 and, where the text is loose or stale,
SRI ``sv2/noise-sv2`` (``handshake.rs``, ``initiator.rs``, ``responder.rs``) byte for byte:

* ``ck = SHA256(protocol_name)``, ``h = SHA256(ck)``, ``k`` empty (spec §4.5.1; SRI
  ``initialize_self``).
* ``HKDF(ck, ikm)``: ``temp = HMAC(ck, ikm)``, ``o1 = HMAC(temp, 0x01)``,
  ``o2 = HMAC(temp, o1 || 0x02)``; ``MixKey`` sets ``ck, k = o1, o2`` and ``n = 0``.
* ``EncryptAndHash``/``DecryptAndHash``: ChaCha20-Poly1305 with ``ad = h`` (when ``k`` is set),
  then ``MixHash(ciphertext)``.
* ``ECDH`` is BIP-324 ``v2_ecdh`` with the initiator's EllSwift encoding first
  (:func:`payouts.crypto.ellswift.ellswift_xdh`).

Messages::

    act 1  (-> e)                       64 bytes: initiator ephemeral EllSwift;
                                        both sides then MixHash(e) and MixHash(b"") — the
                                        EncryptAndHash of an empty payload with no key (SRI step_0).
    act 2  (<- e, ee, s, es, CERT)     234 bytes = e 64 | enc(static EllSwift) 80 | enc(cert 74) 90.
                                        (The spec's "170 bytes" is stale: sv2-spec issue #215.)
    split                               k1, k2 = HKDF(ck, b""); initiator sends with k1,
                                        receives with k2; the responder the reverse.

Randomness (``rng(n) -> bytes``) and time (``now``) are injectable so that tests can replay a
handshake exactly. Python cannot reliably wipe memory; secret keys are dropped from the objects as
soon as the handshake ends, which is the best this runtime offers.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import coincurve
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from payouts.crypto.ellswift import (
    ELLSWIFT_SIZE,
    ellswift_create,
    ellswift_decode_xonly,
    ellswift_xdh,
    is_valid_secret_key,
)
from sv2.noise_certificate import (
    CERTIFICATE_SIZE,
    CERTIFICATE_VERSION,
    TIME_LEEWAY_S,
    Certificate,
    make_certificate,
)
from sv2.noise_errors import (
    CertificateError,
    CertificateFailure,
    DecryptError,
    FrameTooLargeError,
    HandshakeError,
    NoiseError,
    NonceExhaustedError,
    TransportClosedError,
)
from sv2.noise_transport import MAC_SIZE, MAX_PAYLOAD, Transport, ciphertext_length

PROTOCOL_NAME = b"Noise_NX_Secp256k1+EllSwift_ChaChaPoly_SHA256"
CK_INIT = hashlib.sha256(PROTOCOL_NAME).digest()
"""``2eb47881…29bf10`` = SRI ``NOISE_HASHED_PROTOCOL_NAME_CHACHA``."""
H_INIT = hashlib.sha256(CK_INIT).digest()
"""``922fa32e…dc6104``: ``h`` before act 1."""

ACT1_SIZE = ELLSWIFT_SIZE
ACT2_SIZE = ELLSWIFT_SIZE + (ELLSWIFT_SIZE + MAC_SIZE) + (CERTIFICATE_SIZE + MAC_SIZE)
"""234 (SRI ``INITIATOR_EXPECTED_HANDSHAKE_MESSAGE_SIZE``)."""

Rng = Callable[[int], bytes]
Clock = Callable[[], float]

_ZERO_NONCE = bytes(12)

__all__ = [
    "ACT1_SIZE",
    "ACT2_SIZE",
    "CERTIFICATE_SIZE",
    "CERTIFICATE_VERSION",
    "CK_INIT",
    "H_INIT",
    "PROTOCOL_NAME",
    "TIME_LEEWAY_S",
    "Certificate",
    "CertificateError",
    "CertificateFailure",
    "DecryptError",
    "FrameTooLargeError",
    "HandshakeError",
    "NoiseError",
    "NoiseInitiator",
    "NoiseResponder",
    "NonceExhaustedError",
    "ServerIdentity",
    "Transport",
    "TransportClosedError",
    "ciphertext_length",
    "hkdf2",
    "make_certificate",
]


def hkdf2(chaining_key: bytes, ikm: bytes) -> tuple[bytes, bytes]:
    """Noise ``HKDF`` with two outputs (spec §4.4.2; SRI ``hkdf_2``).

    Identical to RFC 5869 HKDF-SHA256 with ``salt = chaining_key``, empty ``info``, 64 bytes out.
    """
    temp = hmac.digest(chaining_key, ikm, "sha256")
    o1 = hmac.digest(temp, b"\x01", "sha256")
    o2 = hmac.digest(temp, o1 + b"\x02", "sha256")
    return o1, o2


def _new_secret(rng: Rng) -> bytes:
    # A uniform 32-byte string is out of range with probability ~2**-128; retry a few times so
    # that a broken rng (e.g. returning zeros) fails loudly instead of looping.
    for _ in range(16):
        sk = rng(32)
        if is_valid_secret_key(sk):
            return sk
    raise ValueError("rng produced no valid secp256k1 secret key in 16 attempts")


class _SymmetricState:
    """Noise SymmetricState: ``ck``, ``h`` and the handshake CipherState (spec §4.4)."""

    __slots__ = ("aead", "ck", "h", "n")

    def __init__(self) -> None:
        self.ck = CK_INIT
        self.h = H_INIT
        self.aead: ChaCha20Poly1305 | None = None
        self.n = 0

    def mix_hash(self, data: bytes) -> None:
        self.h = hashlib.sha256(self.h + data).digest()

    def mix_key(self, ikm: bytes) -> None:
        self.ck, k = hkdf2(self.ck, ikm)
        self.aead = ChaCha20Poly1305(k)
        self.n = 0

    def _nonce(self) -> bytes:
        # Every handshake encryption follows a fresh MixKey in NX, so n is always 0 here; the
        # general encoding is kept so the code stays correct if that ever changes.
        return _ZERO_NONCE if self.n == 0 else bytes(4) + self.n.to_bytes(8, "little")

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        if self.aead is None:
            ct = plaintext
        else:
            ct = self.aead.encrypt(self._nonce(), plaintext, self.h)
            self.n += 1
        self.mix_hash(ct)
        return ct

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        if self.aead is None:
            pt = ciphertext
        else:
            pt = self.aead.decrypt(self._nonce(), ciphertext, self.h)
            self.n += 1
        self.mix_hash(ciphertext)
        return pt

    def split(self) -> tuple[bytes, bytes]:
        return hkdf2(self.ck, b"")


def _resolve_now(now: int | Clock) -> int:
    return int(now) if isinstance(now, int) else int(now())


class NoiseInitiator:
    """Client side (the JDC / miner side, "party A").

    ``authority_pubkey`` is the pool authority's 32-byte x-only key (see :mod:`sv2.authority` for
    the base58 form). ``None`` skips certificate verification entirely and accepts any server —
    SRI's behaviour without a configured key; use it only on a trusted LAN, since it gives
    encryption without authentication. ``now`` is a fixed unix time or a clock, read when act 2
    arrives.

    Usage: ``wire.send(i.act1())``; ``transport = i.read_act2(wire.recv_exactly(ACT2_SIZE))``.
    Any failure leaves the object unusable (spec §4.5: the session must be terminated).
    """

    def __init__(
        self,
        authority_pubkey: bytes | None,
        *,
        now: int | Clock = time.time,
        rng: Rng = os.urandom,
        leeway: int = TIME_LEEWAY_S,
        max_frame_size: int = MAX_PAYLOAD,
    ) -> None:
        if authority_pubkey is not None:
            if len(authority_pubkey) != 32:
                raise ValueError("authority public key must be 32 bytes (x-only)")
            coincurve.PublicKeyXOnly(authority_pubkey)  # raises ValueError if not on the curve
        self._authority = authority_pubkey
        self._now = now
        self._rng = rng
        self._leeway = leeway
        self._max_frame_size = max_frame_size
        self._sym = _SymmetricState()
        self._e_sk: bytes | None = None
        self._e_ell = b""
        self._state = "new"
        self.server_static: bytes | None = None
        """Server's static EllSwift key (64 bytes), once act 2 has been authenticated."""
        self.server_static_xonly: bytes | None = None
        """Its x-only form: the key the certificate binds."""
        self.certificate: Certificate | None = None
        """The server's certificate, once act 2 has been authenticated."""

    def act1(self) -> bytes:
        """Return act 1 (64 bytes): a fresh ephemeral EllSwift public key."""
        if self._state != "new":
            raise HandshakeError(f"act1() called in state {self._state!r}")
        self._state = "failed"  # until this method completes
        self._e_sk = _new_secret(self._rng)
        self._e_ell = ellswift_create(self._e_sk, self._rng(32))
        self._sym.mix_hash(self._e_ell)
        self._sym.encrypt_and_hash(b"")  # k is empty: MixHash(b"") (spec §4.5.1.1 step 4)
        self._state = "sent_act1"
        return self._e_ell

    def read_act2(self, message: bytes) -> Transport:
        """Process act 2 (234 bytes), authenticate the server, and return the transport.

        Raises :class:`HandshakeError` for a wrong size or failed decryption and
        :class:`CertificateError` (a subclass) when the certificate does not check out.
        """
        if self._state != "sent_act1":
            raise HandshakeError(f"read_act2() called in state {self._state!r}")
        self._state = "failed"
        e_sk = self._e_sk
        self._e_sk = None
        if e_sk is None:  # unreachable given the state check; explicit so -O cannot drop it
            raise HandshakeError("no ephemeral key")
        if len(message) != ACT2_SIZE:
            raise HandshakeError(f"act 2 must be {ACT2_SIZE} bytes, got {len(message)}")
        sym = self._sym
        re = bytes(message[:64])
        sym.mix_hash(re)
        sym.mix_key(ellswift_xdh(self._e_ell, re, e_sk, True))  # ee
        try:
            rs = sym.decrypt_and_hash(bytes(message[64:144]))
            sym.mix_key(ellswift_xdh(self._e_ell, rs, e_sk, True))  # es
            cert_bytes = sym.decrypt_and_hash(bytes(message[144:ACT2_SIZE]))
        except InvalidTag:
            raise HandshakeError("act 2 failed authentication") from None
        cert = Certificate.from_bytes(cert_bytes)
        rs_xonly = ellswift_decode_xonly(rs)
        if self._authority is not None:
            cert.verify(rs_xonly, self._authority, _resolve_now(self._now), leeway=self._leeway)
        k1, k2 = sym.split()
        self.server_static, self.server_static_xonly, self.certificate = rs, rs_xonly, cert
        self._state = "done"
        return Transport(k1, k2, handshake_hash=sym.h, max_frame_size=self._max_frame_size)


@dataclass(frozen=True, slots=True)
class ServerIdentity:
    """A server's static Noise key, its EllSwift encoding and certificate, reused per connection.

    Encoding the static key costs one EllSwift operation; doing it once here rather than per
    connection keeps the per-handshake cost at one ``create`` and two ``xdh``. Reusing the encoding
    is safe: it only travels encrypted (act 2, ``EncryptAndHash(s)``).
    """

    static_key: bytes = field(repr=False)  # keep the secret out of logs and tracebacks
    static_ellswift: bytes
    certificate: Certificate

    @classmethod
    def create(
        cls, static_key: bytes, certificate: Certificate | bytes, *, rng: Rng = os.urandom
    ) -> ServerIdentity:
        """Wrap an existing static key and certificate (74 bytes or parsed)."""
        if not is_valid_secret_key(static_key):
            raise ValueError("static key must be 32 bytes in [1, n-1]")
        cert = (
            certificate
            if isinstance(certificate, Certificate)
            else Certificate.from_bytes(certificate)
        )
        return cls(bytes(static_key), ellswift_create(static_key, rng(32)), cert)

    @classmethod
    def signed_by(
        cls,
        authority_sk: bytes,
        *,
        static_key: bytes | None = None,
        validity_s: int = 86400,
        now: int | Clock = time.time,
        rng: Rng = os.urandom,
    ) -> ServerIdentity:
        """Make (or reuse) a static key and sign a certificate valid ``[now, now + validity_s]``.

        This is what SRI's responder does per connection (``valid_from = now``,
        ``not_valid_after = now + cert_validity``); call it again before ``not_valid_after``.
        """
        sk = static_key if static_key is not None else _new_secret(rng)
        if not is_valid_secret_key(sk):
            raise ValueError("static key must be 32 bytes in [1, n-1]")
        start = _resolve_now(now)
        end = min(start + validity_s, 0xFFFFFFFF)  # saturating, as SRI (stratum #2103)
        pub = coincurve.PrivateKey(sk).public_key.format()
        cert = make_certificate(authority_sk, pub, start, end, aux_rand=rng(32))
        return cls(sk, ellswift_create(sk, rng(32)), cert)

    def check(self, authority_pubkey: bytes, now: int | Clock = time.time) -> None:
        """Raise :class:`CertificateError` if a client with ``authority_pubkey`` would reject us."""
        self.certificate.verify(
            ellswift_decode_xonly(self.static_ellswift),
            authority_pubkey,
            _resolve_now(now),
            leeway=0,
        )


class NoiseResponder:
    """Server side (the JDS / pool side, "party B"): one instance per connection.

    ``NoiseResponder(static_key, certificate)`` or ``NoiseResponder(identity)`` with a
    :class:`ServerIdentity` (cheaper per connection). :meth:`read_act1` consumes act 1 and returns
    act 2; the handshake is then complete on this side and :attr:`transport` is ready.
    """

    def __init__(
        self,
        static_key: bytes | ServerIdentity,
        certificate: Certificate | bytes | None = None,
        *,
        rng: Rng = os.urandom,
        max_frame_size: int = MAX_PAYLOAD,
    ) -> None:
        if isinstance(static_key, ServerIdentity):
            if certificate is not None:
                raise ValueError("pass either a ServerIdentity or (static_key, certificate)")
            identity = static_key
        else:
            if certificate is None:
                raise ValueError("a certificate is required with a raw static key")
            identity = ServerIdentity.create(static_key, certificate, rng=rng)
        self._identity = identity
        self._cert_bytes = identity.certificate.to_bytes()
        self._rng = rng
        self._max_frame_size = max_frame_size
        self._state = "new"
        self._transport: Transport | None = None

    def read_act1(self, message: bytes) -> bytes:
        """Consume act 1 (64 bytes) and return act 2 (234 bytes)."""
        if self._state != "new":
            raise HandshakeError(f"read_act1() called in state {self._state!r}")
        self._state = "failed"
        if len(message) != ACT1_SIZE:
            raise HandshakeError(f"act 1 must be {ACT1_SIZE} bytes, got {len(message)}")
        re = bytes(message)
        sym = _SymmetricState()
        sym.mix_hash(re)
        sym.decrypt_and_hash(b"")  # k is empty: MixHash(b"") (spec §4.5.1.2 step 4)

        e_sk = _new_secret(self._rng)
        e_ell = ellswift_create(e_sk, self._rng(32))
        sym.mix_hash(e_ell)
        sym.mix_key(ellswift_xdh(re, e_ell, e_sk, False))  # ee: initiator's encoding first
        enc_static = sym.encrypt_and_hash(self._identity.static_ellswift)
        sym.mix_key(
            ellswift_xdh(re, self._identity.static_ellswift, self._identity.static_key, False)
        )  # es
        enc_cert = sym.encrypt_and_hash(self._cert_bytes)
        k1, k2 = sym.split()
        self._transport = Transport(
            k2, k1, handshake_hash=sym.h, max_frame_size=self._max_frame_size
        )
        self._state = "done"
        return e_ell + enc_static + enc_cert

    @property
    def transport(self) -> Transport:
        """The encrypted transport; available once :meth:`read_act1` has returned."""
        if self._transport is None:
            raise HandshakeError("handshake not complete")
        return self._transport

    @property
    def certificate(self) -> Certificate:
        """The certificate this responder presents."""
        return self._identity.certificate
