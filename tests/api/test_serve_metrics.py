"""The real ``payouts serve`` process with ``[metrics] listen``: /metrics on its own address
(with the node's status, registered by the composition root), 404 on the API's, and the pages
and their vendored assets on the API's address."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from api.routers.pages import STATIC
from tests.api.test_cli import _free_port, _wait_http


def test_metrics_on_their_own_address_and_pages_on_the_api(tmp_path: Path) -> None:
    api, prom = _free_port(), _free_port()
    cfg = tmp_path / "payouts.toml"
    cfg.write_text(f"""\
network = "regtest"
data_dir = "{tmp_path / 'data'}"

[pool]
payout_script = "0014{'11' * 20}"

[api]
port = {api}

[metrics]
listen = "127.0.0.1:{prom}"
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYOUTS_")}
    proc = subprocess.Popen([sys.executable, "-m", "payouts", "serve", "--config", str(cfg)],
                            env=env, stderr=subprocess.PIPE, text=True)
    try:
        _wait_http(proc, f"http://127.0.0.1:{api}/v1/health")
        text = _wait_http(proc, f"http://127.0.0.1:{prom}/metrics").text
        assert "payouts_window_shares" in text
        for _ in range(100):  # the node's status is registered once the index task runs
            if "payouts_node_reachable 1.0" in text:
                break
            text = httpx.get(f"http://127.0.0.1:{prom}/metrics", timeout=5).text
        assert "payouts_node_reachable 1.0" in text and "payouts_node_tip_height" in text
        r = httpx.get(f"http://127.0.0.1:{api}/metrics", timeout=5)
        assert r.status_code == 404 and r.json()["code"] == "metrics-elsewhere"
        assert httpx.get(f"http://127.0.0.1:{api}/miners", timeout=5).status_code == 200
        assert httpx.get(f"http://127.0.0.1:{api}/static/dashboard.css",
                         timeout=5).status_code == 200
        # make install vendors uPlot (CI always has it; a bare pip install may not).
        if os.environ.get("CI") or (STATIC / "vendor" / "uPlot.iife.min.js").is_file():
            js = httpx.get(f"http://127.0.0.1:{api}/static/vendor/uPlot.iife.min.js", timeout=5)
            assert js.status_code == 200 and "uPlot" in js.text
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert f"serving /metrics on 127.0.0.1:{prom}" in err
