"""The dashboard in a real headless Chromium (Debian's /usr/bin/chromium, never mocked) against
the real app: log in, load a small real run, move the time slider and see the terminal colours
follow the run's ``/frames`` (the drawn feature states and the pixels of a screenshot at the
terminals' projected positions), click a terminal for its timeline and ``explain``, draw a
geofence on the map and see the preview numbers equal ``POST /api/policy/preview``, have a
breaching change refused until an approver approves the pending change, see a customer get
only its own terminals, and see a run too large for one ``/frames`` answer thinned with
``every``. Every request a page makes must stay on the local server (offline by construction);
screenshots are saved under the tests' output directories."""

from __future__ import annotations

import io
import json
import math
import shutil
from datetime import datetime

import httpx
import numpy as np
import pytest

from browser import CHROMIUM, launch_chromium, serve

WINDOW = ("2022-10-05T10:00:00Z", "2022-10-05T10:20:00Z")  # 21 one-minute steps, ~6 s to run
# a box between Dnipro and Kharkiv with terminals of both accounts (`army` has a contract)
FENCE = [(34.5, 48.0), (36.5, 48.0), (36.5, 49.0), (34.5, 49.0)]
# the documented palette (dashboard/README.md): Okabe & Ito's colour-blind-safe colours
PALETTE = {"served": "#009E73", "degraded": "#F0E442", "no_coverage": "#000000",
           "policy": "#D55E00", "satellite_failure": "#0072B2", "no_backhaul": "#56B4E9",
           "jamming": "#CC79A7", "congestion": "#E69F00"}
COLOUR_TOLERANCE = 24  # per RGB channel, out of 255: software GL's rounding, not antialiasing

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="Debian's chromium is missing at /usr/bin/chromium "
                                       "(`make test` installs it)")


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
    settings = Settings(data_dir=root / "data", database_url=url, secret_key="s" * 48,
                        run_roots=[root])  # where an admin may register run directories
    with serve(create_app(settings)) as base, httpx.Client(base_url=base, timeout=60) as http:
        token = _token(http, *ADMIN)
        admin = {"Authorization": f"Bearer {token}"}
        for (name, password), role, account in [(APPROVER, "approver", None),
                                                (CUSTOMER, "customer", "army")]:
            r = http.post("/api/users", headers=admin, json={
                "name": name, "role": role, "account": account, "password": password})
            assert r.status_code == 201, r.text
        r = http.post("/api/runs", headers=admin, json={"run_dir": str(run_dir)})
        assert r.status_code in (201, 202), r.text  # a finished run registered
        run = r.json()
        assert run["status"] == "done"
        yield {"url": base, "http": http, "admin": admin, "run": run, "root": root,
               "run_dir": run_dir}


def _token(http: httpx.Client, user: str, password: str) -> str:
    r = http.post("/api/auth/token", data={"username": user, "password": password})
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = launch_chromium(pw)
        yield b
        b.close()


@pytest.fixture
def page_requests() -> list:
    """Every request the test's page makes (Playwright ``Request`` objects), in order."""
    return []


@pytest.fixture
def page(browser, site, page_requests):
    """A fresh page; afterwards no JavaScript error, and no request off the local server."""
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("request", lambda r: page_requests.append(r))
    yield pg
    context.close()
    assert not errors, f"JavaScript errors in the page: {errors}"
    assert page_requests, "no request was recorded"
    assert not _off_site(page_requests, site["url"]), (
        f"requests left the local server: {_off_site(page_requests, site['url'])}")


def _off_site(requests, base: str) -> list[str]:
    """URLs of ``requests`` that are not the app's own (``data:``/``blob:`` of the page are)."""
    own = (f"{base}/", "data:", f"blob:{base}/")
    return [r.url for r in requests if not r.url.startswith(own)]


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


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[k:k + 2], 16) for k in (1, 3, 5))


