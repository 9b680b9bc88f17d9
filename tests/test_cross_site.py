"""Another site's page attacks a studio visitor in Chromium: two HTTPS sites on loopback, third-party cookies
allowed, against a studio on its own site and one embedded as on a Space."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, sync_playwright
from redis import Redis

from mochi_app.accounts import AccountStore
from mochi_app.config import Settings
from mochi_app.ui import TITLE
from tests.harness import Child, free_port, start_child, worker_env
from tests.test_browser import CHROMIUM_FLAGS, chromium_path
from tests.tls_sites import write_certificate

pytestmark = pytest.mark.slow  # starts processes: see README, "Tests"

STUDIO, ATTACKER = "studio.test", "attacker.test"  # two sites: neither is a subdomain of the other
TINY = {"num_frames": 7, "height": 64, "width": 64, "num_inference_steps": 2}
# Each attack the page tries, by name; each must read nothing and change nothing.
ATTACK_PAGE = """<!doctype html><html><body><h1>Win a prize</h1>{iframe}<script>
const studio = "{studio}";
window.results = {{}};
async function attempt(name, run) {{
  try {{ window.results[name] = String(await run()); }} catch (error) {{ window.results[name] = "refused: " + error; }}
}}
const read = (path) => fetch(studio + path, {{credentials: "include"}}).then((answer) => answer.text());
const blind = (path, body) => fetch(studio + path, {{method: "POST", mode: "no-cors", credentials: "include",
  headers: {{"content-type": "text/plain"}}, body: JSON.stringify(body)}}).then(() => "sent");
