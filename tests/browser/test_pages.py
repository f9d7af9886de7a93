"""The miner and operator pages in a real browser (Debian's chromium through chromedriver)
against a running ``payouts serve`` filled as a demo run (tests/browser/served.py): every
figure the page shows is checked against the JSON API, and each page is saved as a screenshot
under docs/img/browser-run/ (the README's pictures are copies of these)."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from payouts.tx.block import Block
from tests.api.settle_helpers import miner_script
from tests.browser import served as serving
from tests.browser.webdriver import Browser, binaries, browser

pytestmark = [pytest.mark.browser, pytest.mark.slow]
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "img" / "browser-run"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

if binaries() is None:
    if IN_CI:
        raise RuntimeError("CI needs chromium and chromedriver: make browser installs them")
    pytest.skip("chromium/chromedriver not installed (make browser)", allow_module_level=True)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[serving.Running]:
    started = serving.start(tmp_path_factory.mktemp("served"))
    try:
        serving.wait_indexed(started[0])
        yield started[0]
    finally:
        serving.stop(*started)


@pytest.fixture(scope="module")
def web() -> Iterator[Browser]:
    with browser() as b:
        yield b


def values(web: Browser, css: str, attr: str = "data-value") -> list[str | None]:
    return [web.attr(e, attr) for e in web.find_all(css)]


def value(web: Browser, css: str, attr: str = "data-value") -> str | None:
    return web.attr(web.find(css), attr)


def test_miner_page_shows_what_the_api_says(run: serving.Running, web: Browser) -> None:
    account = "m2"  # three workers, one idle for the last hour
    web.get(f"{run.url}/miners/{account}")
    assert web.title.startswith(account)
    shares = run.api("GET", f"/v1/miners/{account}/shares").json()
    balance = run.api("GET", f"/v1/miners/{account}/balance").json()
    history = run.api("GET", f"/v1/miners/{account}/payouts").json()
    assert value(web, "[data-testid=window-shares]") == str(shares["miner_shares"])
    assert value(web, "[data-testid=hashrate]") == str(shares["hashrate_hs"])
    assert value(web, "[data-testid=owed]") == str(balance["owed_sats"])
    assert value(web, "[data-testid=window-share]", "data-weight") == shares["miner_weight"]
    assert value(web, "[data-testid=window-share]", "data-total") == shares[
        "window_total_weight"]
    assert web.text(web.find("[data-testid=address]")) == balance["address"]
    # Every block that paid the miner, newest first, with its amount and where it landed.
    rows = web.find_all("[data-testid=payout]")
    api_blocks = sorted(history["blocks"], key=lambda b: b["id"], reverse=True)
    assert len(rows) == len(api_blocks) == 2
    for row, b in zip(rows, api_blocks, strict=True):
        assert web.attr(row, "data-block-id") == str(b["id"])
        assert web.attr(row, "data-amount") == str(b["paid_sats"])
        assert web.attr(row, "data-txid") == (b.get("payout_txid") or "")
        assert web.attr(row, "data-vout") == str(b.get("payout_vout", ""))
        assert f"{b['paid_sats']:,} sat" in web.text(row)
    paid = next(b for b in api_blocks if b["status"] == "paid")
    assert paid["payout_txid"] and paid["payout_vout"] is not None
    # The paid block's output really is the miner's: the coinbase on the node says so.
    raw = run.call(run.node.get_block(bytes.fromhex(paid["block_hash"])[::-1]))
    assert raw is not None
    coinbase = Block.parse(raw).txs[0]
    assert coinbase.txid[::-1].hex() == paid["payout_txid"]
    out = coinbase.outputs[paid["payout_vout"]]
    assert (out.value, out.script) == (paid["paid_sats"], miner_script(2))
    # Per worker: the shares posted for it in the last 24 h, and the idle worker's last hour.
    workers = {web.attr(r, "data-worker"): r for r in web.find_all("[data-testid=worker]")}
    assert set(workers) == {"rig-a", "rig-b", "rig-c"}
    posted = serving._shares(int(time.time() * 1000))
    for worker, row in workers.items():
        n = sum(1 for a, w in zip(posted["account"], posted["worker"], strict=True)
                if a == account and w == worker)
        assert web.attr(row, "data-shares") == str(n)
    assert web.attr(workers["rig-c"], "data-hashrate-1h") == "0"
    assert int(web.attr(workers["rig-a"], "data-hashrate-1h") or 0) > 0
    # The chart was drawn by the vendored uPlot: the total plus one series per worker.
    assert value(web, "#chart", "data-drawn") == "4"
    assert web.find_all("#chart canvas")
    web.full_screenshot(SHOTS / "miner-page.png")


def test_search_finds_a_miner_by_address_and_by_account(run: serving.Running,
                                                        web: Browser) -> None:
    address = run.api("GET", "/v1/miners/m3").json()["address"]
    web.get(f"{run.url}/miners")
    box = web.find("input[name=q]")
    web.type(box, address)
    web.click_to_load(web.find("header form button"))
    assert web.url.endswith("/miners/m3")
    assert web.text(web.find("[data-testid=account]")) == "m3"
    web.get(f"{run.url}/miners?q=m4")
    assert web.url.endswith("/miners/m4")
    web.get(f"{run.url}/miners?q=nobody")
    assert "no miner account 'nobody'" in web.text(web.find("[data-testid=error]"))
    web.screenshot(SHOTS / "search.png")


def test_operator_page_behind_a_token_shows_what_the_api_says(run: serving.Running,
                                                              web: Browser) -> None:
    web.get(f"{run.url}/operator")
    assert web.url.endswith("/operator/login")
    web.type(web.find("#token"), "pt_not-a-token")
    web.click_to_load(web.find("#sign-in"))
    assert "unknown token" in web.text(web.find("[data-testid=error]"))
    web.type(web.find("#token"), run.admin)
    web.click_to_load(web.find("#sign-in"))
    assert web.url.endswith("/operator")
    (cookie,) = [c for c in web.cookies() if c["name"] == "payouts_operator"]
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert web.script("return document.cookie") == ""  # no script can read the token

    window = run.api("GET", "/v1/window").json()
    assert value(web, "[data-testid=window-shares]") == str(window["share_count"])
    assert value(web, "[data-testid=window-miners]") == str(len(window["miners"]))
    dist = run.api("GET", "/v1/distributions/current").json()
    assert value(web, "[data-testid=distribution]", "data-id") == str(dist["distribution_id"])
    blocks = run.api("GET", "/v1/blocks").json()
    rows = web.find_all("[data-testid=block]")
    assert [web.attr(r, "data-block-id") for r in rows] == [str(b["id"]) for b in
                                                           reversed(blocks)]
    assert [web.attr(r, "data-status") for r in rows] == [b["status"] for b in reversed(blocks)]
    assert [b["status"] for b in blocks] == ["paid", "confirmed"]
    # Declarations by reason: the JD server's own counts (two blocks declared, both
    # accepted), which /metrics exports too (its counter is process-wide: other servers of
    # this test process may have added to it, never taken away).
    jds = run.pool.jds
    assert jds is not None and jds.stats.get("declare-accepted") == 2
    assert values(web, "[data-testid=declaration]") == ["2"]
    assert value(web, "[data-testid=declaration]", "data-key") == "declare-accepted"
    text = httpx.get(f"{run.url}/metrics", timeout=10).text
    accepted = re.search(r'^payouts_declarations_total\{reason="ok",result="accepted"\} (\S+)$',
                         text, re.M)
    assert accepted is not None and float(accepted.group(1)) >= 2
    tip = re.search(r"^payouts_node_tip_height (\S+)$", text, re.M)
    assert tip is not None and value(web, "[data-testid=node-tip]") == str(int(float(
        tip.group(1))))
    assert value(web, "[data-testid=node-reachable]") == "True"
    assert value(web, "[data-testid=jd-connections]") == "0"
    assert web.find_all("#chart canvas")
    web.full_screenshot(SHOTS / "operator-page.png")


def test_a_read_token_sees_the_page_but_its_buttons_are_refused(run: serving.Running,
                                                                web: Browser) -> None:
    web.get(f"{run.url}/operator/login")
    web.type(web.find("#token"), run.reader)
    web.click_to_load(web.find("#sign-in"))
    assert web.url.endswith("/operator")
    # A young block has no action; a form posted by hand with this token is refused.
    r = httpx.post(f"{run.url}/operator/settlements/1/broadcast", data={"csrf": "x"},
                   cookies={"payouts_operator": run.reader}, timeout=10)
    assert r.status_code == 403 and "settlements:write" in r.text
    web.click_to_load(web.find("form[action='/operator/logout'] button"))
    assert web.url.endswith("/operator/login")
    web.get(f"{run.url}/operator")
    assert web.url.endswith("/operator/login")


def test_every_figure_is_in_the_html_without_javascript(run: serving.Running) -> None:
    html = httpx.get(f"{run.url}/miners/{quote('m1')}", timeout=10).text
    assert 'data-testid="owed"' in html and 'data-testid="payout"' in html
    assert "<canvas" not in html  # the chart is the only part drawn by script
    script = miner_script(1)
    assert script.hex() not in html or "bcrt1" in html  # addresses shown, not raw scripts
