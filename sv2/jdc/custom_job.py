"""``SetCustomMiningJob`` for a declared job (sv2-spec 05-Mining-Protocol.md §5.3.18): what a JD
client sends on the pool's Mining connection (extended channel, ``REQUIRES_WORK_SELECTION``) so
the pool rewards shares on the job its JDS accepted.

Every field comes from the declared job, so the pool's check (:mod:`sv2.custom_job`) can
compare it with what the JDS validated:

- ``mining_job_token``: ``DeclareMiningJob.Success.new_mining_job_token`` (§6.4.5);
- ``version``, ``prev_hash``, ``nbits``, ``min_ntime``: the template's header fields;
- ``coinbase_prefix``: what starts the declared scriptSig: the template's
  ``NewTemplate.coinbase_prefix`` as sent (the BIP-34 height push for a node's template), at
  most 8 bytes (§5.3.18; the pool appends its extranonce prefix and the channel's extranonce);
- ``coinbase_tx_version`` / ``_input_nSequence`` / ``_locktime``: the declared coinbase's;
- ``coinbase_tx_outputs``: all declared outputs, with their final values, as a
  CompactSize-prefixed vector (PR #138, PR #144) -- byte-identical to the declaration;
- ``merkle_path``: the coinbase's path over the template's txids;
- TLV (0x0003, 0x01) ``distribution_id`` (PR #203 §6) when the job was declared with one.
"""

from __future__ import annotations

from payouts.errors import ValidationError
from sv2.jdc.session import DeclaredJob
from sv2.job_coinbase import serialize_output_vector
from sv2.job_errors import MAX_COINBASE_PREFIX
from sv2.messages.mining import SetCustomMiningJob
from sv2.messages.payouts import DistributionIdTlv


def build_set_custom_mining_job(
    job: DeclaredJob,
    *,
    channel_id: int,
    request_id: int,
    min_ntime: int | None = None,
    distribution_tlv: bool = True,
    coinbase_only: bool = False,
) -> SetCustomMiningJob:
    """The SetCustomMiningJob for ``job`` on extended channel ``channel_id``. ``min_ntime``
    defaults to the template's time. ``distribution_tlv=False`` leaves the PR #203 TLV out
    (for a Mining connection that did not negotiate 0x0003). ``coinbase_only``: the job was
    not declared (sv2-spec §6.1), so ``coinbase_prefix`` is the whole scriptSig before the
    extranonce, which is all the pool rebuilds it from (§5.3.18); more than 8 bytes of it
    raise :class:`~payouts.errors.ValidationError`."""
    t = job.template
    n = job.coinbase.parts.extranonce_size
    tx = job.coinbase.parts.tx(bytes(n))
    prefix = t.script_prefix[:MAX_COINBASE_PREFIX]
    if coinbase_only:
        script_sig = tx.inputs[0].script_sig
        prefix = script_sig[: len(script_sig) - n]
        if len(prefix) > MAX_COINBASE_PREFIX:
            raise ValidationError(
                f"the scriptSig before the extranonce is {len(prefix)} bytes; Coinbase-only "
                f"mode carries at most {MAX_COINBASE_PREFIX} (coinbase_prefix, §5.3.18)",
                code="coinbase-prefix-too-long",
            )
    tlvs: tuple[DistributionIdTlv, ...] = ()
    if distribution_tlv and job.distribution_id is not None:
        tlvs = (DistributionIdTlv(job.distribution_id),)
    return SetCustomMiningJob(
        channel_id=channel_id,
        request_id=request_id,
        mining_job_token=job.token,
        version=t.version & 0xFFFFFFFF,
        prev_hash=t.prev_hash,
        min_ntime=t.time if min_ntime is None else min_ntime,
        nbits=t.bits,
        coinbase_tx_version=tx.version & 0xFFFFFFFF,
        # The scriptSig's start as declared: the TP's coinbase_prefix (§7.2), at most 8 bytes
        # here (§5.3.18); any 8 leading bytes still hold the whole height push (<= 4 bytes).
        coinbase_prefix=prefix,
        coinbase_tx_input_n_sequence=tx.inputs[0].sequence,
        coinbase_tx_outputs=serialize_output_vector(tx.outputs),
        coinbase_tx_locktime=tx.locktime,
        merkle_path=tuple(t.merkle_path()),
        tlvs=tlvs,
    )


__all__ = ["build_set_custom_mining_job"]
