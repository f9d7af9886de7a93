"""Typed errors of the SV2 codec.

Every rejection carries a stable kebab-case ``code`` (see :mod:`payouts.errors`) and, for decode
errors, a ``reason`` and the byte ``offset`` where decoding stopped. The decoders raise nothing
else: no ``IndexError``, ``struct.error`` or ``UnicodeDecodeError`` escapes (fuzzed by
``benchmarks/fuzz_codec.py`` and ``tests/sv2/test_fuzz_codec.py``).

They subclass :class:`payouts.errors.ValidationError` so that bad frames reach the CLI and the
API as ordinary invalid input (exit code 2 / HTTP 4xx) and so that "bad input changes nothing"
(architecture invariant 5) is handled by one mechanism project-wide.
"""

from __future__ import annotations

from payouts.errors import ValidationError


class Sv2Error(ValidationError):
    """Base class of all SV2 codec errors."""

    code = "sv2-error"


class EncodeError(Sv2Error):
    """A value cannot be encoded as the requested SV2 data type (range, length, type)."""

    code = "sv2-encode-error"


class DecodeError(Sv2Error):
    """Bytes that are not a valid encoding. ``reason`` says why, ``offset`` where (if known)."""

    code = "sv2-decode-error"

    def __init__(self, reason: str, *, offset: int | None = None) -> None:
        where = f" at offset {offset}" if offset is not None else ""
        super().__init__(f"{reason}{where}")
        self.reason = reason
        self.offset = offset


class TruncatedError(DecodeError):
    """The input ends before the value (or frame) does."""

    code = "sv2-truncated"


class LengthError(DecodeError):
    """A length or count prefix exceeds what the data type allows (e.g. B0_32 with length 33)."""

    code = "sv2-length-exceeded"


class FrameTooLargeError(LengthError):
    """A frame header announces a payload above the configured maximum frame size."""

    code = "sv2-frame-too-large"


class InvalidUtf8Error(DecodeError):
    """A STR0_255 whose bytes are not valid UTF-8."""

    code = "sv2-invalid-utf8"


class InvalidOptionError(DecodeError):
    """An OPTION (SEQ0_1) with an element count above 1 (sv2-spec §3.1; SRI ``Sv2Option``)."""

    code = "sv2-invalid-option"


class TrailingBytesError(DecodeError):
    """Bytes left after a message body (or after a frame) that are not a valid TLV list."""

    code = "sv2-trailing-bytes"


class InvalidTlvError(DecodeError):
    """A TLV whose length runs past the payload, or a known TLV whose value is malformed."""

    code = "sv2-invalid-tlv"


class UnknownMessageError(DecodeError):
    """No message is registered for this (extension_type, msg_type)."""

    code = "sv2-unknown-message"


class DecoderStateError(DecodeError):
    """A :class:`~sv2.framing.FrameDecoder` used after it raised (its stream is unrecoverable)."""

    code = "sv2-decoder-failed"
