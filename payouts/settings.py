"""Settings: a TOML file plus ``PAYOUTS_*`` environment variables, validated at start.

Precedence (highest first): explicit overrides, environment (``PAYOUTS_DATABASE_URL``,
``PAYOUTS_ACCOUNTING__SCHEME`` for nested keys), the TOML file (``--config``, else
``$PAYOUTS_CONFIG``, else ``./payouts.toml`` when present), defaults. Invalid values stop the
program with one line per problem, naming the key.
"""

from __future__ import annotations

import os
import socket
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from payouts.errors import ConfigError
from payouts.states import ModeName, Scheme

if TYPE_CHECKING:  # settings load before (and without) the settlement code
    from payouts.settlement.ctv import CtvParams

Network = Literal["mainnet", "testnet", "testnet4", "signet", "regtest"]
_config_file: ContextVar[Path | None] = ContextVar("payouts_config_file", default=None)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AccountingSettings(_Section):
    """``[accounting]``: how shares become weights (docs/accounting.md)."""

    scheme: Scheme = Field("tides", description="tides: the last k × network difficulty of "
                           "work; pplns: the last N shares; prop: every share of the round")
    tides_k: int = Field(8, ge=1, le=1000, description="TIDES window: k × network difficulty")
    pplns_n: int = Field(1_000_000, ge=1, description="PPLNS window: last N shares")
    value_weighting: bool = Field(True, description="weight shares by their template revenue")
    pin_difficulty: int | None = Field(
        None, ge=1,
        description="test networks only: the network difficulty the TIDES window uses instead "
        "of the node's (regtest's is about 4.66e-10, below any share, so k·D is one share); "
        "refused on mainnet",
    )
    snapshot_interval_sec: float = Field(
        60.0, gt=0, le=86_400,
        description="how often payouts serve saves the accounting snapshot a restart resumes from",
    )


class PoolSettings(_Section):
    """``[pool]``: the pool's own output and fee."""

    payout_script: str | None = Field(None, description="hex scriptPubKey of the pool payout")
    payout_address: str | None = Field(None, description="address of the pool payout")
    fee_bps: int = Field(200, ge=0, le=10_000, description="pool fee in basis points")

    @field_validator("payout_script")
    @classmethod
    def _hex(cls, v: str | None) -> str | None:
        if v is not None:
            bytes.fromhex(v)
        return v


class DistributionSettings(_Section):
    """``[distribution]``: the settlement mode and the coinbase budgets (docs/distribution.md)."""

    mode: ModeName = Field("coinbase", description="coinbase: one output per miner; ctv: one "
                           "output committing to a fan-out (needs BIP-119 active); musig2: one "
                           "output the committee of [settlement.musig2] spends")
    max_outputs_bytes: int = Field(
        6_500, ge=43, le=1_000_000, description="byte budget for payout outputs in the coinbase"
    )
    max_sigops: int = Field(400, ge=0, le=80_000, description="sigop-cost budget for outputs")
    ctv_fanout_arity: int = Field(16, ge=2, le=1000, description="outputs per tx of the CTV "
                                  "fan-out tree when it does not fit one tx")
    ctv_fee_rate: int = Field(
        0, ge=0, le=100_000,
        description="sat/vB every CTV fan-out tx pays from the coinbase value it spends; 0 = "
        "the txs pay nothing and are bumped through their P2A anchors (CPFP), which needs a "
        "node relaying ephemeral dust (Bitcoin Core >= 29) and someone paying the child",
    )

    def ctv_params(self) -> CtvParams:
        """The fan-out parameters the JD server announces (0x4003) and the settlement runner
        rebuilds each block's tree with: one constructor, so the two can never disagree."""
        from payouts.settlement.ctv import CtvParams

        return CtvParams(arity=self.ctv_fanout_arity, fee_rate=self.ctv_fee_rate)