def _isolated(page, feats, *, clearance_px: float = 12.0) -> dict[str, tuple[float, float]]:
    """Screen positions (map container pixels, from ``map.project`` through the test hook) of
    the terminals whose centre is well inside the map, away from its controls, and at least
    ``clearance_px`` from every other terminal's centre. At the run's fitted zoom (~6.3) a
    terminal is a disc of radius ~4.6 px with a ~0.9 px white ring: 12 px apart, no other disc
    or antialiased edge reaches it, and its centre pixel is its own colour."""
    width, height = page.evaluate(
        "() => { const c = window.leotwin.map.getContainer(); "
        "return [c.clientWidth, c.clientHeight]; }")
    located = [f for f in feats if f["geometry"]]
    xy = page.evaluate("cs => cs.map(c => window.leotwin.project(c))",
                       [f["geometry"]["coordinates"] for f in located])
    pts = np.array([(p["x"], p["y"]) for p in xy])
    x, y = pts[:, 0], pts[:, 1]
    inside = (x >= 30) & (x <= width - 30) & (y >= 30) & (y <= height - 40)
    inside &= ~((x > width - 70) & (y < 110))  # clear of the zoom buttons
    out = {}
    for k in np.flatnonzero(inside):
        d = np.hypot(x - x[k], y - y[k])
        d[k] = np.inf
        if d.min() >= clearance_px:
            out[located[k]["properties"]["terminal"]] = (float(x[k]), float(y[k]))
    return out


def _assert_pixels_match_states(page, where: dict[str, tuple[float, float]],
                                want: dict[str, str]) -> None:
    """The screenshot pixel at each terminal's projected centre has its state's palette colour."""
    from PIL import Image

    shot = Image.open(io.BytesIO(page.get_by_test_id("map").screenshot())).convert("RGB")
    wrong = []
    for t, (x, y) in where.items():
        got = shot.getpixel((int(x), int(y)))
        exp = _rgb(PALETTE[want[t]])
        if max(abs(a - b) for a, b in zip(got, exp, strict=True)) > COLOUR_TOLERANCE:
            wrong.append(f"{t} ({want[t]}) at ({x:.1f}, {y:.1f}): {got} != {exp}")
    assert not wrong, "drawn colours differ from the states' palette: " + "; ".join(wrong)


def test_slider_draws_the_states_of_frames_and_a_click_explains(site, page, page_requests):
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

    # the colours on screen: pixels of a screenshot at terminals drawn apart from the others
    assert page.evaluate("window.leotwin.palette") == PALETTE
    terms = http.get(f"/api/runs/{run['id']}/terminals", headers=admin).json()["features"]
    assert page.evaluate("window.leotwin.map.getZoom()") < 7.5  # the clearance's premise
    free = _isolated(page, terms)
    state_at = {k: dict(zip(ids, (states[c] for c in codes[k]), strict=True)) for k in (0, j)}
    # a few per state, those whose state changes between the two steps first
    picks: dict[str, tuple[float, float]] = {}
    per_state: dict[str, int] = {}
    for t in sorted(free, key=lambda t: (state_at[0][t] == state_at[j][t], t)):
        if per_state.get(state_at[j][t], 0) < 3 and len(picks) < 10:
            picks[t] = free[t]
            per_state[state_at[j][t]] = per_state.get(state_at[j][t], 0) + 1
    assert len(per_state) >= 2, f"too few isolated terminals of distinct states: {per_state}"
    assert any(state_at[0][t] != state_at[j][t] for t in picks), "no isolated one changes state"
    _assert_pixels_match_states(page, picks, state_at[j])
    _move_slider(page, 0)
    _assert_pixels_match_states(page, picks, state_at[0])
    page.get_by_test_id("play-button").click()  # play advances the slider, pause stops it
    page.wait_for_function("window.leotwin.timeIndex >= 2")
    page.get_by_test_id("play-button").click()
    stopped = page.evaluate("window.leotwin.timeIndex")
    page.wait_for_timeout(700)
    assert page.evaluate("window.leotwin.timeIndex") == stopped
    _move_slider(page, j)

    # click a terminal cut by policy at step j, one drawn apart from the others (the click hits
    # it and nothing else): its timeline and explain (rule, author, reason)
    target = next(t for t in sorted(free) if state_at[j][t] == "policy")
    lon, lat = next(f["geometry"]["coordinates"] for f in terms
                    if f["properties"]["terminal"] == target)
    _click_map(page, lon, lat)
    name = page.get_by_test_id("terminal-name")
    page.wait_for_function("document.querySelector('[data-testid=terminal-name]').textContent")
    clicked = name.text_content()
    assert clicked == target
    assert page.get_by_test_id("terminal-state").text_content() == "cut: policy (geofence / rule)"
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

    # offline: the map's layers, the run and the bundle came from the app itself, nothing else
    urls = [r.url for r in page_requests]
    for name in ("countries", "oblasts", "gateways", "pops"):
        assert f"{site['url']}/api/layers/{name}" in urls
    assert any(u.startswith(f"{site['url']}/assets/maplibre-") for u in urls)
    assert _off_site(page_requests, site["url"]) == []


