"""The dashboard in a real headless Chromium (Debian's /usr/bin/chromium, never mocked) against
the real app: log in, load a small real run, move the time slider and see the terminal colours
follow the run's ``/frames``, click a terminal for its timeline and ``explain``, draw a geofence
on the map and see the preview numbers equal ``POST /api/policy/preview``; a screenshot is saved
under the test's output directory."""

from __future__ import annotations

import json
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
WINDOW = ("2022-10-05T10:00:00Z", "2022-10-05T10:20:00Z")  # 21 one-minute steps, ~6 s to run
# a box between Dnipro and Kharkiv with terminals of both accounts (`army` has a contract)
FENCE = [(34.5, 48.0), (36.5, 48.0), (36.5, 49.0), (34.5, 49.0)]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="Debian's chromium is missing at /usr/bin/chromium "
                                       "(`make test` installs it)")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _serve(app):
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


ADMIN = ("admin", "admin-password-1")
APPROVER = ("approver", "approver-password-1")
CUSTOMER = ("army-viewer", "customer-password-1")


@pytest.fixture(scope="module")
def cheap_password_hashing():
    """argon2id with the cheapest parameters, as conftest's ``fast_password_hashing`` (module
    scope here: the app lives for the whole module)."""
    from argon2 import PasswordHasher

    from leotwin.store import repository

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(repository, "_HASHER",
                   PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
        yield


@pytest.fixture(scope="module")
def site(tmp_path_factory, cheap_password_hashing):
    """The real app on loopback with a SQLite store, users and the flagship run of 21 steps."""
    import leotwin
    from leotwin.config import Settings
    from leotwin.flagship import flagship_path
    from leotwin.scenario import load_scenario
    from leotwin.service import create_app
    from leotwin.store import Store

    root = tmp_path_factory.mktemp("dashboard")
    run_dir = root / "run"
    leotwin.run_flagship(run_dir, window=WINDOW, report=False)
    url = f"sqlite:///{root / 'service.sqlite'}"
    with Store.open(url) as store:  # the bootstrap admin, as `leotwin user add` makes it
        store.add_user(ADMIN[0], "admin", actor=ADMIN[0], password=ADMIN[1])
        # the flagship's policy history (accounts, terminals, contracts, geofences), as the demo
        sc = load_scenario(flagship_path(), overrides={"time": {"start": WINDOW[0],
                                                                "stop": WINDOW[1]}})
        for v in sc.policy().versions:
            store.record_policy(v.policy, author=v.author, reason=v.reason,
                                recorded_at=v.recorded_at)
    settings = Settings(data_dir=root / "data", database_url=url, secret_key="s" * 48)
    with _serve(create_app(settings)) as base, httpx.Client(base_url=base, timeout=60) as http:
        token = _token(http, *ADMIN)
        admin = {"Authorization": f"Bearer {token}"}
        for (name, password), role, account in [(APPROVER, "approver", None),
                                                (CUSTOMER, "customer", "army")]:
            r = http.post("/api/users", headers=admin, json={
                "name": name, "role": role, "account": account, "password": password})
            assert r.status_code == 201, r.text
        r = http.post("/api/runs", headers=admin, json={"run_dir": str(run_dir)})
        assert r.status_code == 202, r.text
        run = r.json()
        assert run["status"] == "done"
        yield {"url": base, "http": http, "admin": admin, "run": run}


def _token(http: httpx.Client, user: str, password: str) -> str:
    r = http.post("/api/auth/token", data={"username": user, "password": password})
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    context.close()
    assert not errors, f"JavaScript errors in the page: {errors}"


def _login(page, site, user: str, password: str, run_id: int):
    page.goto(f"{site['url']}/#run={run_id}")
    page.get_by_test_id("login-username").fill(user)
    page.get_by_test_id("login-password").fill(password)
    page.get_by_test_id("login-submit").click()
    page.wait_for_function("window.leotwin.runLoaded === true", timeout=30_000)


def _click_map(page, lon: float, lat: float, *, double: bool = False):
    box = page.get_by_test_id("map").bounding_box()
    xy = page.evaluate("p => window.leotwin.project(p)", [lon, lat])
    x, y = box["x"] + xy["x"], box["y"] + xy["y"]
    if double:
        page.mouse.dblclick(x, y)
    else:
        page.mouse.click(x, y)


def _move_slider(page, index: int) -> None:
    before = page.evaluate("window.leotwin.redrawCount")
    page.get_by_test_id("time-slider").fill(str(index))
    page.wait_for_function(f"window.leotwin.redrawCount > {before} && "
                           f"window.leotwin.timeIndex === {index}")


def test_slider_draws_the_states_of_frames_and_a_click_explains(site, page):
    http, admin, run = site["http"], site["admin"], site["run"]
    frames = http.get(f"/api/runs/{run['id']}/frames", headers=admin).json()
    codes, states, ids = frames["codes"], frames["states"], frames["terminals"]
    # the two steps whose states differ most
    first = codes[0]
    j = max(range(1, len(codes)), key=lambda k: sum(a != b for a, b in zip(first, codes[k],
                                                                           strict=True)))
    changed = [t for t, a, b in zip(ids, first, codes[j], strict=True) if a != b]
    assert changed, "the run's states never change; the slider test needs a run that does"

    _login(page, site, *ADMIN, run["id"])
    assert page.get_by_test_id("user-name").text_content().startswith("admin · admin")
    for k in (j, 0, j):
        _move_slider(page, k)
        drawn = page.evaluate("ids => ids.map(t => window.leotwin.stateAt(t))", ids)
        assert drawn == [states[c] for c in codes[k]], f"step {k}: drawn states differ"
        assert page.get_by_test_id("time-label").text_content().startswith(
            frames["times"][k][:16].replace("T", " "))
    # the rendered layer carries the same states (what the colour expression reads)
    rendered = page.evaluate("""() => {
        const out = {};
        for (const f of window.leotwin.map.queryRenderedFeatures({layers: ['terminals']}))
            out[f.properties.terminal] = f.state.c;
        return out; }""")
    assert rendered and all(codes[j][ids.index(t)] == c for t, c in rendered.items())
    assert page.evaluate("window.leotwin.lastRedrawMs") > 0
    _move_slider(page, 0)
    page.get_by_test_id("play-button").click()  # play advances the slider, pause stops it
    page.wait_for_function("window.leotwin.timeIndex >= 2")
    page.get_by_test_id("play-button").click()
    stopped = page.evaluate("window.leotwin.timeIndex")
    page.wait_for_timeout(700)
    assert page.evaluate("window.leotwin.timeIndex") == stopped
    _move_slider(page, j)

    # click a terminal cut by policy at step j: its timeline and explain (rule, author, reason)
    terms = http.get(f"/api/runs/{run['id']}/terminals", headers=admin).json()["features"]
    target = next(f for f in terms if states[codes[j][f["properties"]["index"]]] == "policy")
    lon, lat = target["geometry"]["coordinates"]
    page.evaluate("""p => new Promise(done => {
        const map = window.leotwin.map;
        map.once('idle', done);
        map.jumpTo({center: p, zoom: 10});
    })""", [lon, lat])
    _click_map(page, lon, lat)
    name = page.get_by_test_id("terminal-name")
    page.wait_for_function("document.querySelector('[data-testid=terminal-name]').textContent")
    clicked = name.text_content()
    at = frames["times"][j]
    x = http.get(f"/api/explain/{clicked}", params={"at": at}, headers=admin).json()
    page.wait_for_function("document.querySelector('[data-testid=explain-rule]').textContent")
    assert page.get_by_test_id("explain-rule").text_content().startswith(x["rule_id"] or "—")
    assert page.get_by_test_id("explain-author").text_content() == (x["rule_author"] or "—")
    assert page.get_by_test_id("explain-reason").text_content() == (x["rule_reason"] or "—")
    assert page.get_by_test_id("explain-decision").text_content().startswith(x["decision"])
    tl = http.get(f"/api/runs/{run['id']}/terminals/{clicked}/timeline", headers=admin).json()
    rows = page.get_by_test_id("terminal-intervals").locator("tbody tr")
    rows.first.wait_for()
    assert rows.count() == max(len(tl["intervals"]), 1)


def test_drawn_geofence_preview_equals_the_api_and_apply_asks_an_approver(site, page, tmp_path):
    http, admin, run = site["http"], site["admin"], site["run"]
    _login(page, site, *ADMIN, run["id"])
    page.get_by_test_id("draw-start").click()
    for k, (lon, lat) in enumerate(FENCE):
        _click_map(page, lon, lat, double=k == len(FENCE) - 1)  # a double-click closes it
    assert page.get_by_test_id("draw-status").text_content() == "Polygon with 4 vertices"
    page.get_by_test_id("gf-id").fill("G-BROWSER-TEST")
    page.get_by_test_id("gf-reason").fill("browser test")
    page.get_by_test_id("gf-override-contracts").check()
    page.get_by_test_id("gf-preview").click()
    page.wait_for_function("window.leotwin.lastPreview !== null")
    body = page.evaluate("window.leotwin.lastPreviewBody")
    ring = body["add_geofences"][0]["geometry"]["coordinates"][0]
    assert len(ring) == 5 and ring[0] == ring[-1]
    for (lon, lat), (x, y) in zip(FENCE, ring[:4], strict=True):
        assert abs(x - lon) < 0.02 and abs(y - lat) < 0.02
    assert body["window_start"] == run["start"] and body["window_end"] == run["stop"]

    direct = http.post("/api/policy/preview", json=body, headers=admin)
    assert direct.status_code == 200, direct.text
    want = direct.json()

    def shown(testid):
        loc = page.get_by_test_id(testid)
        return loc.text_content(), json.loads(loc.get_attribute("data-value"))

    assert shown("preview-terminals") == (str(want["terminals_affected"]),
                                          want["terminals_affected"])
    assert shown("preview-accounts")[1] == want["accounts_affected"]
    assert shown("preview-contracts")[1] == want["contracts_affected"]
    assert shown("preview-hours-lost") == (f"{want['terminal_hours_lost']:.2f}",
                                           want["terminal_hours_lost"])
    assert shown("preview-credits") == (f"{want['credits_owed']:.2f}", want["credits_owed"])
    assert shown("preview-breach")[1] == want["breach"]
    # overriding contracts, the box cuts contracted army terminals: a breach, credits owed
    assert want["terminals_affected"] > 0 and want["terminal_hours_lost"] > 0
    assert want["breach"] and want["credits_owed"] > 0 and "army" in want["accounts_affected"]

    page.get_by_test_id("preview").scroll_into_view_if_needed()
    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot))
    print(f"dashboard screenshot: {shot}")  # noqa: T201

    # Apply: the breach is refused (409) until a second person approves
    page.get_by_test_id("gf-apply-reason").fill("browser test of the two-person rule")
    page.get_by_test_id("gf-apply").click()
    page.get_by_test_id("approver-username").wait_for(state="visible")
    page.get_by_test_id("approver-username").fill(APPROVER[0])
    page.get_by_test_id("approver-password").fill(APPROVER[1])
    page.get_by_test_id("approver-submit").click()
    result = page.get_by_test_id("apply-result")
    result.wait_for(state="visible")
    assert f"approved by {APPROVER[0]}" in result.text_content()
    fences = http.get("/api/geofences", headers=admin).json()["features"]
    assert "G-BROWSER-TEST" in {f["properties"]["id"] for f in fences}