class NodeSettings(_Section):
    """``[node]``: the Bitcoin node the engine follows and submits blocks to (docs/regtest.md).

    ``bitcoind`` authenticates with ``rpc_user``/``rpc_password`` when both are set, else with
    the cookie file bitcoind writes at start (``cookie_file``, default
    ``~/.bitcoin/<chain>/.cookie``): no password in the settings file."""

    backend: Literal["kernel", "bitcoind"] = Field(
        "kernel", description="kernel: Bitcoin Core's consensus code in-process, an in-memory "
        "regtest chain (regtest only); bitcoind: a node over JSON-RPC")
    rpc_url: str | None = Field(
        None, description="bitcoind's JSON-RPC URL; default http://127.0.0.1:<the network's "
        "RPC port> (8332 mainnet, 18332 testnet, 48332 testnet4, 38332 signet, 18443 regtest)")
    rpc_user: str | None = Field(None, description="RPC user (-rpcuser or -rpcauth); with "
                                 "rpc_password, instead of the cookie")
    rpc_password: str | None = Field(None, description="RPC password (with rpc_user)")
    cookie_file: Path | None = Field(
        None, description="bitcoind's .cookie file; default ~/.bitcoin/<chain>/.cookie (chain: "
        "'' mainnet, testnet3, testnet4, signet, regtest); used when rpc_user and rpc_password "
        "are unset; relative to the settings file's folder")

    @model_validator(mode="after")
    def _one_way_to_authenticate(self) -> NodeSettings:
        if (self.rpc_user is None) != (self.rpc_password is None):
            raise ValueError("node.rpc_user and node.rpc_password go together (or leave both "
                             "unset to use the cookie file)")
        if self.cookie_file is not None and self.rpc_user is not None:
            raise ValueError("node.cookie_file and node.rpc_user/rpc_password are two ways to "
                             "authenticate: set one")
        return self


class JdsSettings(_Section):
    """``[jds]``: the Stratum V2 Job Declaration server (docs/jds.md).

    Its Noise certificate is signed by the pool's authority key: the secret comes from
    ``authority_secret_key_file`` (``payouts keys generate`` writes one) or, for SRI-style
    configs and secrets passed in the environment, ``authority_secret_key`` itself."""

    enabled: bool = Field(False, description="run the JD server in payouts serve")
    listen: str = Field("127.0.0.1:34264", description="host:port the JD server listens on "
                        "(IPv6 in brackets: [::1]:34264)")
    authority_secret_key_file: Path | None = Field(
        None, description="file holding the authority secret key (SRI's base58check form, as "
        "payouts keys generate writes it); relative to the settings file's folder")
    authority_secret_key: str | None = Field(
        None, description="the authority secret key itself (base58check); prefer "
        "authority_secret_key_file, or PAYOUTS_JDS__AUTHORITY_SECRET_KEY from a secret store")
    authority_public_key: str | None = Field(
        None, description="optional: the public key miners pin (sv2-spec §4.7 base58check); "
        "when set, payouts serve refuses a secret key that is not its own (a wrong key file "
        "after a rotation)")
    cert_validity_sec: int = Field(
        3600, ge=10, le=10 * 365 * 86400, description="how long each Noise certificate the "
        "server signs is valid; it signs a new one when half has passed (docs/jds.md)")
    supported_extensions: list[int] = Field(
        default_factory=lambda: [0x0003, 0x4003, 0x4002],
        description="extensions announced: 0x0003 payouts (PR #203), 0x4003 settlement modes, "
        "0x4002 the per-job adapter (PRs #195/#202)")
    required_extensions: list[int] = Field(
        default_factory=list, description="extensions a client must support to connect")
    token_lifetime_sec: int = Field(
        600, ge=1, description="how long an AllocateMiningJobToken token stays valid")
    server_id: str | None = Field(
        None, min_length=1, max_length=200, description="this JD server's identity, bound "
        "into every token it issues (a token is refused on any other JD server of the pool); "
        "default: <hostname>/<listen>")

    @property
    def effective_server_id(self) -> str:
        """``server_id``, or ``<hostname>/<listen>``: unique per JD server of a pool as long
        as no two of them listen on the same address of the same host."""
        return self.server_id or f"{socket.gethostname()}/{self.listen}"

    @model_validator(mode="before")
    @classmethod
    def _read_secret_file(cls, data: Any) -> Any:
        """The key file's content becomes ``authority_secret_key`` (what the servers read);
        both given with different keys is an error (two sources of one key)."""
        if not isinstance(data, dict) or data.get("authority_secret_key_file") is None:
            return data
        path = anchor_path(Path(data["authority_secret_key_file"]),
                           ("jds", "authority_secret_key_file"))
        try:
            text = path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError) as e:
            why = e.strerror if isinstance(e, OSError) else "not ASCII text"
            where = (env_name(("jds", "authority_secret_key_file"))
                     or "jds.authority_secret_key_file")
            raise ValueError(f"{where}: cannot read {path}: {why}") from None
        inline = data.get("authority_secret_key")
        if inline is not None and inline != text:
            raise ValueError("jds.authority_secret_key and jds.authority_secret_key_file are "
                             "two sources of one key: set one")
        return {**data, "authority_secret_key_file": path, "authority_secret_key": text}
    # Connection limits (sv2.jds.limits.JdsLimits; docs/jds.md "Connection limits").
    handshake_timeout_sec: float = Field(
        5.0, gt=0, le=600, description="from accept until Noise act 1 (64 bytes) has arrived"
    )
    setup_timeout_sec: float = Field(
        10.0, gt=0, le=600,
        description="from accept until SetupConnection is accepted, handshake included; bytes "
        "the peer sends do not extend it",
    )
    idle_timeout_sec: float = Field(
        300.0, gt=0, le=86_400,
        description="close a connection this long after its last complete message",
    )
    max_connections: int = Field(1_000, ge=1, description="set-up connections")
    max_pending: int = Field(
        256, ge=1,
        description="connections still in handshake or setup, in slots apart from the set-up ones",
    )
    max_connections_per_address: int = Field(
        64, ge=0, description="connections from one IPv4 address or IPv6 /64; 0 = no limit"
    )
    max_pending_per_address: int = Field(
        8, ge=1, description="connections in handshake or setup from one IPv4 address or IPv6 /64"
    )
    connects_per_address_per_sec: float = Field(
        20.0, ge=0, le=1_000_000,
        description="new connections a second from one IPv4 address or IPv6 /64 (bursts of "
        "twice as many); beyond it they are refused before any handshake work; 0 = no limit",
    )
    tokens_per_address_per_sec: float = Field(
        20.0, ge=0, le=1_000_000,
        description="AllocateMiningJobToken a second from one IPv4 address or IPv6 /64 "
        "(bursts of twice as many), over all JD servers on one PostgreSQL database; beyond "
        "it the answer waits; 0 = no limit",
    )
    declarations_per_address_per_sec: float = Field(
        20.0, ge=0, le=1_000_000,
        description="DeclareMiningJob a second from one IPv4 address or IPv6 /64 (bursts of "
        "twice as many), over all JD servers on one PostgreSQL database; beyond it "
        "DeclareMiningJob.Error rate-limited; 0 = no limit",
    )