def test_drawn_geofence_preview_equals_the_api_and_apply_asks_an_approver(site, page,
                                                                         page_requests,
                                                                         tmp_path):
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

    # Apply: the breach is refused (409) and kept as a pending change until a second person
    # approves it with their own account and reason; then the editor's retry applies it
    page.get_by_test_id("gf-apply-reason").fill("browser test of the two-person rule")
    page.get_by_test_id("gf-apply").click()
    dialog = page.get_by_test_id("approval-dialog")
    dialog.wait_for(state="visible")
    change_id = page.get_by_test_id("approval-change-id").text_content()
    assert change_id
    pending = http.get(f"/api/policy/changes/{change_id}", headers=admin)
    assert pending.status_code == 200, pending.text
    assert pending.json()["status"] == "pending" and pending.json()["author"] == ADMIN[0]
    assert "G-BROWSER-TEST" not in _fence_ids(http, admin)
    # the author cannot approve their own change: the dialog says why and stays open
    page.get_by_test_id("approver-username").fill(ADMIN[0])
    page.get_by_test_id("approver-password").fill(ADMIN[1])
    page.get_by_test_id("approver-reason").fill("my own change")
    page.get_by_test_id("approver-submit").click()
    page.get_by_test_id("approval-error").wait_for(state="visible")
    assert dialog.is_visible() and page.get_by_test_id("approver-password").input_value() == ""
    assert http.get(f"/api/policy/changes/{change_id}", headers=admin).json()["status"] == (
        "pending")
    page.get_by_test_id("approver-username").fill(APPROVER[0])
    page.get_by_test_id("approver-password").fill(APPROVER[1])
    page.get_by_test_id("approver-reason").fill("accepted: browser test")
    page.screenshot(path=str(tmp_path / "approval.png"))
    page.get_by_test_id("approver-submit").click()
    result = page.get_by_test_id("apply-result")
    result.wait_for(state="visible")
    assert f"approved by {APPROVER[0]}" in result.text_content()
    assert not dialog.is_visible()
    assert "G-BROWSER-TEST" in _fence_ids(http, admin)
    used = http.get(f"/api/policy/changes/{change_id}", headers=admin).json()
    assert (used["status"], used["approver"], used["approval_reason"]) == (
        "used", APPROVER[0], "accepted: browser test")

    # the approver's token served the approval alone; the apply and the session are the editor's
    sent = [r for r in page_requests if r.method == "POST" and "/api/" in r.url]
    approve = [r for r in sent if r.url.endswith(f"/api/policy/changes/{change_id}/approve")]
    applies = [r for r in sent if r.url.endswith("/api/policy/apply")]
    assert len(approve) == 2 and len(applies) == 2  # the author's refused attempt, the approver's
    approve = approve[1:]
    assert json.loads(approve[0].post_data) == {"reason": "accepted: browser test"}
    assert json.loads(applies[0].post_data).get("approval_id") is None
    assert json.loads(applies[1].post_data)["approval_id"] == change_id
    editor_auth = applies[0].headers["authorization"]
    assert applies[1].headers["authorization"] == editor_auth
    assert approve[0].headers["authorization"] != editor_auth
    me = page.evaluate("""() => fetch('/api/users/me', {headers: {Authorization:
        'Bearer ' + sessionStorage.getItem('leotwin.token')}}).then(r => r.json())""")
    assert me["name"] == ADMIN[0]
    stored = page.evaluate("() => Object.keys(sessionStorage).concat(Object.keys(localStorage))")
    assert stored == ["leotwin.token"]


