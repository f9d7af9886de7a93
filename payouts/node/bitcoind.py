"""``BitcoindNode``: the Node interface over a real bitcoind's JSON-RPC.

Hashes cross the RPC boundary as display hex (byte-reversed); everything this class returns
is in internal byte order, as the interface requires. Amounts are converted from BTC to
satoshis exactly (Decimal), never through float.

Works with Bitcoin Core >= 28 and Bitcoin Inquisition (which lists ``checktemplateverify`` in
``getdeploymentinfo``). Mining helpers (``generate_to_script``, ``invalidate_block``) are
regtest tools; on other chains bitcoind refuses them and the refusal surfaces as NodeError.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

from payouts.node.interface import (
    BlockTemplate,
    ChainTip,
    MempoolAcceptResult,
    NodeError,
    TemplateTx,
    Utxo,
)
from payouts.node.rpc import DEFAULT_TIMEOUT_S, RpcClient, RpcError, btc_to_sats
from payouts.tx.block import difficulty_from_bits
from payouts.tx.hashes import display_hex, from_display_hex
from payouts.tx.transaction import Tx

# Core's RPC error codes this module interprets (rpc/protocol.h).
RPC_INVALID_ADDRESS_OR_KEY = -5  # "Block not found", "No such mempool or blockchain transaction"
RPC_INVALID_PARAMETER = -8  # "Block height out of range"
RPC_DESERIALIZATION_ERROR = -22  # "Block decode failed", "TX decode failed"
GENERATE_TIMEOUT_S = 300.0  # generating many blocks on a loaded 2-core box is slow


class BitcoindNode:
    """A bitcoind reached over JSON-RPC; create with :meth:`from_url` or an ``RpcClient``."""

    def __init__(self, rpc: RpcClient, network: str = "regtest") -> None:
        self.rpc = rpc
        self.network = network

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        user: str | None = None,
        password: str | None = None,
        cookie_file: str | Path | None = None,
        network: str = "regtest",
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> BitcoindNode:
        rpc = RpcClient(url, user=user, password=password, cookie_file=cookie_file, timeout=timeout)
        return cls(rpc, network)

    async def aclose(self) -> None:
        await self.rpc.aclose()

    async def call(self, method: str, *params: Any) -> Any:
        """Any other RPC, for the odd need (returns the decoded ``result``)."""
        return await self.rpc.call(method, *params)

    # -- chain --------------------------------------------------------------------------------

    async def get_blockchain_info(self) -> dict[str, Any]:
        info: dict[str, Any] = await self.rpc.call("getblockchaininfo")
        return info

    async def get_best_block_hash(self) -> bytes:
        return from_display_hex(await self.rpc.call("getbestblockhash"))

    async def get_block_header(self, block_hash: bytes) -> dict[str, Any] | None:
        """``getblockheader`` (verbose) or None if unknown."""
        try:
            header: dict[str, Any] = await self.rpc.call(
                "getblockheader", display_hex(block_hash), True)
        except RpcError as e:
            if e.code == RPC_INVALID_ADDRESS_OR_KEY:
                return None
            raise
        return header

    async def tip(self) -> ChainTip:
        best = await self.get_best_block_hash()
        header = await self.get_block_header(best)
        if header is None:  # pragma: no cover - a reorg between the two calls
            raise NodeError("the best block vanished while reading it; retry")
        bits = int(header["bits"], 16)
        # Core >= 29 reports the next block's nBits in getmininginfo; before, the tip's
        # (identical except at a retarget boundary, and always on regtest).
        mining = await self.rpc.call("getmininginfo")
        nxt = mining.get("next") if isinstance(mining, dict) else None
        if isinstance(nxt, dict) and "bits" in nxt:
            bits = int(nxt["bits"], 16)
        return ChainTip(
            height=int(header["height"]),
            block_hash=best,
            bits=bits,
            time=int(header["time"]),
            median_time_past=int(header["mediantime"]),
        )

    async def network_difficulty(self) -> Fraction:
        """From the next block's nBits, exactly (not ``getdifficulty``'s float)."""
        return difficulty_from_bits((await self.tip()).bits)

    async def get_difficulty(self) -> Decimal:
        """``getdifficulty`` as bitcoind prints it (a Decimal, for display only)."""
        return Decimal(str(await self.rpc.call("getdifficulty")))

    async def deployment_active(self, name: str) -> bool:
        """``getdeploymentinfo``: active for the next block. Core lists no
        ``checktemplateverify`` (so False); Bitcoin Inquisition does (active on regtest)."""
        info = await self.rpc.call("getdeploymentinfo")
        dep = info.get("deployments", {}).get(name)
        if dep is not None:
            return bool(dep.get("active"))
        # Core >= 31 no longer lists always-on deployments such as taproot; it reports the
        # script flags in force instead.
        return name.upper() in {str(f).upper() for f in info.get("script_flags", ())}

    async def block_hash(self, height: int) -> bytes | None:
        try:
            return from_display_hex(await self.rpc.call("getblockhash", height))
        except RpcError as e:
            if e.code == RPC_INVALID_PARAMETER:
                return None
            raise

    async def block_height(self, block_hash: bytes) -> int | None:
        header = await self.get_block_header(block_hash)
        # confirmations == -1: known but not in the active chain (stale or invalidated).
        if header is None or int(header["confirmations"]) < 0:
            return None
        return int(header["height"])

    async def get_block(self, block_hash: bytes) -> bytes | None:
        try:
            return bytes.fromhex(await self.rpc.call("getblock", display_hex(block_hash), 0))
        except RpcError as e:
            if e.code == RPC_INVALID_ADDRESS_OR_KEY:
                return None
            raise

    async def get_utxo(self, txid: bytes, n: int) -> Utxo | None:
        res = await self.rpc.call("gettxout", display_hex(txid), n, False)
        if res is None:
            return None
        conf = int(res["confirmations"])
        best = await self.get_block_header(from_display_hex(res["bestblock"]))
        tip_height = int(best["height"]) if best else conf - 1
        return Utxo(
            value=btc_to_sats(res["value"]),
            script=bytes.fromhex(res["scriptPubKey"]["hex"]),
            height=tip_height - conf + 1,
            is_coinbase=bool(res["coinbase"]),
            confirmations=conf,
        )

    async def scan_tx_out_set(self, descriptors: Sequence[str]) -> dict[str, Any]:
        """``scantxoutset start``: UTXOs of e.g. ``raw(<hex script>)`` or ``addr(...)``
        without a wallet (amounts stay in the RPC's BTC Decimals)."""
        res: dict[str, Any] = await self.rpc.call(
            "scantxoutset", "start", list(descriptors), timeout=GENERATE_TIMEOUT_S
        )
        return res

    # -- templates and blocks -----------------------------------------------------------------

    async def block_template(self) -> BlockTemplate:
        t = await self.rpc.call("getblocktemplate", {"rules": ["segwit"]})
        txs = tuple(
            TemplateTx(Tx.parse(bytes.fromhex(x["data"])), int(x["fee"]), int(x["sigops"]))
            for x in t["transactions"]
        )
        return BlockTemplate(
            version=int(t["version"]),
            prev_hash=from_display_hex(t["previousblockhash"]),
            height=int(t["height"]),
            bits=int(t["bits"], 16),
            curtime=int(t["curtime"]),
            coinbase_value=int(t["coinbasevalue"]),
            transactions=txs,
        )

    async def submit_block(self, raw_block: bytes) -> str | None:
        """None when accepted; else bitcoind's BIP-22 string ("duplicate", "inconclusive",
        "bad-cb-amount", ...) or "Block decode failed"."""
        try:
            res = await self.rpc.call("submitblock", raw_block.hex())
        except RpcError as e:
            if e.code == RPC_DESERIALIZATION_ERROR:
                return e.reason
            raise
        return None if res is None else str(res)

    async def generate_to_script(self, n: int, script: bytes) -> list[bytes]:
        """``generatetodescriptor n raw(<script>)``: works for any script, no wallet."""
        hashes = await self.rpc.call(
            "generatetodescriptor", n, f"raw({script.hex()})", timeout=GENERATE_TIMEOUT_S
        )
        return [from_display_hex(h) for h in hashes]

    async def generate_to_address(self, n: int, address: str) -> list[bytes]:
        hashes = await self.rpc.call("generatetoaddress", n, address, timeout=GENERATE_TIMEOUT_S)
        return [from_display_hex(h) for h in hashes]

    async def generate_block(self, output: str, raw_txs: Sequence[bytes]) -> bytes:
        """``generateblock``: one block with exactly these txs (and no others)."""
        res = await self.rpc.call("generateblock", output, [r.hex() for r in raw_txs])
        return from_display_hex(res["hash"])

    async def invalidate_block(self, block_hash: bytes) -> None:
        await self.rpc.call("invalidateblock", display_hex(block_hash))

    async def reconsider_block(self, block_hash: bytes) -> None:
        await self.rpc.call("reconsiderblock", display_hex(block_hash))

    # -- mempool ------------------------------------------------------------------------------

    async def send_raw_transaction(self, raw_tx: bytes) -> bytes:
        """``sendrawtransaction``; NodeError.reason is bitcoind's reject reason."""
        return from_display_hex(await self.rpc.call("sendrawtransaction", raw_tx.hex()))

    async def test_mempool_accept(self, raw_txs: Sequence[bytes]) -> list[MempoolAcceptResult]:
        res = await self.rpc.call("testmempoolaccept", [r.hex() for r in raw_txs])
        out = []
        for r in res:
            allowed = bool(r.get("allowed"))
            fees = r.get("fees") or {}
            out.append(
                MempoolAcceptResult(
                    txid=from_display_hex(r["txid"]),
                    wtxid=from_display_hex(r["wtxid"]),
                    allowed=allowed,
                    reason=None if allowed else str(r.get("reject-reason", r.get("package-error"))),
                    fee=btc_to_sats(fees["base"]) if "base" in fees else None,
                    vsize=int(r["vsize"]) if "vsize" in r else None,
                )
            )
        return out

    async def submit_package(self, raw_txs: Sequence[bytes]) -> list[bytes]:
        res = await self.rpc.call("submitpackage", [r.hex() for r in raw_txs])
        results: dict[str, Any] = res.get("tx-results", {})
        errors = [f"{v.get('txid', w)}: {v['error']}" for w, v in results.items() if v.get("error")]
        if res.get("package_msg") != "success" or errors:
            raise NodeError(f"package rejected: {res.get('package_msg')}; {'; '.join(errors)}")
        wtxid_to_txid = {w: v["txid"] for w, v in results.items()}
        txs = [Tx.parse(r) for r in raw_txs]
        return [from_display_hex(wtxid_to_txid.get(tx.wtxid_hex, tx.txid_hex)) for tx in txs]

    async def mempool_txs(self, wtxids: Sequence[bytes]) -> list[Tx | None]:
        """By wtxid via ``getrawmempool true``'s ``wtxid`` field, then ``getrawtransaction``
        (a tx that leaves the mempool in between is reported as None)."""
        pool: dict[str, Any] = await self.rpc.call("getrawmempool", True)
        by_wtxid = {from_display_hex(e["wtxid"]): txid for txid, e in pool.items()}
        out: list[Tx | None] = []
        for w in wtxids:
            txid = by_wtxid.get(w)
            if txid is None:
                out.append(None)
                continue
            try:
                raw = await self.rpc.call("getrawtransaction", txid, 0)
            except RpcError as e:
                if e.code == RPC_INVALID_ADDRESS_OR_KEY:
                    out.append(None)
                    continue
                raise
            out.append(Tx.parse(bytes.fromhex(raw)))
        return out

    async def get_mempool_entry(self, txid: bytes) -> dict[str, Any] | None:
        try:
            entry: dict[str, Any] = await self.rpc.call("getmempoolentry", display_hex(txid))
        except RpcError as e:
            if e.code == RPC_INVALID_ADDRESS_OR_KEY:
                return None
            raise
        return entry


__all__ = ["BitcoindNode"]
