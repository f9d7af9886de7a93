"""Stratum V2 for the payout engine.

This package's codec is sans-I/O in the h11 style: pure functions and classes that turn bytes
into frames and messages and back, with sockets kept outside.

- :mod:`sv2.types` -- the data types of sv2-spec §3.1 with strict decoding;
- :mod:`sv2.framing` -- the 6-byte frame header, :class:`Frame`, incremental :class:`FrameDecoder`;
- :mod:`sv2.tlv` -- TLV fields (little-endian, as SRI encodes them);
- :mod:`sv2.messages` -- message dataclasses and the registry;
- :mod:`sv2.errors` -- typed errors; decoders raise nothing else.
"""

from __future__ import annotations

from sv2.errors import DecodeError, EncodeError, Sv2Error
from sv2.framing import Frame, FrameDecoder, FrameHeader
from sv2.messages import Message, decode_frame, decode_message, message_from_json
from sv2.tlv import Tlv

__all__ = [
    "DecodeError",
    "EncodeError",
    "Frame",
    "FrameDecoder",
    "FrameHeader",
    "Message",
    "Sv2Error",
    "Tlv",
    "decode_frame",
    "decode_message",
    "message_from_json",
]
