"""Stratum V2 for the payout engine, layered like SRI (ARCHITECTURE.md "Layout").

The codec is sans-I/O in the h11 style: pure functions and classes that turn bytes into frames
and messages and back, with sockets kept outside.

- :mod:`sv2.types` -- the data types of sv2-spec §3.1 with strict decoding;
- :mod:`sv2.framing` -- the 6-byte frame header, :class:`Frame`, incremental :class:`FrameDecoder`;
- :mod:`sv2.tlv` -- TLV fields (little-endian, as SRI encodes them);
- :mod:`sv2.messages` -- message dataclasses and the registry;
- :mod:`sv2.errors` -- typed errors; decoders raise nothing else;
- :mod:`sv2.noise`, :mod:`sv2.noise_transport`, :mod:`sv2.connection` -- Noise NX and one
  sans-I/O connection (bytes in, messages and events out).

Above the codec, one package per role, each a sans-I/O session per connection plus the asyncio
driver of its sessions: :mod:`sv2.jds` (JD server), :mod:`sv2.jdc` (JD client), :mod:`sv2.tdp`
(Template Distribution client and provider). No role imports another (tests/test_layers.py);
what several share sits here, below them: :mod:`sv2.session` (version, SetupConnection,
session outputs), :mod:`sv2.listener` / :mod:`sv2.client` (the asyncio server and client
bases), :mod:`sv2.template`, :mod:`sv2.solution`, :mod:`sv2.declared_job`,
:mod:`sv2.custom_job`, :mod:`sv2.block_rebuild`, :mod:`sv2.distribution_book`,
:mod:`sv2.version_bits`, :mod:`sv2.job_errors`, :mod:`sv2.domain_messages`.
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