class MiningSettings(_Section):
    """``[mining]``: the pool's Stratum V2 Mining Protocol endpoint (docs/mining.md). It runs
    beside the JD server (``[jds] enabled``): same authority key, and SetCustomMiningJob is
    checked against the JD server's declarations."""

    enabled: bool = Field(False, description="run the Mining Protocol server in payouts serve "
                          "(needs jds.enabled)")
    listen: str = Field("127.0.0.1:34255", description="host:port the Mining Protocol server "
                        "listens on (IPv6 in brackets: [::1]:34255)")
    shares_per_minute: float = Field(6.0, gt=0, le=6_000, description="vardiff aims every "
                                     "channel at this share rate")
    initial_difficulty: int = Field(
        1, ge=1, le=1 << 52, description="a new channel's difficulty when the miner announces "
        "no hash rate (difficulty 1 = DIFF1_TARGET; on regtest, its powLimit)")
    retarget_interval_sec: float = Field(60.0, gt=0, le=3_600,
                                         description="how often vardiff reconsiders a channel")
    extranonce_prefix_size: int = Field(
        4, ge=1, le=16, description="bytes of extranonce prefix the server assigns, unique per "
        "open channel (256^size channels at once)")
    extranonce_size: int = Field(
        4, ge=1, le=16, description="bytes an extended channel's miner rolls after the prefix; "
        "a JD client declares jobs with prefix + this many bytes of extranonce")
    share_batch_size: int = Field(10_000, ge=1, le=100_000,
                                  description="shares written to the store in one batch")
    share_flush_interval_sec: float = Field(
        0.2, gt=0, le=10, description="longest a share waits for its batch to be written and "
        "acknowledged (SubmitShares.Success)")
    idle_timeout_sec: float = Field(600.0, gt=0, le=86_400, description="close a connection "
                                    "this long after its last complete message")
    max_connections: int = Field(10_000, ge=1, description="set-up connections")
    max_connections_per_address: int = Field(
        1_000, ge=0, description="connections from one IPv4 address or IPv6 /64; 0 = no limit")


