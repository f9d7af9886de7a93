"""Settings: a TOML file plus ``PAYOUTS_*`` environment variables, validated at start.

Precedence (highest first): explicit overrides, environment (``PAYOUTS_DATABASE_URL``,
``PAYOUTS_ACCOUNTING__SCHEME`` for nested keys), the TOML file (``--config``, else
``$PAYOUTS_CONFIG``, else ``./payouts.toml`` when present), defaults. Invalid values stop the
program with one line per problem, naming the key.
"""

from __future__ import annotations

import os
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
    scheme: Scheme = "tides"
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
    mode: ModeName = "coinbase"
    max_outputs_bytes: int = Field(
        6_500, ge=43, le=1_000_000, description="byte budget for payout outputs in the coinbase"
    )
    max_sigops: int = Field(400, ge=0, le=80_000, description="sigop-cost budget for outputs")
    ctv_fanout_arity: int = Field(16, ge=2, le=1000)
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
    backend: Literal["kernel", "bitcoind"] = "kernel"
    rpc_url: str | None = None
    rpc_user: str | None = None
    rpc_password: str | None = None


class JdsSettings(_Section):
    enabled: bool = False
    listen: str = "127.0.0.1:34264"
    authority_public_key: str | None = None
    authority_secret_key: str | None = None
    cert_validity_sec: int = Field(3600, ge=10, le=10 * 365 * 86400)
    supported_extensions: list[int] = Field(default_factory=lambda: [0x0003, 0x4003, 0x4002])
    required_extensions: list[int] = Field(default_factory=list)
    token_lifetime_sec: int = Field(600, ge=1)
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
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)


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

    data_dir: Path = Field(default_factory=_default_data_dir)
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default: SQLite file payouts.db in data_dir"
    )
    network: Network = "regtest"
    accounting: AccountingSettings = Field(default_factory=AccountingSettings)
    pool: PoolSettings = Field(default_factory=PoolSettings)
    distribution: DistributionSettings = Field(default_factory=DistributionSettings)
    node: NodeSettings = Field(default_factory=NodeSettings)
    jds: JdsSettings = Field(default_factory=JdsSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    settlement: SettlementSettings = Field(default_factory=SettlementSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)

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
        lines = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "(root)"
            lines.append(f"  {where}: {err['msg']}{_got(where, err.get('input'))}")
        source = f" in {path}" if path else ""
        raise ConfigError(f"invalid settings{source}:\n" + "\n".join(lines)) from None
    finally:
        _config_file.reset(token)
