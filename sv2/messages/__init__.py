"""SV2 messages: dataclasses with ``encode``/``decode`` and a registry keyed by
(extension_type without the channel bit, msg_type).

Importing this package registers every message module below. Entry points:

- :func:`decode_message` -- a :class:`~sv2.framing.Frame` to its message;
- :func:`decode_frame` -- one plaintext frame's bytes to ``(frame, message)``;
- ``msg.encode()`` (payload), ``msg.encode_frame()`` (header + payload);
- :func:`message_from_json` / ``msg.to_json()`` -- the CLI's JSON form.
"""

from __future__ import annotations

from typing import Any

from sv2.errors import EncodeError
from sv2.framing import MAX_PAYLOAD, Frame
from sv2.messages import (
    common,
    extensions,
    job_declaration,
    mining,
    payouts,
    settlement,
    template_distribution,
)
from sv2.messages.base import BY_NAME, REGISTRY, Message, decode_message, message_class, register
from sv2.messages.common import (
    ChannelEndpointChanged,
    Reconnect,
    SetupConnection,
    SetupConnectionError,
    SetupConnectionSuccess,
)
from sv2.messages.extensions import (
    RequestExtensions,
    RequestExtensionsError,
    RequestExtensionsSuccess,
    UserIdentityTlv,
)
from sv2.messages.job_declaration import (
    AllocateMiningJobToken,
    AllocateMiningJobTokenSuccess,
    DeclareMiningJob,
    DeclareMiningJobError,
    DeclareMiningJobSuccess,
    ProvideMissingTransactions,
    ProvideMissingTransactionsSuccess,
    PushSolution,
)
from sv2.messages.mining import (
    CloseChannel,
    MiningSetNewPrevHash,
    NewExtendedMiningJob,
    NewMiningJob,
    OpenExtendedMiningChannel,
    OpenExtendedMiningChannelSuccess,
    OpenMiningChannelError,
    OpenStandardMiningChannel,
    OpenStandardMiningChannelSuccess,
    SetCustomMiningJob,
    SetCustomMiningJobError,
    SetCustomMiningJobSuccess,
    SetExtranoncePrefix,
    SetGroupChannel,
    SetTarget,
    SubmitSharesError,
    SubmitSharesExtended,
    SubmitSharesStandard,
    SubmitSharesSuccess,
    UpdateChannel,
    UpdateChannelError,
)
from sv2.messages.payouts import (
    EXT_NON_CUSTODIAL_PAYOUTS,
    EXT_PER_JOB_PAYOUTS,
    DistributionIdTlv,
    RequestPayoutOutputs,
    RequestPayoutOutputsError,
    RequestPayoutOutputsSuccess,
    SetPayoutDistribution,
    distribution_id_of,
)
from sv2.messages.settlement import EXT_SETTLEMENT_MODES, SetSettlementMode
from sv2.messages.template_distribution import (
    CoinbaseOutputConstraints,
    NewTemplate,
    RequestTransactionData,
    RequestTransactionDataError,
    RequestTransactionDataSuccess,
    SetNewPrevHash,
    SubmitSolution,
)


def decode_frame(
    data: bytes, *, allow_tlvs: bool = True, max_frame_size: int = MAX_PAYLOAD
) -> tuple[Frame, Message]:
    """Decode exactly one plaintext frame (6-byte header + payload) and its message."""
    frame = Frame.decode(data, max_frame_size=max_frame_size)
    return frame, decode_message(frame, allow_tlvs=allow_tlvs)


def _int_field(doc: dict[str, Any], key: str, hi: int) -> int | None:
    v = doc.get(key)
    if v is None:
        return None
    if isinstance(v, str) and v.lower().startswith("0x"):
        try:
            v = int(v, 16)
        except ValueError:
            raise EncodeError(f"'{key}' is not a hex integer: {v!r}") from None
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= hi:
        raise EncodeError(f"'{key}' must be an integer in 0..{hi:#x}, got {v!r}")
    return v