def _hex_bytes(value: str, size: int, what: str) -> bytes:
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise ValueError(f"{what} is not hex: {value!r}") from None
    if len(raw) != size:
        raise ValueError(f"{what} must be {size} bytes ({2 * size} hex digits), got {len(raw)}")
    return raw


class Musig2Settings(_Section):
    """``[settlement.musig2]``: the musig2 mode's parameters (docs/musig2.md §1, extension
    0x4003 SetSettlementMode), the same for every block this server settles.

    ``committee`` is a set: the keys are sorted into BIP-327 KeySort order here (the signer
    index of a key is its position in that order, which the signing session reports), and a
    key listed twice is refused (one signer, one slot). Bounds follow the wire format and
    :class:`payouts.settlement.musig2.output.Musig2Params`: 1..255 keys, a fallback timelock of
    101 (one block after coinbase maturity) .. 65,535 (BIP-68's 16-bit block count) blocks, a fee
    rate of 1..100,000 sat/vB. ``ctv_leaf`` adds the CTV exit leaf; ``payouts serve`` refuses it
    on a node where CTV (BIP-119) is not active, where the leaf would be spendable by anyone.
    ``fallback_secret_key`` (optional) lets the server sign the fallback itself after a failed
    session; it must be the secret of ``fallback_key``.
    """

    committee: list[str] = Field(
        min_length=1, max_length=255,
        description="33-byte compressed public keys (hex) of the signers; any order",
    )
    fallback_key: str = Field(description="32-byte x-only public key (hex) of the fallback leaf")
    fallback_timelock: int = Field(
        244, ge=101, le=0xFFFF, description="fallback leaf's relative timelock in blocks (BIP-68)"
    )
    fee_rate: int = Field(1, ge=1, le=100_000, description="sat/vB paid by the payout tx")
    ctv_leaf: bool = Field(False, description="add the CTV exit leaf (needs BIP-119 active)")
    fallback_secret_key: str | None = Field(
        None, description="32-byte secret key (hex) of fallback_key: sign the fallback here"
    )

    @field_validator("committee")
    @classmethod
    def _committee(cls, keys: list[str]) -> list[str]:
        from payouts.crypto import musig2

        raw = []
        for i, k in enumerate(keys):
            key = _hex_bytes(k, 33, f"committee key {i}")
            try:
                musig2.key_agg([key])
            except musig2.MuSig2Error:
                raise ValueError(f"committee key {i} ({k}) is not a compressed curve point"
                                 ) from None
            raw.append(key)
        dup = next((k for k in raw if raw.count(k) > 1), None)
        if dup is not None:
            raise ValueError(f"committee key {dup.hex()} is listed twice")
        return [k.hex() for k in musig2.key_sort(raw)]

    @field_validator("fallback_key")
    @classmethod
    def _fallback_key(cls, v: str) -> str:
        from payouts.crypto.schnorr import SchnorrError, parse_xonly

        key = _hex_bytes(v, 32, "fallback_key")
        try:
            parse_xonly(key)
        except SchnorrError:
            raise ValueError("fallback_key is not the x coordinate of a curve point (BIP-340)"
                             ) from None
        return key.hex()

    @model_validator(mode="after")
    def _secret_matches(self) -> Musig2Settings:
        if self.fallback_secret_key is not None:
            from payouts.crypto.schnorr import SchnorrError, xonly_pubkey

            sk = _hex_bytes(self.fallback_secret_key, 32, "fallback_secret_key")
            try:
                pub = xonly_pubkey(sk)
            except SchnorrError:
                raise ValueError("fallback_secret_key is not a secret key (1..n-1)") from None
            if pub.hex() != self.fallback_key:
                raise ValueError("fallback_secret_key is not the secret of fallback_key")
        return self

    def committee_keys(self) -> tuple[bytes, ...]:
        """The committee in KeySort order, as bytes."""
        return tuple(bytes.fromhex(k) for k in self.committee)


class SettlementSettings(_Section):
    """``[settlement]``: the lifecycle after a block is found (docs/lifecycle.md)."""

    poll_interval_sec: float = Field(
        10.0, gt=0, le=3600,
        description="how often `payouts serve` polls the node to advance settlements",
    )
    musig2: Musig2Settings | None = Field(
        None, description="the musig2 mode's committee and fallback; required in that mode"
    )


