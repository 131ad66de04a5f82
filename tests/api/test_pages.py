"""The service's web pages without the internet (issue 14): ``/`` says what runs where and how
each actor starts; ``/docs`` is Swagger UI from vendored assets. Checked as served (TestClient)
and in a real browser — Debian's chromium driven by Playwright — against a real
``medtrail serve``, recording every request the browser makes: none may leave 127.0.0.1."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from api.pages import STATIC_DIR, SWAGGER_UI_VERSION
from tests.api.world import World
from tests.support.anvil import free_port
from tests.support.service_proc import REPO, wait_for

CHROMIUM = Path("/usr/bin/chromium")
VENDORED = STATIC_DIR / "swagger-ui"


# --------------------------------------------------------------------------- as served


def test_the_landing_page_says_what_runs_where(world: World) -> None:
    answer = world.client.get("/")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    page = answer.text
    deployment = world.ledger.deployment
    for fact in (
        "embedded",
        str(deployment.chain_id),
        deployment.audit_log,
        deployment.institution_registry,
        deployment.consent_registry,
    ):
        assert fact in page
    for path in ("/docs", "/openapi.json", "/problems", "/healthz", "/readyz", "/metrics"):
        assert f'href="{path}"' in page
    for actor in ("Institution", "Patient", "Regulator"):
        assert f">{actor}" in page
    assert 'lang="en"' in page
    assert 'name="viewport"' in page


def test_no_page_refers_to_another_host(world: World) -> None:
    """No asset of / or /docs is loaded from elsewhere (src, href, url(), the spec URL)."""
    for path in ("/", "/docs"):
        page = world.client.get(path).text
        refs = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page)
        refs += re.findall(r"""url:\s*['"]([^'"]+)['"]""", page)
        assert refs, path
        assert all(ref.startswith(("/", "#")) for ref in refs), (path, refs)


def test_the_docs_disable_swagger_uis_validator_badge(world: World) -> None:
    """Swagger UI would ask validator.swagger.io for a badge about a spec it can reach."""
    assert '"validatorUrl": null' in world.client.get("/docs").text


def test_the_vendored_assets_are_the_pinned_release_with_its_licence(world: World) -> None:
    sums = (VENDORED / "SHA256SUMS").read_text().splitlines()
    assert len(sums) >= 5
    for line in sums:
        digest, name = line.split()
        assert hashlib.sha256((VENDORED / name).read_bytes()).hexdigest() == digest, name
    assert "Apache License" in (VENDORED / "LICENSE").read_text()
    assert f"**{SWAGGER_UI_VERSION}**" in (VENDORED / "VENDORED.md").read_text()
    served = world.client.get("/static/swagger-ui/swagger-ui-bundle.js")
    assert served.status_code == 200
    assert served.content == (VENDORED / "swagger-ui-bundle.js").read_bytes()


def test_redoc_from_a_cdn_is_not_served(world: World) -> None:
    assert world.client.get("/redoc").status_code == 404


def test_the_pages_are_not_api_operations(world: World) -> None:
    paths = TestClient(world.app).get("/openapi.json").json()["paths"]
    assert "/" not in paths
    assert "/docs" not in paths


# --------------------------------------------------------------------------- in a browser


def _playwright() -> Any:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - .ci/run installs it
        pytest.skip("Playwright is not installed (pip install playwright)")
    if not CHROMIUM.exists():  # pragma: no cover - .ci/run installs it
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    return sync_playwright


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A real ``medtrail serve`` (embedded mode, its chain JSON-RPC on a free port): its base
    URL and what it printed at start."""
    tmp = tmp_path_factory.mktemp("serve")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDTRAIL_")}
    env.update(MEDTRAIL_DATABASE_URL=f"sqlite:///{tmp / 'ledger.db'}", MEDTRAIL_TRIAL_RPC_PORT="0")
    out = tmp / "serve.out"
    with out.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "serve", "--port", str(port)],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return process.poll() is not None and pytest.fail(out.read_text())

        try:
            wait_for("medtrail serve", up, 90, 0.2)
            yield base, out.read_text()
        finally:
            process.terminate()
            process.wait(timeout=30)


def _luminance(rgb: str) -> float:
    channels = [int(c) / 255 for c in re.findall(r"\d+", rgb)[:3]]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def _contrast(a: str, b: str) -> float:
    high, low = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_the_start_message_labels_the_chain_json_rpc_for_trying_only(
    served: tuple[str, str],
) -> None:
    _base, printed = served
    assert re.search(r"chain JSON-RPC at http://127\.0\.0\.1:\d+ \(for trying only", printed)
    assert "start here: http://127.0.0.1:" in printed


def test_in_a_browser_nothing_leaves_this_machine(served: tuple[str, str], tmp_path: Path) -> None:
    base, _printed = served
    operations = sum(
        len(methods) for methods in httpx.get(f"{base}/openapi.json").json()["paths"].values()
    )
    requests: list[str] = []
    with _playwright()() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            # A phone-sized screen: the landing page fits it, without sideways scrolling.
            phone = browser.new_context(viewport={"width": 360, "height": 740})
            page = phone.new_page()
            page.on("request", lambda r: requests.append(r.url))
            page.goto(f"{base}/")
            assert page.locator("h1").inner_text() == "medtrail"
            assert page.get_by_role("link", name="/docs").first.is_visible()
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
            chain_id = httpx.get(f"{base}/v1/deployment").json()["chainId"]
            assert str(chain_id) in page.locator("main").inner_text()
            assert "for trying only" in page.locator("main").inner_text()
            # Keyboard: the first Tab reaches the skip link, which is then shown.
            page.keyboard.press("Tab")
            assert page.evaluate("document.activeElement.textContent") == "Skip to the content"
            # Contrast: body text and links on the page's background, WCAG AA (4.5:1).
            colours = page.evaluate(
                """() => {
                    const s = e => getComputedStyle(e);
                    return {bg: s(document.body).backgroundColor, text: s(document.body).color,
                            link: s(document.querySelector('main a')).color,
                            pre: s(document.querySelector('pre')).backgroundColor};
                }"""
            )
            assert _contrast(colours["text"], colours["bg"]) >= 4.5
            assert _contrast(colours["link"], colours["bg"]) >= 4.5
            assert _contrast(colours["text"], colours["pre"]) >= 4.5
            page.screenshot(path=str(tmp_path / "landing.png"), full_page=True)
            phone.close()

            desktop = browser.new_context(viewport={"width": 1280, "height": 900})
            docs = desktop.new_page()
            docs.on("request", lambda r: requests.append(r.url))
            docs.goto(f"{base}/docs")
            docs.wait_for_selector(".opblock", timeout=60_000)
            assert docs.locator(".opblock").count() == operations
            assert docs.get_by_text("/v1/events", exact=True).first.is_visible()
            desktop.close()
        finally:
            browser.close()
    assert any(url.endswith("/swagger-ui-bundle.js") for url in requests)
    strangers = [url for url in requests if not url.startswith(f"{base}/")]
    assert strangers == []
