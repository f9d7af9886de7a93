"""Encrypted SV2 frame transport after the handshake (sv2-spec ``04-Protocol-Security.md`` §4.6).

Sans-I/O: :meth:`Transport.encrypt_frame` turns one plaintext SV2 frame (6-byte header + payload)
into wire bytes, and :meth:`Transport.feed` accepts wire bytes in arbitrary pieces and returns the
plaintext frames completed so far.

Wire layout of one frame (spec §4.6; SRI ``codec-sv2`` ``encoder.rs``/``decoder.rs``):

* ``EncryptWithAd([], header6)`` → 22 bytes. The header's ``msg_length`` (U24 LE at bytes 3..5)
  stays the **plaintext** payload length.
* the payload split into plaintext chunks of at most 65519 bytes, each encrypted on its own with
  the next nonce → at most 65535 bytes per chunk. An empty payload produces no chunk at all
  (spec ``pt_len_to_ct_len(0) == 0``; SRI's encoder loop is ``while start < len``).

Each direction has its own ChaCha20-Poly1305 key and 64-bit counter nonce, encoded as 4 zero
bytes followed by the counter as u64 **little-endian** (spec §4.4.1; SRI
``cipher_state.rs::nonce_to_bytes``). Associated data is empty. Because every chunk consumes a
nonce, a replayed, reordered, dropped or truncated ciphertext fails authentication at the
receiver: there is no explicit sequence number on the wire.

The 6-byte header is parsed here directly rather than through the frame codec, so that this layer
depends on nothing above it.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from types import MappingProxyType

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from sv2.noise_errors import (
    DecryptError,
    FrameTooLargeError,
    NonceExhaustedError,
    TransportClosedError,
)

MAC_SIZE = 16
HEADER_SIZE = 6
"""Plaintext SV2 frame header: extension_type U16, msg_type U8, msg_length U24 (spec §3.2)."""
ENCRYPTED_HEADER_SIZE = HEADER_SIZE + MAC_SIZE
MAX_CT_CHUNK = 65535
"""Largest Noise transport message (spec §4.6; SRI ``SV2_FRAME_CHUNK_SIZE``)."""
MAX_PT_CHUNK = MAX_CT_CHUNK - MAC_SIZE
"""Largest plaintext payload chunk: 65519 bytes."""
MAX_PAYLOAD = 0xFFFFFF
"""``msg_length`` is a U24, so no frame payload can exceed 16 MiB - 1."""

# Noise reserves n = 2**64 - 1 (Noise spec §5.1): the last usable nonce is 2**64 - 2.
_NONCE_LIMIT = 2**64 - 1
_NONCE = struct.Struct("<4xQ")

__all__ = [
    "ENCRYPTED_HEADER_SIZE",
    "HEADER_SIZE",
    "MAC_SIZE",
    "MAX_CT_CHUNK",
    "MAX_PAYLOAD",
    "MAX_PT_CHUNK",
    "FrameLimits",
    "Transport",
    "check_frame_limits",
    "ciphertext_length",
]


FrameLimits = Mapping[tuple[int, int], int]
"""Payload ceilings for particular messages: ``(extension_type, msg_type)`` (channel bit
cleared) -> bytes. Any other message is bounded by ``max_frame_size``."""

_NO_FRAME_LIMITS: FrameLimits = MappingProxyType({})


def _frame_type(header: bytes | memoryview) -> tuple[int, int]:
    """(extension_type without the channel bit, msg_type) of a plaintext frame header."""
    return (header[0] | (header[1] << 8)) & 0x7FFF, header[2]


def ciphertext_length(payload_length: int) -> int:
    """Wire bytes of an encrypted payload of ``payload_length`` plaintext bytes (spec §4.6).

    ``pt_len + ceil(pt_len / 65519) * 16``; zero for an empty payload. Excludes the 22-byte header.
    """
    full, rest = divmod(payload_length, MAX_PT_CHUNK)
    return full * MAX_CT_CHUNK + (rest + MAC_SIZE if rest else 0)


class _CipherState:
    """Noise CipherState (spec §4.4.1) with a fixed key and a counter nonce, empty AD."""

    __slots__ = ("_aead", "n")

    def __init__(self, key: bytes) -> None:
        self._aead = ChaCha20Poly1305(key)
        self.n = 0

    def reserve(self, count: int) -> None:
        if self.n + count > _NONCE_LIMIT:
            raise NonceExhaustedError("transport nonce would reach 2**64-1; reconnect to re-key")

    def encrypt(self, plaintext: bytes | memoryview) -> bytes:
        ct = self._aead.encrypt(_NONCE.pack(self.n), plaintext, None)
        self.n += 1
        return ct

    def decrypt(self, ciphertext: bytes | memoryview) -> bytes:
        # On failure n is not advanced (spec §4.4.1); the caller closes the transport anyway.
        pt = self._aead.decrypt(_NONCE.pack(self.n), ciphertext, None)
        self.n += 1
        return pt


class Transport:
    """One side's encrypted SV2 channel: a sending and a receiving CipherState.

    Created by the handshake (:mod:`sv2.noise`); the initiator sends with ``k1`` and receives with
    ``k2``, the responder the reverse (spec §4.5.2, step 9). ``max_frame_size`` bounds the
    plaintext payload of every frame sent or received (default: the U24 maximum), except the
    message types listed in ``frame_limits``, which have their own ceiling (a message that
    carries a whole block's transactions); an incoming header announcing more than its type
    allows closes the transport before its payload is buffered.

    Any receive error (bad tag, replay, reorder, oversized frame) closes the transport: every later
    call raises :class:`TransportClosedError`, as the session must be terminated (spec §4.5).
    Errors about the caller's own plaintext (a malformed frame passed to :meth:`encrypt_frame`)
    raise before any nonce is used and leave the transport usable.
    """

    __slots__ = (
        "_announced",
        "_buf",
        "_closed",
        "_need",
        "_parts",
        "_recv",
        "_remaining",
        "_send",
        "frame_limits",
        "handshake_hash",
        "max_frame_size",
    )

    def __init__(
        self,
        send_key: bytes,
        recv_key: bytes,
        *,
        handshake_hash: bytes = b"",
        max_frame_size: int = MAX_PAYLOAD,
        frame_limits: FrameLimits = _NO_FRAME_LIMITS,
    ) -> None:
        if len(send_key) != 32 or len(recv_key) != 32:
            raise ValueError("transport keys must be 32 bytes")
        if not 0 <= max_frame_size <= MAX_PAYLOAD:
            raise ValueError(f"max_frame_size must be in [0, {MAX_PAYLOAD}]")
        check_frame_limits(frame_limits)
        self.frame_limits = frame_limits
        """Per-message ceilings overriding ``max_frame_size`` (:data:`FrameLimits`)."""
        self._send = _CipherState(send_key)
        self._recv = _CipherState(recv_key)
        self.handshake_hash = handshake_hash
        """Final Noise ``h``: equal on both sides; usable for channel binding."""
        self.max_frame_size = max_frame_size
        self._closed = False
        self._buf = bytearray()
        # Receive state: _parts is None while waiting for a header; otherwise the decrypted
        # header plus payload chunks so far, and _remaining plaintext payload bytes still due.
        self._parts: list[bytes] | None = None
        self._remaining = 0
        self._announced = 0  # payload length of a listed frame being received (0: none)
        self._need = ENCRYPTED_HEADER_SIZE

    @property
    def closed(self) -> bool:
        """True once a receive error (or :meth:`close`) has ended the session."""
        return self._closed

    @property
    def send_nonce(self) -> int:
        """Next nonce the sending CipherState will use."""
        return self._send.n

    @property
    def recv_nonce(self) -> int:
        """Next nonce the receiving CipherState expects."""
        return self._recv.n

    @property
    def buffered(self) -> int:
        """Ciphertext bytes received but not yet part of a complete chunk."""
        return len(self._buf)

    @property
    def receiving_listed(self) -> int:
        """Announced payload length of the frame being received if its type is listed in
        :attr:`frame_limits` (0 otherwise, and between frames): it passed that type's own
        ceiling, so a caller may let it be buffered whole."""
        return self._announced

    def frame_limit(self, extension_type: int, msg_type: int) -> int:
        """The payload ceiling for this message type, in both directions."""
        return self.frame_limits.get((extension_type & 0x7FFF, msg_type), self.max_frame_size)

    def close(self) -> None:
        """Refuse any further use (e.g. when the connection is torn down)."""
        self._closed = True
        self._buf.clear()
        self._parts = None
        self._announced = 0

    def _check_open(self) -> None:
        if self._closed:
            raise TransportClosedError("transport closed after an earlier error")

    def encrypt_frame(self, frame: bytes) -> bytes:
        """Encrypt one plaintext SV2 frame (6-byte header + payload) into its wire form.

        The header's ``msg_length`` must equal the payload length: the receiver sizes the
        ciphertext from it, so a mismatch would desynchronise the stream.
        """
        self._check_open()
        if len(frame) < HEADER_SIZE:
            raise ValueError(f"frame shorter than the {HEADER_SIZE}-byte header")
        payload_len = len(frame) - HEADER_SIZE
        declared = int.from_bytes(frame[3:6], "little")
        if declared != payload_len:
            raise ValueError(f"header msg_length {declared} != payload length {payload_len}")
        limit = self.frame_limit(*_frame_type(frame))
        if payload_len > limit:
            raise FrameTooLargeError(
                f"payload of {payload_len} bytes exceeds max_frame_size {limit} for its type"
            )
        chunks = -(-payload_len // MAX_PT_CHUNK)
        self._send.reserve(1 + chunks)
        view = memoryview(frame)
        out = [self._send.encrypt(view[:HEADER_SIZE])]
        for start in range(HEADER_SIZE, len(frame), MAX_PT_CHUNK):
            out.append(self._send.encrypt(view[start : start + MAX_PT_CHUNK]))
        return b"".join(out)

    def feed(self, data: bytes) -> list[bytes]:
        """Accept received ciphertext (any split) and return the plaintext frames it completes.

        Each returned frame is the 6-byte plaintext header followed by its payload. Raises
        :class:`DecryptError` or :class:`FrameTooLargeError` (with ``.frames`` = frames completed
        earlier in this call) and closes the transport.
        """
        self._check_open()
        buf = self._buf
        buf += data
        frames: list[bytes] = []
        while len(buf) >= self._need:
            need = self._need
            try:
                self._recv.reserve(1)
                # Decrypt straight from the buffer (no copy of up to 64 KiB per chunk); the view
                # must be released before the bytearray may shrink.
                with memoryview(buf) as view, view[:need] as chunk:
                    plain = self._recv.decrypt(chunk)
                del buf[:need]
            except InvalidTag:
                what = "header" if self._parts is None else "payload chunk"
                self.close()
                raise DecryptError(
                    f"frame {what} failed authentication at nonce {self._recv.n}", frames
                ) from None
            except NonceExhaustedError:
                self.close()
                raise
            if self._parts is None:
                length = int.from_bytes(plain[3:6], "little")
                ext, msg_type = _frame_type(plain)
                limit = self.frame_limit(ext, msg_type)
                if length > limit:
                    self.close()
                    raise FrameTooLargeError(
                        f"peer announced a {length}-byte payload for message "
                        f"({ext:#06x}, {msg_type:#04x}); max_frame_size for it is {limit}",
                        frames,
                    )
                if length == 0:
                    frames.append(plain)
                    continue
                self._parts = [plain]
                self._remaining = length
                self._announced = length if (ext, msg_type) in self.frame_limits else 0
            else:
                self._parts.append(plain)
                self._remaining -= len(plain)
                if self._remaining == 0:
                    frames.append(b"".join(self._parts))
                    self._parts = None
                    self._announced = 0
                    self._need = ENCRYPTED_HEADER_SIZE
                    continue
            self._need = min(self._remaining, MAX_PT_CHUNK) + MAC_SIZE
        return frames


def check_frame_limits(limits: FrameLimits) -> None:
    """Raise ``ValueError`` unless every key is an (extension_type, msg_type) pair and every
    ceiling fits the U24 ``msg_length``."""
    for key, limit in limits.items():
        ext, msg_type = key
        if not (0 <= ext <= 0x7FFF and 0 <= msg_type <= 0xFF):
            raise ValueError(f"frame_limits key {key!r} is not (extension_type, msg_type)")
        if not 0 <= limit <= MAX_PAYLOAD:
            raise ValueError(f"frame_limits[{key!r}] must be in [0, {MAX_PAYLOAD}]")