class RetentionSettings(_Section):
    """``[retention]``: how long detail is kept in the store (docs/retention.md)."""

    keep_days: float = Field(
        30.0, ge=1, le=36_500,
        description="shares and ledger lines older than this, and older than anything the "
        "window can still reach, are written to the archive and deleted (balances stay)",
    )
    archive_dir: Path | None = Field(
        None, description="where the daily CSV archives go; default: <data_dir>/archive")
    interval_sec: float = Field(
        3600.0, gt=0, le=7 * 86_400,
        description="how often payouts serve prunes (0 files written when nothing is old)",
    )
    enabled: bool = Field(True, description="let payouts serve prune on its own")


class ApiSettings(_Section):
    """``[api]``: the REST API of payouts serve (docs/api.md)."""

    host: str = Field("127.0.0.1", description="address the API listens on")
    port: int = Field(8080, ge=1, le=65535, description="TCP port of the API")
    rate_limit_per_sec: float = Field(
        20.0, ge=0, le=1_000_000, description="public (miner) requests a second per client "
        "address, sustained; shared by every payouts serve on one PostgreSQL database; 0 = "
        "no limit (as --no-rate-limit)")
    rate_limit_burst: int = Field(
        60, ge=1, le=1_000_000, description="public requests one client address may make at "
        "once before rate_limit_per_sec applies")


Role = Literal["all", "api", "jds", "leader"]


class ClusterSettings(_Section):
    """``[cluster]``: several ``payouts serve`` processes on one PostgreSQL, one elected
    leader (docs/deployment.md)."""

    role: Role = Field(
        "all", description="all: everything in one process (the only role on SQLite); api: "
        "REST frontend; jds: REST + JD server frontend; leader: campaigns for leadership and, "
        "once elected, runs the accountant, publishing and settlement")
    enabled: bool = Field(
        False, description="with role all on PostgreSQL: run as one of several processes "
        "(campaign for leadership instead of assuming it); implied by any other role")
    request_timeout_sec: float = Field(
        10.0, gt=0, le=300, description="how long a frontend waits for the leader to answer "
        "a forwarded request (POST /v1/distributions) before 503 no-leader")

    @property
    def active(self) -> bool:
        """True when this process is one of several (campaigning or a frontend)."""
        return self.enabled or self.role != "all"


def env_name(loc: tuple[str | int, ...]) -> str | None:
    """The ``PAYOUTS_*`` environment variable that set the setting at ``loc`` (or a table
    holding it, given as JSON), if one did."""
    names = {k.upper() for k in os.environ}
    for n in range(len(loc), 0, -1):
        name = "PAYOUTS_" + "__".join(str(p) for p in loc[:n]).upper()
        if name in names:
            return name
    return None


def anchor_path(path: Path, loc: tuple[str, ...]) -> Path:
    """A path setting made absolute: ``~`` expanded; a relative path from the settings file is
    relative to that file's folder (the file works from any working directory), one from the
    environment or with no file relative to the working directory."""
    path = path.expanduser()
    if path.is_absolute():
        return path
    config = _config_file.get()
    if config is not None and env_name(loc) is None:
        return (config.resolve().parent / path).resolve()
    return path.resolve()


class MetricsSettings(_Section):
    """``[metrics]``: where Prometheus scrapes ``/metrics`` and whether it needs a token
    (docs/dashboards.md)."""

    listen: str | None = Field(
        None, description="host:port: serve /metrics there alone (the API's /metrics is then "
        "404); default: on the API's address")
    token_required: bool = Field(
        False, description="/metrics needs an operator bearer token with scope read")

    @field_validator("listen")
    @classmethod
    def _host_port(cls, v: str | None) -> str | None:
        if v is not None:
            host, sep, port = v.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65_536:
                raise ValueError(f"listen must be host:port, got {v!r}")
        return v