def test_a_customer_sees_only_its_own_terminals(site, page):
    http, admin, run = site["http"], site["admin"], site["run"]
    feats = http.get(f"/api/runs/{run['id']}/terminals", headers=admin).json()["features"]
    own = {f["properties"]["terminal"] for f in feats if f["properties"]["account"] == "army"}
    assert 0 < len(own) < len(feats)
    _login(page, site, *CUSTOMER, run["id"])
    assert page.get_by_test_id("user-name").text_content().endswith("customer · army")
    counts = page.evaluate("window.leotwin.drawnCounts()")
    assert sum(counts.values()) == len(own)
    # the customer's own /frames (its columns only) is what its map draws
    mine = {"Authorization": f"Bearer {_token(http, *CUSTOMER)}"}
    frames = http.get(f"/api/runs/{run['id']}/frames", headers=mine).json()
    assert set(frames["terminals"]) == own
    last = len(frames["times"]) - 1
    _move_slider(page, last)
    drawn = page.evaluate("ids => ids.map(t => window.leotwin.stateAt(t))", frames["terminals"])
    assert drawn == [frames["states"][c] for c in frames["codes"][last]]
    other = next(f["properties"]["terminal"] for f in feats
                 if f["properties"]["account"] != "army")
    assert page.evaluate("t => window.leotwin.stateAt(t)", other) is None
    assert not page.get_by_test_id("geofence-editor").is_visible()
