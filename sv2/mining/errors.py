"""Error codes of the pool's Mining Protocol endpoint (sv2-spec 05-Mining-Protocol.md).

sv2-spec PR #194 (2026-06) removed the spec's suggested codes and left them to implementations;
where the spec had suggested one (``05-Mining-Protocol.md`` before ``9fead06``: §5.3.6
``unknown-user``, ``max-target-out-of-range``; §5.3.8 ``invalid-channel-id``; §5.3.14
``invalid-channel-id``, ``stale-share``, ``difficulty-too-low``, ``invalid-job-id``) we send
that string verbatim; ``duplicate-share`` is SRI's pool's. The others are ours, each one reason.
docs/mining.md lists them all with when they are sent.
"""

from __future__ import annotations

# OpenMiningChannel.Error (§5.3.6)
UNKNOWN_USER = "unknown-user"
MAX_TARGET_OUT_OF_RANGE = "max-target-out-of-range"
EXTRANONCE_SIZE_TOO_LARGE = "min-extranonce-size-too-large"
EXTRANONCE_SPACE_EXHAUSTED = "extranonce-space-exhausted"
STANDARD_CHANNELS_NOT_ALLOWED = "standard-channels-not-supported-for-work-selection"
TOO_MANY_CHANNELS = "too-many-channels"
INVALID_HASH_RATE = "invalid-nominal-hash-rate"

# UpdateChannel.Error (§5.3.8), SubmitShares.Error (§5.3.14), SetCustomMiningJob.Error (§5.3.20)
INVALID_CHANNEL_ID = "invalid-channel-id"

# SubmitShares.Error (§5.3.14)
STALE_SHARE = "stale-share"
DIFFICULTY_TOO_LOW = "difficulty-too-low"
INVALID_JOB_ID = "invalid-job-id"
DUPLICATE_SHARE = "duplicate-share"
INVALID_VERSION = "invalid-version-bits"
NTIME_OUT_OF_RANGE = "ntime-out-of-range"
INVALID_EXTRANONCE_SIZE = "invalid-extranonce-size"
WRONG_CHANNEL_TYPE = "wrong-channel-type"

# SetCustomMiningJob.Error (§5.3.20), beside sv2.custom_job's invalid-job-param-value-{field}
WORK_SELECTION_NOT_ENABLED = "work-selection-not-enabled"
EXTRANONCE_SIZE_MISMATCH = "extranonce-size-mismatch"

SUBMIT_ERRORS = (
    INVALID_CHANNEL_ID,
    INVALID_JOB_ID,
    STALE_SHARE,
    WRONG_CHANNEL_TYPE,
    INVALID_EXTRANONCE_SIZE,
    INVALID_VERSION,
    NTIME_OUT_OF_RANGE,
    DUPLICATE_SHARE,
    DIFFICULTY_TOO_LOW,
)
"""Every SubmitShares.Error code, in the order the checks run."""