(async () => {{
  await attempt("read /session", () => read("/session"));
  await attempt("read the page's jobs event", async () => {{
    const call = await fetch(studio + "/gradio_api/call/jobs", {{method: "POST", credentials: "include",
      headers: {{"content-type": "application/json"}}, body: JSON.stringify({{data: [20, null]}})}});
    return read("/gradio_api/call/jobs/" + (await call.json()).event_id);
  }});
  await attempt("read the job list", () => read("/jobs/{victim}"));
  await attempt("plant a job by REST", () => blind("/generate", {{prompt: "planted by another site", ...{tiny}}}));
  await attempt("plant a job by the Gradio API", () => blind("/gradio_api/call/submit", {{data: ["planted"]}}));
  await attempt("sign the visitor in as the attacker", () => blind("/session", {{api_key: "{attacker_key}"}}));
  window.done = true;
}})();
</script></body></html>"""


@dataclass
class Sites:
    studio_url: str
    attacker_url: str
    pages: Path  # what the attacker's site serves
    accounts: AccountStore


def start_https(command: list[str], env: dict[str, str], log: Path, url: str, host: str) -> Child:
    def answers(child: Child) -> bool:
        try:
            return httpx.get(url, headers={"host": host}, verify=False, timeout=2).status_code < 500
        except httpx.HTTPError:
            return False

    return start_child(command, env, log, answers)


@pytest.fixture(scope="module", params=["own site", "embedded, as on a Space"])
def sites(
    request: pytest.FixtureRequest, module_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Sites]:
    folder = tmp_path_factory.mktemp("sites")
    cert_file, key_file = write_certificate(folder, [STUDIO, ATTACKER])
    studio_port, attacker_port = free_port(), free_port()
    space = {"SYSTEM": "spaces", "SPACE_ID": "studio/mochi"} if request.param.startswith("embedded") else {}
    settings = replace(module_settings, guests="on")
    env = worker_env(settings, MOCHI_HOST="0.0.0.0", MOCHI_ALLOWED_HOSTS=STUDIO, **space)
    tls = [sys.executable, "-m", "tests.tls_sites"]
    studio = start_https(
        [*tls, "studio", str(studio_port), str(cert_file), str(key_file)],
        env,
        folder / "studio.log",
        f"https://127.0.0.1:{studio_port}/healthz",
        STUDIO,
    )
    pages = folder / "pages"
    pages.mkdir()
    attacker = start_https(
        [*tls, "static", str(attacker_port), str(cert_file), str(key_file), str(pages)],
        worker_env(settings),
        folder / "attacker.log",
        f"https://127.0.0.1:{attacker_port}/",
        ATTACKER,
    )
    accounts = AccountStore(Redis.from_url(settings.redis_url or ""))
    yield Sites(f"https://{STUDIO}:{studio_port}", f"https://{ATTACKER}:{attacker_port}", pages, accounts)
    studio.stop()
    attacker.stop()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[BrowserContext]:
    """Chromium with a profile that allows third-party cookies, as the attack assumed (Chromium now blocks
    them by default, and a visitor may have allowed them again)."""
    profile = tmp_path / "profile"
    (profile / "Default").mkdir(parents=True)
    preferences = {"profile": {"cookie_controls_mode": 0, "block_third_party_cookies": False}}
    (profile / "Default" / "Preferences").write_text(json.dumps(preferences))
    resolve = f"--host-resolver-rules=MAP {STUDIO} 127.0.0.1, MAP {ATTACKER} 127.0.0.1"
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=chromium_path(), args=[*CHROMIUM_FLAGS, resolve], ignore_https_errors=True
        )
        yield context
        context.close()


def studio_fetch(page: Page, path: str, body: dict[str, Any] | None = None) -> Any:
    """A request from the studio's own page (same origin), as the visitor's browser makes it."""
    script = """async ([path, body]) => {
      const options = body === null ? {} : {method: "POST", headers: {"content-type": "application/json"},
        body: JSON.stringify(body)};
      return await (await fetch(path, options)).json();
    }"""
    return page.evaluate(script, [path, body])


def test_another_sites_page_reads_nothing_and_plants_nothing(browser: BrowserContext, sites: Sites) -> None:
    page = browser.new_page()
    page.goto(sites.studio_url + "/")
    page.get_by_text("You are a guest").wait_for(timeout=30_000)
    secret = f"a private prompt {uuid.uuid4().hex[:8]}"
    victim = studio_fetch(page, "/session")["account"]
    assert victim and victim.startswith("guest-")
    assert studio_fetch(page, "/generate", {"prompt": secret, **TINY})["status"] == "PENDING"
    attacker_account, attacker_key = sites.accounts.create(f"attacker-{uuid.uuid4().hex[:8]}")

    iframe = f'<iframe id="studio" src="{sites.studio_url}/" width="900" height="600"></iframe>'
    attack = ATTACK_PAGE.format(
        iframe=iframe, studio=sites.studio_url, victim=victim, tiny=json.dumps(TINY), attacker_key=attacker_key
    )
    (sites.pages / "prize.html").write_text(attack)
    page.goto(f"{sites.attacker_url}/prize.html")
    page.wait_for_function("window.done === true", timeout=60_000)
    results: dict[str, str] = page.evaluate("window.results")
    assert len(results) == 6, results
    framed = page.frame_locator("#studio").locator("body")
    framed.get_by_text(TITLE).first.wait_for(timeout=30_000)
    seen_by_attacker = json.dumps(results) + framed.inner_text()
    assert secret not in seen_by_attacker and victim not in seen_by_attacker, results

    # Back on the studio: the visitor is still itself, with its own job and nothing planted.
    page.goto(sites.studio_url + "/")
    assert studio_fetch(page, "/session")["account"] == victim
    prompts = [job["request"]["prompt"] for job in studio_fetch(page, f"/jobs/{victim}")["jobs"]]
    assert prompts == [secret], prompts
    attacker_jobs = httpx.get(
        f"https://127.0.0.1:{sites.studio_url.rsplit(':', 1)[1]}/jobs/{attacker_account.name}",
        headers={"host": STUDIO, "authorization": f"Bearer {attacker_key}"},
        verify=False,
    ).json()
    assert attacker_jobs["jobs"] == []