def _default_data_dir() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "payouts"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PAYOUTS_", env_nested_delimiter="__", extra="forbid"
    )

    data_dir: Path = Field(
        default_factory=_default_data_dir, description="where the SQLite database and the "
        "archives go; default $XDG_DATA_HOME/payouts (~/.local/share/payouts); relative to the "
        "settings file's folder")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default: SQLite file payouts.db in data_dir"
    )
    network: Network = Field("regtest", description="the chain: addresses, the node's RPC "
                             "port and cookie folder, what a challenge message names")
    accounting: AccountingSettings = Field(default_factory=AccountingSettings)
    pool: PoolSettings = Field(default_factory=PoolSettings)
    distribution: DistributionSettings = Field(default_factory=DistributionSettings)
    node: NodeSettings = Field(default_factory=NodeSettings)
    jds: JdsSettings = Field(default_factory=JdsSettings)
    mining: MiningSettings = Field(default_factory=MiningSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    settlement: SettlementSettings = Field(default_factory=SettlementSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)

    @model_validator(mode="after")
    def _paths_from_the_settings_file(self) -> Settings:
        self.data_dir = anchor_path(self.data_dir, ("data_dir",))
        if self.node.cookie_file is not None:
            self.node.cookie_file = anchor_path(self.node.cookie_file, ("node", "cookie_file"))
        if self.retention.archive_dir is not None:
            self.retention.archive_dir = anchor_path(self.retention.archive_dir,
                                                     ("retention", "archive_dir"))
        return self

    @model_validator(mode="after")
    def _no_pinned_difficulty_on_mainnet(self) -> Settings:
        if self.network == "mainnet" and self.accounting.pin_difficulty is not None:
            raise ValueError(
                "accounting.pin_difficulty is for test networks only: on mainnet the TIDES "
                "window must follow the network's difficulty"
            )
        return self

    @model_validator(mode="after")
    def _mode_has_parameters(self) -> Settings:
        if self.distribution.mode == "musig2" and self.settlement.musig2 is None:
            raise ValueError(
                "distribution.mode = musig2 needs a [settlement.musig2] table: committee, "
                "fallback_key (and optionally fallback_timelock, fee_rate, ctv_leaf, "
                "fallback_secret_key)"
            )
        return self

    @model_validator(mode="after")
    def _cluster_needs_postgresql(self) -> Settings:
        if self.cluster.active and not self.effective_database_url.startswith("postgresql"):
            raise ValueError(
                f"cluster.role = {self.cluster.role}"
                f"{' with cluster.enabled' if self.cluster.enabled else ''} needs PostgreSQL "
                "(database_url = postgresql+psycopg://...): several processes share one "
                "PostgreSQL database; on SQLite only role all runs, as one process")
        return self

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'payouts.db'}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = _config_file.get()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)


def _config_path(explicit: Path | None) -> Path | None:
    if explicit is not None:
        return explicit
    env = os.environ.get("PAYOUTS_CONFIG")
    if env:
        return Path(env)
    local = Path("payouts.toml")
    return local if local.is_file() else None


def _got(where: str, value: Any) -> str:
    """The offending value for an error line: never a secret, and not a whole table (its bad
    key is named by the message)."""
    if isinstance(value, dict):
        return ""
    if any(word in where for word in ("secret", "password")):
        return " (value not shown)"
    return f" (got {value!r})"


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Load and validate settings; raise :class:`ConfigError` listing every bad key."""
    path = _config_path(config_file)
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    token = _config_file.set(path)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_problems(exc, path)) from None
    finally:
        _config_file.reset(token)


def _problems(exc: ValidationError, path: Path | None) -> str:
    """One line per problem, naming the key, or the environment variable when one set it."""
    lines = []
    from_file = False
    for err in exc.errors():
        loc = tuple(err["loc"])
        key = ".".join(str(p) for p in loc)
        msg = str(err["msg"])
        own = msg.removeprefix("Value error, ")  # a message that names its key(s) itself
        env = env_name(loc) if loc else None
        if env is not None:
            where = f"{env} (environment)"
        else:
            where = key
            from_file = from_file or bool(loc)
        if not loc or own.startswith(f"{key}."):
            lines.append(f"  {own}")
        else:
            lines.append(f"  {where}: {msg}{_got(key, err.get('input'))}")
    source = f" in {path}" if path and from_file else ""
    return problems_text(f"invalid settings{source}", lines)


def problems_text(header: str, problems: list[str]) -> str:
    """One problem: one line (``problem (header)``); several: the header, then one indented
    line each."""
    if len(problems) == 1:
        return f"{problems[0].strip()} ({header})"
    return f"{header}:\n" + "\n".join(f"  {p.strip()}" for p in problems)