def _fence_ids(http: httpx.Client, headers: dict) -> set[str]:
    fences = http.get("/api/geofences", headers=headers).json()["features"]
    return {f["properties"]["id"] for f in fences}


def test_a_customer_sees_only_its_own_terminals(site, page, page_requests):
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
    # and its dashboard asks for nothing a customer may not see (no 403 on operator resources)
    refused = [(r.url, r.response().status) for r in page_requests
               if "/api/" in r.url and r.response() and r.response().status >= 400]
    assert refused == []


def test_a_large_run_is_thinned_with_every(site, page, page_requests):
    """Past a budget of (steps × terminals) cells the dashboard asks ``/frames?every=k``; the
    budget is lowered through the ``maxFrameCells`` hook so that the small run counts as large."""
    http, admin, run = site["http"], site["admin"], site["run"]
    steps = round((_epoch(run["stop"]) - _epoch(run["start"])) / run["step_s"]) + 1
    budget = math.ceil(steps * run["n_terminals"] / 3)  # → every = 3
    token = _token(http, *ADMIN)
    page.add_init_script(f"window.leotwin = {{maxFrameCells: {budget}}};"
                         f"sessionStorage.setItem('leotwin.token', {json.dumps(token)});")
    page.goto(f"{site['url']}/#run={run['id']}")
    page.wait_for_function("window.leotwin.runLoaded === true", timeout=30_000)
    assert page.evaluate("window.leotwin.framesEvery") == 3
    assert f"{site['url']}/api/runs/{run['id']}/frames?every=3" in [r.url for r in page_requests]
    thin = http.get(f"/api/runs/{run['id']}/frames", headers=admin, params={"every": 3}).json()
    assert len(thin["times"]) == math.ceil(steps / 3)
    assert page.get_by_test_id("time-slider").get_attribute("max") == str(len(thin["times"]) - 1)
    _move_slider(page, 2)
    drawn = page.evaluate("ids => ids.map(t => window.leotwin.stateAt(t))", thin["terminals"])
    assert drawn == [thin["states"][c] for c in thin["codes"][2]]
    assert page.evaluate("window.leotwin.currentTime()") == thin["times"][2]


def test_a_run_the_server_finds_too_large_is_thinned_as_it_says(site, page, page_requests,
                                                                monkeypatch):
    """The service refuses a ``/frames`` answer over its cell limit (413 naming the least
    ``every``); the dashboard retries with that ``every``. The limit is lowered so that a copy
    of the small run (a fresh registration: no cached answers) is over it."""
    from leotwin.service import results

    if not hasattr(results, "MAX_FRAME_CELLS"):
        pytest.skip("this service has no /frames size limit")
    http, admin, run = site["http"], site["admin"], site["run"]
    copy = site["root"] / "run-copy"
    if not copy.exists():
        shutil.copytree(site["run_dir"], copy)
    r = http.post("/api/runs", headers=admin, json={"run_dir": str(copy), "name": "copy"})
    assert r.status_code in (201, 202), r.text
    big = r.json()
    monkeypatch.setattr(results, "MAX_FRAME_CELLS", run["n_terminals"] * 21 // 4)
    refused = http.get(f"/api/runs/{big['id']}/frames", headers=admin)
    assert refused.status_code == 413, refused.text
    token = _token(http, *ADMIN)
    page.add_init_script(f"sessionStorage.setItem('leotwin.token', {json.dumps(token)});")
    page.goto(f"{site['url']}/#run={big['id']}")
    page.wait_for_function("window.leotwin.runLoaded === true", timeout=30_000)
    every = page.evaluate("window.leotwin.framesEvery")
    frames = [(r.url.rsplit("/", 1)[1], r.response().status) for r in page_requests
              if f"/api/runs/{big['id']}/frames" in r.url]
    assert frames == [("frames", 413), (f"frames?every={every}", 200)]
    thin = http.get(f"/api/runs/{big['id']}/frames", headers=admin, params={"every": every})
    assert thin.status_code == 200 and every > 1
    thin = thin.json()
    _move_slider(page, len(thin["times"]) - 1)
    drawn = page.evaluate("ids => ids.map(t => window.leotwin.stateAt(t))", thin["terminals"])
    assert drawn == [thin["states"][c] for c in thin["codes"][-1]]


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
