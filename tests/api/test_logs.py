"""Logs (issue 14): an access log by default, a request id on every line and in every answer
(an incoming well-formed ``X-Request-ID`` kept, else a new one), structured JSON lines on
request, and no secrets, record references or patients' addresses in them."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from api.logs import ACCESS_LOG, JsonFormatter, TextFormatter, request_id_of
from ledger.redact import Redactor
from tests.api.world import World, bearer, hex0x
from tests.support.anvil import free_port
from tests.support.service_proc import REPO, wait_for


def test_a_well_formed_request_id_is_kept_and_echoed(world: World) -> None:
    answer = world.client.get("/healthz", headers={"X-Request-ID": "lb-7f3a:0001"})
    assert answer.headers["X-Request-ID"] == "lb-7f3a:0001"


@pytest.mark.parametrize(
    "sent", [b"", b"x" * 129, b"two words", b"inject\xe2\x80\xa8line", b'a"b', b"<script>"]
)
def test_a_malformed_request_id_is_replaced(world: World, sent: bytes) -> None:
    answer = world.client.get("/healthz", headers={"X-Request-ID": sent})
    echoed = answer.headers["X-Request-ID"]
    assert echoed.encode() != sent
    assert re.fullmatch(r"[0-9a-f]{32}", echoed)


def test_every_answer_has_its_own_id(world: World) -> None:
    ids = {world.client.get("/healthz").headers["X-Request-ID"] for _ in range(5)}
    assert len(ids) == 5


def test_a_problem_document_quotes_the_request_id(world: World) -> None:
    answer = world.client.get(
        f"/v1/records/{hex0x(world.record_b)}/trail",
        headers={**world.headers("institution_a"), "X-Request-ID": "ticket-4711"},
    )
    assert answer.status_code == 404
    assert answer.json()["requestId"] == "ticket-4711"
    assert answer.headers["X-Request-ID"] == "ticket-4711"


def test_the_access_log_has_one_line_per_request_without_personal_data(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    record = hex0x(world.record_a)
    with caplog.at_level(logging.INFO, logger=ACCESS_LOG):
        answer = world.client.get(
            f"/v1/records/{record}/trail?limit=1",
            headers={**world.headers("patient_p"), "X-Request-ID": "trail-1"},
        )
    assert answer.status_code == 200
    lines = [r for r in caplog.records if r.name == ACCESS_LOG]
    assert len(lines) == 1
    line = lines[0]
    assert line.request_id == "trail-1"  # type: ignore[attr-defined]
    assert (line.method, line.route, line.status) == (  # type: ignore[attr-defined]
        "GET",
        "/v1/records/{recordRef}/trail",
        200,
    )
    text = line.getMessage()
    assert record not in text
    assert record[2:] not in text
    assert world.keys["patient_p"] not in text
    assert "limit" not in text


def test_log_lines_inside_a_request_carry_its_id(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """A line logged by a route while it serves a request — in the thread pool Starlette runs
    sync routes in — has the request's id."""

    def noisy() -> dict[str, str]:
        logging.getLogger("medtrail.test").warning("inside the route")
        return {}

    world.app.add_api_route("/_test/noisy", noisy, include_in_schema=False)
    with caplog.at_level(logging.INFO):
        world.client.get("/_test/noisy", headers={"X-Request-ID": "probe-9"})
    inside = [r for r in caplog.records if r.getMessage() == "inside the route"]
    assert len(inside) == 1
    assert inside[0].request_id == "probe-9"  # type: ignore[attr-defined]


def _record(message: str, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("medtrail.test", logging.WARNING, __file__, 1, message, (), None)
    record.__dict__.update(extra)
    return record


def test_json_lines_are_objects_with_the_request_id_and_redacted() -> None:
    redactor = Redactor.of(urls=["https://node.example/v3/0123456789abcdef"])
    line = JsonFormatter(redactor).format(
        _record(
            "the chain at https://node.example/v3/0123456789abcdef is down",
            request_id="req-1",
            route="/readyz",
        )
    )
    entry = json.loads(line)
    assert entry["requestId"] == "req-1"
    assert entry["route"] == "/readyz"
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "medtrail.test"
    assert "0123456789abcdef" not in line
    assert "https://node.example:443" in entry["message"]


def test_text_lines_show_the_request_id() -> None:
    line = TextFormatter().format(_record("hello", request_id="req-2"))
    assert "[req-2]: hello" in line


def test_request_id_of() -> None:
    assert request_id_of("abc", "new") == "abc"
    assert request_id_of(None, "new") == "new"
    assert request_id_of("a b", "new") == "new"


def test_serve_logs_json_with_request_ids_and_no_secrets(tmp_path: Path) -> None:
    """``medtrail serve --log-format json`` as a process: every line it writes is a JSON
    object; the access log's lines carry the id the client sent; the regulator credential it
    prints never appears in a log line."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDTRAIL_")}
    env.update(
        MEDTRAIL_DATABASE_URL=f"sqlite:///{tmp_path / 'ledger.db'}",
        MEDTRAIL_TRIAL_RPC_PORT="-1",
    )
    log_path = tmp_path / "serve.err"
    with log_path.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "serve", "--port", str(port), "--log-format", "json"],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
        )
        try:
            base = f"http://127.0.0.1:{port}"

            def up() -> bool:
                try:
                    return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
                except httpx.HTTPError:
                    return False

            wait_for("the service", up, 90, 0.2)
            answer = httpx.get(
                f"{base}/v1/checkpoints", headers={"X-Request-ID": "from-the-test"}, timeout=10
            )
            assert answer.headers["X-Request-ID"] == "from-the-test"
            bad = httpx.get(
                f"{base}/v1/api-keys", headers=bearer("mtk_0000000000000000.nope"), timeout=10
            )
            assert bad.status_code == 401
            time.sleep(0.5)
        finally:
            process.terminate()
            stdout, _ = process.communicate(timeout=30)
    printed = stdout.decode()
    token = re.search(r"MEDTRAIL_API_KEY=(mtk_\S+)", printed)
    assert token is not None, printed
    lines = [line for line in log_path.read_text().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    access = [e for e in entries if e["logger"] == ACCESS_LOG]
    mine = [e for e in access if e.get("requestId") == "from-the-test"]
    assert len(mine) == 1
    assert mine[0]["route"] == "/v1/checkpoints"
    assert mine[0]["status"] == 200
    assert any(e["status"] == 401 and e["route"] == "/v1/api-keys" for e in access)
    assert all(e.get("requestId") for e in access)
    text = log_path.read_text()
    assert token.group(1) not in text
    assert "nope" not in text
