"""Plaintext SV2 frames (sv2-spec 03-Protocol-Overview.md §3.2; SRI ``framing-sv2/src/header.rs``).

Header, 6 bytes::

    offset 0  U16 LE  extension_type  (bit 15, mask 0x8000, is channel_msg)
    offset 2  U8      msg_type
    offset 3  U24 LE  msg_length      (payload length, header excluded)

§3.2.1 calls ``channel_msg`` both "the least significant bit (bit 15)" and "the most significant
bit"; SRI uses the MSB (``CHANNEL_MSG_MASK = 0x8000``) and so do we. :class:`Frame` keeps the
extension type without the bit and the bit as ``channel_msg``, so lookups ignore it (``0x8ABC``
is the same extension as ``0x0ABC``) while re-encoding stays byte-identical.

Sans-I/O: :class:`FrameDecoder` takes bytes as they arrive and returns whole frames; it never
touches a socket. It checks ``msg_length`` against ``max_frame_size`` as soon as a header is
complete, so an oversized frame is rejected before any of its payload is buffered.
"""

from __future__ import annotations

from dataclasses import dataclass

from sv2.errors import (
    DecoderStateError,
    EncodeError,
    FrameTooLargeError,
    TrailingBytesError,
    TruncatedError,
)

HEADER_SIZE = 6  # SRI SV2_FRAME_HEADER_SIZE
CHANNEL_MSG_BIT = 0x8000  # SRI CHANNEL_MSG_MASK
MAX_PAYLOAD = 0xFFFFFF  # U24 msg_length


@dataclass(frozen=True, slots=True)
class FrameHeader:
    """The 6-byte header. ``extension_type`` excludes the channel bit."""

    extension_type: int
    channel_msg: bool
    msg_type: int
    msg_length: int

    @classmethod
    def decode(cls, data: bytes) -> FrameHeader:
        """Parse the first 6 bytes of ``data`` (more is allowed and ignored)."""
        if len(data) < HEADER_SIZE:
            raise TruncatedError(f"frame header needs 6 bytes, got {len(data)}", offset=0)
        raw_ext = data[0] | (data[1] << 8)
        return cls(
            extension_type=raw_ext & ~CHANNEL_MSG_BIT & 0xFFFF,
            channel_msg=bool(raw_ext & CHANNEL_MSG_BIT),
            msg_type=data[2],
            msg_length=data[3] | (data[4] << 8) | (data[5] << 16),
        )

    def encode(self) -> bytes:
        if not 0 <= self.extension_type < CHANNEL_MSG_BIT:
            raise EncodeError(f"extension_type must be in 0..0x7fff, got {self.extension_type}")
        if not 0 <= self.msg_type <= 0xFF:
            raise EncodeError(f"msg_type must be in 0..255, got {self.msg_type}")
        if not 0 <= self.msg_length <= MAX_PAYLOAD:
            raise EncodeError(f"msg_length must fit in U24, got {self.msg_length}")
        raw_ext = self.extension_type | (CHANNEL_MSG_BIT if self.channel_msg else 0)
        return (
            raw_ext.to_bytes(2, "little")
            + bytes((self.msg_type,))
            + self.msg_length.to_bytes(3, "little")
        )


@dataclass(frozen=True, slots=True)
class Frame:
    """One plaintext frame: header fields plus the payload (message body and TLVs)."""

    extension_type: int
    msg_type: int
    payload: bytes
    channel_msg: bool = False

    @property
    def header(self) -> FrameHeader:
        return FrameHeader(self.extension_type, self.channel_msg, self.msg_type, len(self.payload))

    def encode(self) -> bytes:
        return self.header.encode() + self.payload

    @classmethod
    def decode(cls, data: bytes, *, max_frame_size: int = MAX_PAYLOAD) -> Frame:
        """Decode exactly one frame; bytes after it are :class:`TrailingBytesError`."""
        data = bytes(data)
        header = FrameHeader.decode(data)
        _check_size(header, max_frame_size)
        end = HEADER_SIZE + header.msg_length
        if len(data) < end:
            raise TruncatedError(
                f"frame payload needs {header.msg_length} bytes, got {len(data) - HEADER_SIZE}",
                offset=HEADER_SIZE,
            )
        if len(data) > end:
            raise TrailingBytesError(f"{len(data) - end} bytes after the frame", offset=end)
        return cls(header.extension_type, header.msg_type, data[HEADER_SIZE:], header.channel_msg)


def _check_size(header: FrameHeader, max_frame_size: int) -> None:
    if header.msg_length > max_frame_size:
        raise FrameTooLargeError(
            f"frame of {header.msg_length} bytes (extension {header.extension_type:#06x}, "
            f"msg_type {header.msg_type:#04x}) exceeds the maximum {max_frame_size}",
            offset=3,
        )


class FrameDecoder:
    """Incremental frame decoder (h11 style): ``feed`` bytes, get complete frames back.

    ``max_frame_size`` bounds ``msg_length`` (payload bytes); the default is the U24 maximum.
    After any error the decoder is failed for good -- a byte stream with a bad header has no
    recoverable frame boundary -- and further calls raise :class:`DecoderStateError`.
    """

    def __init__(self, max_frame_size: int = MAX_PAYLOAD) -> None:
        if not 0 <= max_frame_size <= MAX_PAYLOAD:
            raise ValueError(f"max_frame_size must be in 0..{MAX_PAYLOAD}")
        self.max_frame_size = max_frame_size
        self._buf = bytearray()
        self._header: FrameHeader | None = None
        self._failed = False

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as part of a frame."""
        return len(self._buf) + (HEADER_SIZE if self._header is not None else 0)

    def feed(self, data: bytes) -> list[Frame]:
        """Add received bytes; return every frame they complete, in order."""
        if self._failed:
            raise DecoderStateError("frame decoder already failed; discard the connection")
        self._buf += data
        buf = self._buf
        frames: list[Frame] = []
        pos = 0  # consumed so far; compacted once at the end so a burst of frames stays O(n)
        try:
            while True:
                header = self._header
                if header is None:
                    if len(buf) - pos < HEADER_SIZE:
                        break
                    header = FrameHeader.decode(bytes(buf[pos : pos + HEADER_SIZE]))
                    # Check before waiting for the payload: a peer announcing 16 MB must not
                    # make us accumulate 16 MB.
                    _check_size(header, self.max_frame_size)
                    pos += HEADER_SIZE
                    self._header = header
                if len(buf) - pos < header.msg_length:
                    break
                payload = bytes(buf[pos : pos + header.msg_length])
                pos += header.msg_length
                self._header = None
                frames.append(
                    Frame(header.extension_type, header.msg_type, payload, header.channel_msg)
                )
        except Exception:
            self._failed = True
            buf.clear()
            raise
        del buf[:pos]
        return frames

    def close(self) -> None:
        """Signal end of stream: a partially received frame is a :class:`TruncatedError`."""
        if self._failed:
            return
        if self._buf or self._header is not None:
            self._failed = True
            raise TruncatedError(f"stream ended inside a frame ({self.buffered} bytes buffered)")
