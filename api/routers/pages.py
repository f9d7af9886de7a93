"""The miner and operator pages (docs/dashboards.md): server-rendered HTML (Jinja2, autoescaped)
over the dashboards' read models (:mod:`payouts.dashboards`, through the service). Every
figure is in the HTML itself, so the pages work without JavaScript; only the hashrate charts
need it (uPlot, vendored at build time into ``api/static/vendor``, served from ``/static``).

- ``/miners`` (search: an account or a payout address), ``/miners/{account}`` (public, rate
  limited like the JSON reads), ``/miners/{account}/exit/{block_id}`` (a CTV exit path, with
  its transactions as a download);
- ``/operator`` behind an operator token. A browser cannot attach a bearer header to a page
  load, so ``/operator/login`` takes the token in a POST form (never in a URL, where logs and
  history would keep it), checks it (scope ``read``) and sets it as a cookie: ``HttpOnly``
  (no script reads it), ``SameSite=Strict`` (no other site's page sends it), ``Path=/operator``,
  ``Secure`` on HTTPS. Every request checks the token again (a revoked one stops working at
  once). The settlement buttons POST a form with a CSRF token derived from the cookie's token
  (HMAC), and need scope ``settlements:write``; their refusals are shown, not raised.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import time
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response

from api import metrics
from api.auth import check_secret
from api.deps import OptionalActionsDep, OptionalRunnerDep, ServiceDep, SessionsDep
from api.problems import Problem, status_for
from api.ratelimit import rate_limited
from payouts.dashboards import CHART_SPAN_MAX_MS, CHART_SPAN_MS, MinerDashboard
from payouts.errors import PayoutsError
from payouts.service import PoolService
from payouts.settlement.musig2.registry import SessionRegistry
from payouts.states import Scope
from payouts.store import dashboard as dash_store
from payouts.tx.address import AddressError, address_to_script, script_to_address
from payouts.tx.hashes import display_hex

if TYPE_CHECKING:
    import jinja2

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
STATIC = Path(__file__).resolve().parent.parent / "static"
COOKIE = "payouts_operator"
COOKIE_PATH = "/operator"
COOKIE_MAX_AGE = 12 * 3600
SPANS = {"24h": CHART_SPAN_MS, "7d": CHART_SPAN_MAX_MS}
#: No inline script, no other origin: the chart data travels as JSON in a non-executed
#: <script type="application/json"> block that the page's own script reads.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")

router = APIRouter(tags=["pages"], include_in_schema=False)


# -- formatting ---------------------------------------------------------------------------------


def sats(v: int | None) -> str:
    """``1,234,567 sat`` (integers only: money is never a float here)."""
    return "–" if v is None else f"{v:,} sat"


def btc(v: int | None) -> str:
    """``0.01234567 BTC`` from satoshis, exactly."""
    if v is None:
        return "–"
    sign = "-" if v < 0 else ""
    whole, frac = divmod(abs(v), 100_000_000)
    return f"{sign}{whole}.{frac:08d} BTC"


def hashrate(hs: int | None) -> str:
    """``12.34 TH/s``: three significant digits with an SI prefix."""
    if hs is None:
        return "–"
    value = Fraction(hs)
    for prefix in ("", "k", "M", "G", "T", "P", "E", "Z"):
        if value < 1000:
            return f"{float(value):.2f} {prefix}H/s"
        value /= 1000
    return f"{float(value):.2f} YH/s"


def percent(part: int, whole: int) -> str:
    if whole <= 0:
        return "0.0000 %"
    return f"{float(Fraction(part * 100, whole)):.4f} %"


def utc(ms_or_dt: Any) -> str:
    if ms_or_dt is None:
        return "–"
    if isinstance(ms_or_dt, int | float):
        return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ms_or_dt / 1000))
    return str(ms_or_dt.strftime("%Y-%m-%d %H:%M UTC"))


def difficulty(d: Fraction | int | None) -> str:
    if d is None:
        return "–"
    return f"{float(d):,.0f}" if d >= 1 else f"{float(d):.6g}"


def short(h: str, n: int = 10) -> str:
    return h if len(h) <= 2 * n + 1 else f"{h[:n]}…{h[-n:]}"


@functools.cache
def _env() -> jinja2.Environment:
    """The templates' environment, built at the first page (jinja2's import and set-up are
    ~30 ms of a process start that serves no page)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    )
    env.filters.update(sats=sats, btc=btc, hashrate=hashrate, utc=utc, short=short,
                       difficulty=difficulty, hexid=display_hex)
    env.globals.update(percent=percent)
    return env


