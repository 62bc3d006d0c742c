"""The dashboard in a real headless Chromium: every page renders its charts with the API's
data, a filter changes them, the console stays clean. Screenshots go to
test-output/screenshots (or $CAFE_ETL_SCREENSHOT_DIR)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from tests.conftest import free_port, run_cli

PAGES = ["", "what", "where", "when", "payments", "customers", "trends", "operations"]
ROOT = Path(__file__).resolve().parent.parent


def _chromium() -> str | None:
    for candidate in (os.environ.get("CAFE_ETL_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if candidate and (found := shutil.which(candidate)):
            return found
    return None


def _require_browser() -> str:
    problem = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problem = "Playwright for Python is not installed (pip install -e '.[dev]')"
    executable = _chromium()
    if executable is None:
        problem = problem or "no Chromium found (Debian: apt-get install chromium chromium-driver; `make chromium`)"
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"browser tests cannot run on CI: {problem}")
        pytest.skip(problem)
    return executable


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    executable = _require_browser()
    folder = tmp_path_factory.mktemp("browser")
    warehouse = folder / "warehouse.duckdb"
    # Four weeks and a day from a Monday: whole weeks have ended, so the cohort chart has
    # columns, and the last week has three before it and changes planted in it for Trends.
    landing = folder / "landing"
    assert run_cli("generate", landing, "--branches", 9, "--days", 29, "--seed", 11, "--bad-rate", 0.04,
                   "--plant-trends").code == 0
    assert run_cli("ingest", landing, "--warehouse", warehouse).code == 0
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "cafe_etl.cli", "serve", "--port", str(port), "--warehouse", str(warehouse)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    else:
        process.kill()
        pytest.fail(f"the dashboard did not start: {process.stdout.read()}")
    yield base, executable
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0


@pytest.fixture(scope="module")
def browser(server):
    from playwright.sync_api import sync_playwright

    _, executable = server
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox", "--disable-gpu"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.problems = []
    page.on("console", lambda m: m.type == "error" and page.problems.append(m.text))
    page.on("pageerror", lambda e: page.problems.append(str(e)))
    page.on("requestfailed", lambda r: page.problems.append(f"request failed: {r.url}"))
    yield page
    context.close()


def settled(page) -> dict[str, str]:
    """Wait until every element fed by the API has finished; their states by name."""
    page.wait_for_function(
        """() => [...document.querySelectorAll('[data-api]')]
                 .every(el => ['ready', 'empty', 'error'].includes(el.dataset.state))""", timeout=20_000)
    return page.evaluate("""() => Object.fromEntries([...document.querySelectorAll('[data-api]')].map(el =>
        [el.dataset.chart || el.dataset.table || el.dataset.render, el.dataset.state]))""")


def screenshot(page, name: str) -> None:
    folder = Path(os.environ.get("CAFE_ETL_SCREENSHOT_DIR", ROOT / "test-output" / "screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name or 'overview'}.png"), full_page=True)


@pytest.mark.parametrize("slug", PAGES)
def test_every_page_renders_every_chart_without_console_errors(server, page, slug):
    base, _ = server
    page.goto(f"{base}/{slug}")
    states = settled(page)
    assert states and "error" not in states.values(), states
    charts_and_figures = {k: v for k, v in states.items() if k not in ("failed", "arrivals")}
    assert all(state == "ready" for state in charts_and_figures.values()), states
    charts = page.evaluate("Object.keys(window.cafeEtl.charts)")
    expected_charts = page.evaluate("[...document.querySelectorAll('[data-chart]')].map(el => el.dataset.chart)")
    assert sorted(charts) == sorted(expected_charts)
    for name in charts:  # each chart drew something: a canvas with its series
        series = page.evaluate(f"window.cafeEtl.charts[{name!r}].getOption().series.length")
        assert series >= 1, name
    screenshot(page, slug)
    assert page.problems == []


def test_the_charts_show_the_apis_figures(server, page):
    base, _ = server
    page.goto(f"{base}/what")
    settled(page)
    api = httpx.get(f"{base}/api/what/products").json()["data"]
    shown = page.evaluate("window.cafeEtl.charts['top-quantity'].getOption().yAxis[0].data")
    assert shown[0] == api["top_by_quantity"][0]["product"]
    assert page.evaluate("window.cafeEtl.charts['top-quantity'].getOption().series[0].data[0]") == \
        api["top_by_quantity"][0]["quantity"]
    page.goto(f"{base}/")
    settled(page)
    figures = httpx.get(f"{base}/api/overview/figures").json()["data"]["figures"]
    revenue = page.inner_text('[data-figure="revenue"] .value')
    assert revenue == f"£{figures['revenue']['value']:,.2f}"
    assert page.inner_text('[data-figure="transactions"] .value') == f"{figures['transactions']['value']:,}"


def test_choosing_a_branch_redraws_the_page_for_that_branch(server, page):
    base, _ = server
    page.goto(f"{base}/")
    settled(page)
    before = page.inner_text('[data-figure="revenue"] .value')
    branches = httpx.get(f"{base}/api/meta").json()["branches"]
    with page.expect_navigation():
        page.select_option("select[name=branch]", label=branches[1])
    assert f"branch={branches[1].replace(' ', '+')}" in page.url
    settled(page)
    after = page.inner_text('[data-figure="revenue"] .value')
    api = httpx.get(f"{base}/api/overview/figures", params={"branch": branches[1]}).json()["data"]["figures"]
    assert after == f"£{api['revenue']['value']:,.2f}" and after != before
    daily = page.evaluate("window.cafeEtl.charts['daily-revenue'].getOption().series[0].data")
    assert round(sum(daily), 2) == api["revenue"]["value"]
    # Dates too: a shorter period gives fewer days.
    page.fill("input[name=from]", httpx.get(f"{base}/api/meta").json()["last_day"])
    with page.expect_navigation():
        page.click("button[type=submit]")
    settled(page)
    assert len(page.evaluate("window.cafeEtl.charts['daily-revenue'].getOption().xAxis[0].data")) == 1
    assert page.problems == []


def test_operations_drill_down_shows_only_the_chosen_reason(server, page):
    base, _ = server
    page.goto(f"{base}/operations")
    settled(page)
    reasons = page.evaluate("window.cafeEtl.charts['rejects'].getOption().series.map(s => s.name)")
    assert reasons
    page.evaluate(f"window.cafeEtl.showRejectRows({reasons[-1]!r})")
    page.wait_for_function(  # a function, not an expression: the page's CSP forbids eval
        "() => document.querySelector('[data-table=\"reject-rows\"]').dataset.state === 'ready'")
    shown = page.eval_on_selector_all('[data-table="reject-rows"] tbody tr td:nth-child(4)',
                                      "cells => cells.map(c => c.textContent)")
    assert shown and set(shown) == {reasons[-1]}
    assert page.problems == []


def test_a_bad_filter_is_explained_on_the_page(server, page):
    base, _ = server
    for path in ("/", "/where", "/customers"):
        response = page.goto(f"{base}{path}?branch=Atlantis")
        assert response.status == 400
        problems = page.locator(".problem").all_inner_texts()
        assert len(problems) == 1 and "unknown branch 'Atlantis'" in problems[0], path  # said once
        assert "None" not in page.inner_text("h1"), path
        assert page.locator("[data-api]").count() == 0, path  # nothing fetched that would fail again


def test_the_customers_page_offers_each_segment_s_target_list(server, page):
    base, _ = server
    page.goto(f"{base}/customers")
    settled(page)
    links = page.evaluate("""() => [...document.querySelectorAll('a[data-segment]')]
                             .map(a => [a.dataset.segment, a.getAttribute('href')])""")
    assert [name for name, _ in links][:2] == ["Champions", "Loyal"] and len(links) == 10
    shown = page.evaluate("""() => Object.fromEntries([...document.querySelectorAll('[data-figure]')]
                             .map(el => [el.dataset.figure, el.querySelector('.value').textContent]))""")
    counts = page.evaluate("window.cafeEtl.data['customer-counts'].data")
    assert shown["distinct"] == f"{counts['distinct']:,}" and shown["new"] == f"{counts['new']:,}"
    with page.expect_download() as download:
        page.click("a[data-segment='Hibernating']")
    text = Path(download.value.path()).read_text()
    assert text.splitlines()[0] == "customer_key,segment,r,f,m,recency_days,sales,revenue,first_sale,last_sale"
    assert all(",Hibernating," in line for line in text.splitlines()[1:])


def test_the_trends_page_shows_movers_unusual_days_and_pairs(server, page):
    base, _ = server
    page.goto(f"{base}/trends")
    states = settled(page)
    assert set(states.values()) == {"ready"}, states
    movers = httpx.get(f"{base}/api/trends/movers").json()["data"]["movers"]
    assert movers
    assert page.locator('[data-render="movers"] tbody tr').count() == len(movers)
    assert page.locator('[data-render="movers"] svg.sparkline').count() == len(movers)
    shown = page.eval_on_selector_all('[data-render="movers"] tbody tr td:nth-child(4)',
                                      "cells => cells.map(c => c.textContent)")
    assert shown == [f"{m['current']:,}" for m in movers]
    anomalies = httpx.get(f"{base}/api/trends/anomalies").json()["data"]
    drawn = page.evaluate("window.cafeEtl.charts['anomalies'].getOption().series[3].data")
    assert drawn == [a["revenue"] for a in anomalies]
    pairs = httpx.get(f"{base}/api/together/pairs").json()["data"]["pairs"]
    lifts = page.evaluate("window.cafeEtl.charts['pairs'].getOption().series[0].data")
    assert lifts == [p["lift"] for p in pairs[:15]]
    page.goto(f"{base}/operations")
    settled(page)
    short = [a for a in anomalies if a["kind"] == "short"]
    rows = page.eval_on_selector_all('[data-table="suspect-days"] tbody tr td:nth-child(2)',
                                     "cells => cells.map(c => c.textContent)")
    assert short and {a["branch"] for a in short} <= set(rows)
    assert page.problems == []


def test_every_chart_offers_its_figures_as_csv_and_the_grain_regroups_time(server, page):
    base, _ = server
    page.goto(f"{base}/payments")
    settled(page)
    links = page.eval_on_selector_all("a.csv", "links => links.map(a => a.getAttribute('href'))")
    assert len(links) == page.locator("section.panel").count()
    response = httpx.get(f"{base}{links[0]}")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    daily = len(page.evaluate("window.cafeEtl.charts['payments-over-time'].getOption().xAxis[0].data"))
    with page.expect_navigation():
        page.select_option("select[name=grain]", "week")
    settled(page)
    weeks = page.evaluate("window.cafeEtl.charts['payments-over-time'].getOption().xAxis[0].data")
    api = httpx.get(f"{base}/api/payments/daily", params={"grain": "week"}).json()["data"]
    assert weeks == api["dates"] and len(weeks) < daily
    drawn = page.evaluate("window.cafeEtl.charts['payments-over-time'].getOption().series.map(s => s.data)")
    assert drawn == [m["transactions"] for m in api["methods"]]
    assert page.problems == []


def test_charts_are_readable_titled_axes_compact_money_whole_names(server, page):
    """What a new user saw: money axes of overlapping £10,000.00 labels, charts without axis
    titles, legend names cut (MISSING_B...), reason codes broken mid-word."""
    base, _ = server
    for slug in ("", "what", "where", "when", "payments", "customers", "trends", "operations"):
        page.goto(f"{base}/{slug}")
        settled(page)
        untitled = page.evaluate("""() => Object.entries(window.cafeEtl.charts).flatMap(([name, chart]) => {
            const o = chart.getOption();
            return [...(o.xAxis || []), ...(o.yAxis || [])]
              .filter(axis => axis.type === 'value' && !axis.name).map(() => name);
        })""")
        assert untitled == [], (slug, untitled)
        scrolling = page.evaluate("""() => Object.entries(window.cafeEtl.charts)
            .filter(([, chart]) => (chart.getOption().legend || []).some(l => l.type === 'scroll'))
            .map(([name]) => name)""")
        assert scrolling == [], (slug, scrolling)
    page.goto(f"{base}/")
    settled(page)
    label = page.evaluate("window.cafeEtl.charts['daily-revenue'].getOption().yAxis[0].axisLabel.formatter(12345)")
    assert label == "£12.3k"
    page.goto(f"{base}/operations")
    settled(page)
    reasons = page.evaluate("window.cafeEtl.charts['rejects'].getOption().series.map(s => s.name)")
    assert "MISSING_BRANCH" in reasons
    wrap = page.evaluate("""() => getComputedStyle(document.querySelector(
        '[data-table="reject-rows"] tbody td:nth-child(4)')).overflowWrap""")
    assert wrap == "break-word"
    assert page.problems == []