def message_from_json(doc: Any) -> tuple[Message, bool]:
    """Inverse of ``Message.to_json``: returns the message and the frame's channel_msg bit.

    ``message`` (the spec name) or ``extension_type`` + ``msg_type`` select the message; if
    both are given they must agree. ``channel_msg`` defaults to the spec's bit.
    """
    if not isinstance(doc, dict):
        raise EncodeError("the message must be a JSON object")
    name = doc.get("message")
    ext = _int_field(doc, "extension_type", 0x7FFF)
    mtype = _int_field(doc, "msg_type", 0xFF)
    if name is not None:
        if not isinstance(name, str) or name not in BY_NAME:
            raise EncodeError(f"unknown message {name!r}; known: {', '.join(sorted(BY_NAME))}")
        cls = BY_NAME[name]
        if (ext is not None and ext != cls.EXTENSION_TYPE) or (
            mtype is not None and mtype != cls.MSG_TYPE
        ):
            raise EncodeError(
                f"{name} is extension_type {cls.EXTENSION_TYPE:#06x} msg_type "
                f"{cls.MSG_TYPE:#04x}, not the ones given"
            )
    elif ext is not None and mtype is not None:
        cls = message_class(ext, mtype)
    else:
        raise EncodeError("give 'message' (a name) or 'extension_type' and 'msg_type'")
    channel_msg = doc.get("channel_msg", cls.CHANNEL_MSG)
    if not isinstance(channel_msg, bool):
        raise EncodeError("'channel_msg' must be true or false")
    unknown = set(doc) - {"message", "extension_type", "msg_type", "channel_msg", "fields", "tlvs"}
    if unknown:
        raise EncodeError(f"unknown keys: {', '.join(sorted(unknown))}")
    return cls.from_json_fields(doc.get("fields", {}), doc.get("tlvs", [])), channel_msg


__all__ = [
    "BY_NAME",
    "EXT_NON_CUSTODIAL_PAYOUTS",
    "EXT_PER_JOB_PAYOUTS",
    "EXT_SETTLEMENT_MODES",
    "REGISTRY",
    "AllocateMiningJobToken",
    "AllocateMiningJobTokenSuccess",
    "ChannelEndpointChanged",
    "CloseChannel",
    "CoinbaseOutputConstraints",
    "DeclareMiningJob",
    "DeclareMiningJobError",
    "DeclareMiningJobSuccess",
    "DistributionIdTlv",
    "Message",
    "MiningSetNewPrevHash",
    "NewExtendedMiningJob",
    "NewMiningJob",
    "NewTemplate",
    "OpenExtendedMiningChannel",
    "OpenExtendedMiningChannelSuccess",
    "OpenMiningChannelError",
    "OpenStandardMiningChannel",
    "OpenStandardMiningChannelSuccess",
    "ProvideMissingTransactions",
    "ProvideMissingTransactionsSuccess",
    "PushSolution",
    "Reconnect",
    "RequestExtensions",
    "RequestExtensionsError",
    "RequestExtensionsSuccess",
    "RequestPayoutOutputs",
    "RequestPayoutOutputsError",
    "RequestPayoutOutputsSuccess",
    "RequestTransactionData",
    "RequestTransactionDataError",
    "RequestTransactionDataSuccess",
    "SetCustomMiningJob",
    "SetCustomMiningJobError",
    "SetCustomMiningJobSuccess",
    "SetExtranoncePrefix",
    "SetGroupChannel",
    "SetNewPrevHash",
    "SetPayoutDistribution",
    "SetSettlementMode",
    "SetTarget",
    "SetupConnection",
    "SetupConnectionError",
    "SetupConnectionSuccess",
    "SubmitSharesError",
    "SubmitSharesExtended",
    "SubmitSharesStandard",
    "SubmitSharesSuccess",
    "SubmitSolution",
    "UpdateChannel",
    "UpdateChannelError",
    "UserIdentityTlv",
    "common",
    "decode_frame",
    "decode_message",
    "distribution_id_of",
    "extensions",
    "job_declaration",
    "message_class",
    "message_from_json",
    "mining",
    "payouts",
    "register",
    "settlement",
    "template_distribution",
]