def render(name: str, status: int = 200, **context: Any) -> HTMLResponse:
    html = _env().get_template(name).render(charts=(STATIC / "vendor" / "uPlot.iife.min.js")
                                          .is_file(), **context)
    return HTMLResponse(html, status_code=status, headers={
        "Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin", "Cache-Control": "no-store"})


def script_json(obj: Any) -> str:
    """JSON safe inside ``<script type="application/json">``: no ``<``, ``>`` or ``&`` (a
    worker name of ``</script>`` must not end the block)."""
    text = json.dumps(obj, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _error_page(e: PayoutsError | Problem, query: str = "") -> HTMLResponse:
    status = e.status if isinstance(e, Problem) else status_for(e)
    detail = e.detail if isinstance(e, Problem) else e.message
    code = e.code
    return render("search.html", status=status, query=query, error=f"{detail} ({code})",
                  matches=[])


# -- miners -------------------------------------------------------------------------------------


def _address(script: bytes, network: str) -> str | None:
    try:
        return script_to_address(script, network)
    except AddressError:
        return None


@router.get("/", dependencies=[Depends(rate_limited)])
def index() -> RedirectResponse:
    return RedirectResponse("/miners", status_code=307)


@router.get("/miners", dependencies=[Depends(rate_limited)])
def search(service: ServiceDep, q: str = "") -> Response:
    """The search box: an account opens its page; a payout address opens the page of the
    account paid there (a list when several share it)."""
    q = q.strip()
    if not q:
        return render("search.html", query="", error=None, matches=[])
    if len(q) > 200:
        return render("search.html", status=422, query=q[:200], error="query too long",
                      matches=[])
    found = service.find_miner(q)
    if found is not None:
        return RedirectResponse(f"/miners/{quote(found.account, safe='')}", status_code=303)
    try:
        script = address_to_script(q, service.settings.network)
    except PayoutsError:
        return render("search.html", status=404, query=q, matches=[],
                      error=f"no miner account {q!r}, and it is no "
                      f"{service.settings.network} address")
    matches = dash_store.accounts_paid_at(service.engine, script)
    if len(matches) == 1:
        return RedirectResponse(f"/miners/{quote(matches[0], safe='')}", status_code=303)
    return render("search.html", status=200 if matches else 404, query=q, matches=matches,
                  error=None if matches else f"no miner is paid at {q}")


def _signing(dash: MinerDashboard, sessions: SessionRegistry,
             now: float) -> dict[int, dict[str, Any]]:
    """block id → the MuSig2 signing session of its payout (state, deadlines, who is missing),
    whichever process opened it."""
    out: dict[int, dict[str, Any]] = {}
    for p in dash.payouts:
        if p.mode != "musig2":
            continue
        sid = sessions.block_session(p.block.id)
        s = sessions.view(sid, now) if sid else None
        if sid is None or s is None:
            continue
        state = s.state
        out[p.block.id] = {
            "id": sid, "state": str(state), "nonce_deadline": s.nonce_deadline,
            "sig_deadline": s.sig_deadline, "missing_nonces": len(s.missing_nonces),
            "missing_sigs": len(s.missing_partial_sigs), "signers": s.n_signers,
        }
    return out


@router.get("/miners/{account}", dependencies=[Depends(rate_limited)])
def miner_page(account: str, request: Request, service: ServiceDep, sessions: SessionsDep,
               span: str = "24h") -> Response:
    """One miner's page: window share and hashrate, hashrate per worker over time, owed
    balance, every block that paid it (amount, txid:vout, state), CTV exit paths, MuSig2
    signing sessions."""
    if span not in SPANS:
        return render("search.html", status=422, query=account, matches=[],
                      error=f"span must be one of {list(SPANS)}")
    now = float(request.app.state.clock())
    try:
        dash = service.miner_dashboard(account, now_ms=int(now * 1000), span_ms=SPANS[span])
    except PayoutsError as e:
        return _error_page(e, account)
    st = dash.shares.stats
    chart = {
        "bucket_ms": dash.bucket_ms,
        "since_ms": dash.since_ms,
        "total": dash.total_series(),
        "workers": {w.worker or "(default)": [[b, d * (1 << 32) * 1000 // dash.bucket_ms]
                                              for b, _n, d in w.points]
                    for w in dash.workers},
    }
    hour_ago = dash.until_ms - 3_600_000
    return render(
        "miner.html", d=dash, st=st, span=span, spans=list(SPANS),
        address=_address(dash.miner.payout_script, service.settings.network),
        hour_ago=hour_ago, signing=_signing(dash, sessions, now),
        chart_json=script_json(chart),
        network=service.settings.network,
    )


def _exit_path(service: PoolService, account: str, block_id: int) -> Any:
    try:
        return service.exit_path(account, block_id)
    except PayoutsError as e:
        raise Problem(404 if e.code.startswith(("unknown", "no-")) else 409, e.code,
                      e.message) from None


# The download first: the page's {block_id} would match "7.txt" too.
@router.get("/miners/{account}/exit/{block_id}.txt", dependencies=[Depends(rate_limited)])
def exit_download(account: str, block_id: int, service: ServiceDep) -> PlainTextResponse:
    """The exit path's raw transactions, one hex line each, root first (for
    ``bitcoin-cli sendrawtransaction``, in this order)."""
    found = _exit_path(service, account, block_id)
    body = "".join(t.raw.hex() + "\n" for t in found.path.txs)
    name = f"exit-{found.miner.account}-block{block_id}.txt".replace('"', "")
    return PlainTextResponse(body, headers={
        "Content-Disposition": f'attachment; filename="{name}"'})


@router.get("/miners/{account}/exit/{block_id}", dependencies=[Depends(rate_limited)])
def exit_page(account: str, block_id: int, service: ServiceDep) -> Response:
    """A CTV payout's exit path: the transactions to broadcast, in order, with their state."""
    try:
        found = _exit_path(service, account, block_id)
    except Problem as e:
        return _error_page(e, account)
    pending = sum(1 for t in found.path.txs if t.status == "planned")
    return render("exit.html", f=found, pending=pending)


# -- operator -------------------------------------------------------------------------------------


def csrf_token(secret: str) -> str:
    """The form token of a session: HMAC of a fixed label under the operator's token, so it
    is bound to the cookie and unknown to any page that cannot read the cookie."""
    return hmac.new(secret.encode(), b"payouts operator form", hashlib.sha256).hexdigest()


def _operator_secret(request: Request, service: PoolService, scope: Scope) -> str:
    secret = request.cookies.get(COOKIE)
    check_secret(service.engine, secret, scope)
    assert secret is not None
    return secret


async def _form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (no multipart: nothing is uploaded)."""
    body = (await request.body()).decode("utf-8", "replace")
    return {k: v[0] for k, v in parse_qs(body, max_num_fields=8).items()}


@router.get("/operator/login")
def login_form(error: str = "") -> HTMLResponse:
    return render("login.html", error=error or None)


@router.post("/operator/login", dependencies=[Depends(rate_limited)])
async def login(request: Request, service: ServiceDep) -> Response:
    token = (await _form(request)).get("token", "").strip()
    try:
        check_secret(service.engine, token, Scope.READ)
    except Problem as e:
        return render("login.html", status=e.status, error=f"{e.detail} ({e.code})")
    response = RedirectResponse("/operator", status_code=303)
    response.set_cookie(COOKIE, token, max_age=COOKIE_MAX_AGE, path=COOKIE_PATH, httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")
    return response


@router.post("/operator/logout")
def logout() -> Response:
    response = RedirectResponse("/operator/login", status_code=303)
    response.delete_cookie(COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")
    return response


def _actions(mode: str | None, status: str, phase: str | None) -> list[str]:
    """The settlement actions the API may accept for a block in this state (it still decides
    from the node: a refusal is shown with its reason)."""
    if mode not in ("ctv", "musig2") or phase in ("paid", "rolled-back") or status != "mature":
        return []
    return ["broadcast", "fallback"] if mode == "musig2" else ["broadcast"]


@router.get("/operator")
async def operator_page(request: Request, service: ServiceDep, runner: OptionalRunnerDep,
                        sessions: SessionsDep, done: str = "") -> Response:
    """The operator's page: node, JD and Mining Protocol servers, declarations by reason,
    the window, the distribution at the current template, blocks and settlements."""
    try:
        secret = _operator_secret(request, service, Scope.READ)
    except Problem as e:
        if e.code == "missing-token":
            return RedirectResponse("/operator/login", status_code=303)
        return render("login.html", status=e.status, error=f"{e.detail} ({e.code})")
    now = float(request.app.state.clock())
    revenue = await metrics.template_revenue()
    # A cluster member without a node source of its own shows the leader's node and prices at
    # the leader's template revenue, as published with the window view.
    node = metrics.node_status()
    if node is None or revenue is None:
        leader_node, leader_revenue = service.leader_node()
        node = node if node is not None else leader_node
        revenue = revenue if revenue is not None else leader_revenue
    blocks = service.blocks()
    if revenue is None and blocks:
        revenue = blocks[-1].revenue
    settled = {v.block.id: v.settlement for v in service.settlements()}
    rows = []
    for b in reversed(blocks):
        s = settled.get(b.id)
        rows.append({
            "block": b, "mode": s.mode if s else None, "phase": s.phase if s else None,
            "age_s": max(now - b.created_at.timestamp(), 0.0),
            "session": sessions.block_session(b.id) if s and s.mode == "musig2" else None,
            "actions": _actions(s.mode if s else None, b.status, s.phase if s else None),
        })
    servers = metrics.servers()
    stats = {role: dict(srv.stats) for role, srv in servers.items()}
    declarations: dict[str, int] = {}
    for counts in stats.values():
        for key, n in counts.items():
            if key == "declare-accepted" or key.startswith("declare-rejected:"):
                declarations[key] = declarations.get(key, 0) + n
    now_ms = int(now * 1000)
    chart = {"bucket_ms": 600_000, "since_ms": now_ms - CHART_SPAN_MS,
             "total": service.pool_hashrate(now_ms - CHART_SPAN_MS, now_ms), "workers": {}}
    try:  # on a cluster member: the leader's published view (none yet: the problem, shown)
        window = service.window_summary()
    except PayoutsError as e:
        return _error_page(e)
    return render(
        "operator.html", window=window,
        scheme=service.settings.accounting.scheme, node_difficulty=window.node_difficulty,
        window_difficulty=window.window_difficulty,
        dist=service.distribution_summary(revenue), blocks=rows, servers=servers, stats=stats,
        declarations=sorted(declarations.items()), node=node, now=now,
        csrf=csrf_token(secret), done=done, mode=service.settings.distribution.mode,
        chart_json=script_json(chart), runner=runner is not None,
    )


@router.post("/operator/settlements/{block_id}/{action}")
async def operator_action(block_id: int, action: str, request: Request, service: ServiceDep,
                          actions: OptionalActionsDep) -> Response:
    """A settlement button: the same runner action as ``POST /v1/settlements/{id}/{action}``
    (forwarded to the leader on a cluster member, as that route is); the outcome (or the
    refusal and its reason) comes back on the page."""
    try:
        secret = _operator_secret(request, service, Scope.SETTLEMENTS_WRITE)
    except Problem as e:
        return render("login.html", status=e.status, error=f"{e.detail} ({e.code})")
    form = await _form(request)
    if not hmac.compare_digest(form.get("csrf", ""), csrf_token(secret)):
        return render("login.html", status=403, error="the form's token does not match this "
                      "session; reload the page (csrf-mismatch)")
    if action not in ("broadcast", "fallback"):
        return render("login.html", status=404, error=f"no action {action!r}")
    try:
        service.block(block_id)
        if actions is None:
            raise Problem(503, "settlement-not-running", "this server runs no settlement "
                          "lifecycle")
        report = await (actions.broadcast(block_id) if action == "broadcast"
                        else actions.fallback(block_id))
        sent = ", ".join(f"{r.result}" + (f" ({r.reason})" if r.reason else "")
                         for r in report.sent) or "nothing sent"
        message = f"block {block_id}: {action}: {sent}"
    except (PayoutsError, Problem) as e:
        message = f"block {block_id}: {action} refused: " + (
            f"{e.detail} ({e.code})" if isinstance(e, Problem) else f"{e.message} ({e.code})")
    return RedirectResponse(f"/operator?done={quote(message)}", status_code=303)


__all__ = ["COOKIE", "btc", "csrf_token", "hashrate", "router", "sats"]
