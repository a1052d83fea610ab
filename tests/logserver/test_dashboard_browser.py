"""The dashboard in a real headless Chromium (Debian's ``chromium`` and ``chromium-driver``).

Selenium drives the system chromedriver, named explicitly so that Selenium Manager never runs
and nothing is downloaded. The test clicks from the overview to the builds, searches, opens a
build, downloads its proof file and checks it, clicks through to the coverage page and its
chart, searches it and follows a crate to its build, and takes a screenshot of every page that
must decode as a PNG of sensible size with more than one colour. With ``DASHBOARD_SHOTS_DIR`` set,
the screenshots are also copied there for a person to look at.
"""

from __future__ import annotations

import os
import shutil
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from logserver.core.proof import TlogProof
from logserver.protocol.entries import Verdict
from logserver.protocol.signed import Leaf
from tests.support.dashboard_fixtures import BuiltJob, Plan
from tests.support.dashboard_runner import wait_indexed
from tests.support.protocol_log import ProtocolLog

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
HOSTILE_NAME = '<script>alert("pwn")</script>'
PLANS: tuple[Plan, ...] = ("reproduced", "not-reproduced", "failed", "misbehaviour", "open")
WIDTH, HEIGHT = 1200, 900


# ------------------------------------------------------------------------------ PNG checks


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def png_rows(data: bytes, max_rows: int) -> tuple[int, int, list[bytes]]:
    """(width, height, the first ``max_rows`` unfiltered rows) of an 8-bit RGB(A) PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour in (2, 6) and interlace == 0, "unexpected PNG format"
    bpp = 3 if colour == 2 else 4
    stride = width * bpp
    raw = zlib.decompressobj().decompress(idat, (stride + 1) * max_rows)
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(min(max_rows, height)):
        kind, line = (
            raw[y * (stride + 1)],
            bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]),
        )
        for i in range(stride):
            left = line[i - bpp] if i >= bpp else 0
            up, corner = prev[i], prev[i - bpp] if i >= bpp else 0
            predictor = (0, left, up, (left + up) // 2, _paeth(left, up, corner))[kind]
            line[i] = (line[i] + predictor) & 0xFF
        rows.append(bytes(line))
        prev = line
    return width, height, rows


def check_screenshot(path: Path) -> None:
    """A decodable PNG of the window's size whose top part has several colours."""
    width, height, rows = png_rows(path.read_bytes(), 240)
    assert 800 <= width <= 2 * WIDTH and 600 <= height <= 4 * HEIGHT, (width, height)
    bpp = len(rows[0]) // width
    colours = {row[i : i + 3] for row in rows for i in range(0, len(row), bpp * 7)}
    assert len(colours) >= 3, f"{path.name} looks blank: {len(colours)} colours"


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[BuiltJob]]]:
    """A log that runs the build protocol (only such a log shows builds), cosigned."""
    log = ProtocolLog(tmp_path_factory.mktemp("browser-log"))
    jobs: list[BuiltJob] = []
    for wave in range(11):
        specs = [(f"crate-{wave}-{i}", f"0.{wave}.{i}", p) for i, p in enumerate(PLANS)]
        if wave == 10:
            specs.append((HOSTILE_NAME, "6.6.6", "reproduced"))
        leaves, built = log.fixture.builds(log.size, specs)
        log.prefill(leaves)
        jobs += built
    log.start()
    try:
        assert log.cosign() == log.size
        wait_indexed(log.url, log.size)
        yield log.url, jobs
    finally:
        log.stop()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    for program in (CHROMIUM, CHROMEDRIVER):
        assert os.access(program, os.X_OK), f"{program} is missing: apt-get install chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # with the driver's path below, Selenium Manager never runs
    for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]:
        options.add_argument(arg)
    options.add_argument(f"--window-size={WIDTH},{HEIGHT}")
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _shot(driver: webdriver.Chrome, directory: Path, name: str) -> None:
    path = directory / f"{name}.png"
    assert driver.save_screenshot(str(path))
    check_screenshot(path)
    keep = os.environ.get("DASHBOARD_SHOTS_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / path.name)


def _no_alert(driver: webdriver.Chrome) -> None:
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # noqa: B018 - raises when no script opened an alert


def _wait_for_file(path: Path, timeout: float = 15) -> bytes:
    """The content of a download once Chromium has renamed its temporary file to ``path``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file():
            return path.read_bytes()
        time.sleep(0.1)
    found = sorted(p.name for p in path.parent.iterdir())
    raise AssertionError(f"{path.name} was not downloaded; the directory holds {found}")


# ------------------------------------------------------------------------------ the test


def test_click_through_the_dashboard_and_download_a_proof(
    browser: webdriver.Chrome, dashboard: tuple[str, list[BuiltJob]], tmp_path: Path
) -> None:
    url, jobs = dashboard
    browser.get(url + "/")
    assert browser.title.startswith("Overview")
    assert browser.find_element(By.CSS_SELECTOR, "h1").text == "Log example.test/log"
    stat = browser.find_element(By.ID, "stat-builds").text
    assert stat.split("\n")[0] == str(len(jobs))
    assert len(browser.find_elements(By.CSS_SELECTOR, "#latest tbody tr")) == 10
    _no_alert(browser)
    _shot(browser, tmp_path, "overview")

    browser.find_element(By.ID, "nav-builds").click()
    assert browser.current_url == url + "/builds"
    rows = browser.find_elements(By.CSS_SELECTOR, "#builds tbody tr")
    assert len(rows) == 50
    newest = max(jobs, key=lambda j: j.leaves["request"])
    assert rows[0].text.startswith(f"{newest.name} {newest.version}")  # shown as text, not run
    _no_alert(browser)
    _shot(browser, tmp_path, "builds")

    browser.find_element(By.LINK_TEXT, "older →").click()
    assert browser.current_url.endswith("/builds?page=2")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#builds tbody tr")) == len(jobs) - 50

    box = browser.find_element(By.NAME, "q")
    box.send_keys("crate-7-", Keys.ENTER)
    WebDriverWait(browser, 15).until(expected_conditions.url_contains("q=crate-7-"))
    found = browser.find_elements(By.CSS_SELECTOR, "#builds tbody tr")
    assert sorted(r.text.split(" ")[0] for r in found) == [f"crate-7-{i}" for i in range(5)]
    _shot(browser, tmp_path, "search")

    target = next(j for j in jobs if j.name == "crate-7-1")  # not reproduced, with a diff report
    browser.find_element(By.LINK_TEXT, "crate-7-1 0.7.1").click()
    assert browser.current_url == f"{url}/build/{target.job}"
    assert browser.find_element(By.CSS_SELECTOR, "h1").text == "crate-7-1 0.7.1 not-reproduced"
    assert len(browser.find_elements(By.CSS_SELECTOR, "#builders tbody tr")) == 4
    assert browser.find_element(By.CSS_SELECTOR, "#diffs a[href^='/blob/']").text == "diff report"
    _shot(browser, tmp_path, "build")

    browser.find_element(By.ID, "proof").click()
    name = f"entry-{target.leaves['verdict']}.tlog-proof"  # from Content-Disposition
    proof = TlogProof.parse(_wait_for_file(tmp_path / "downloads" / name))
    assert proof.index == target.leaves["verdict"] and proof.extra is not None
    verdict = Leaf.parse(proof.extra).entry.entry
    assert isinstance(verdict, Verdict) and verdict.job == target.job

    hostile = next(j for j in jobs if j.name == HOSTILE_NAME)
    browser.get(f"{url}/build/{hostile.job}")
    assert browser.find_element(By.CSS_SELECTOR, "h1").text == f"{HOSTILE_NAME} 6.6.6 reproduced"
    _no_alert(browser)

    browser.find_element(By.ID, "nav-checkpoints").click()
    rows = browser.find_elements(By.CSS_SELECTOR, "#cps tbody tr")
    assert len(rows) == 50 and rows[0].text.split(" ")[0].isdigit()
    _shot(browser, tmp_path, "checkpoints")


def test_click_through_to_the_coverage_page(
    browser: webdriver.Chrome, dashboard: tuple[str, list[BuiltJob]], tmp_path: Path
) -> None:
    url, jobs = dashboard
    decided = [j for j in jobs if "verdict" in j.leaves]  # each crate was built once here
    browser.get(url + "/")
    browser.find_element(By.ID, "coverage-link").click()
    assert browser.current_url == url + "/coverage"
    assert browser.title.startswith("Coverage")
    assert browser.find_element(By.ID, "cov-crates").text.split("\n")[0] == str(len(decided))
    chart = browser.find_element(By.ID, "coverage-chart")
    assert chart.size["width"] > 600 and chart.size["height"] > 200
    bars = browser.find_elements(By.CSS_SELECTOR, "#coverage-chart rect.bar")
    assert {b.get_attribute("class") for b in bars} == {
        "bar reproduced",
        "bar not-reproduced",
        "bar failed",
    }
    assert len(browser.find_elements(By.CSS_SELECTOR, "#crates tbody tr")) == 50
    reasons = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "#reasons tbody tr")]
    assert any(r.startswith("nonzero-exit ") for r in reasons), reasons
    _no_alert(browser)
    _shot(browser, tmp_path, "coverage")

    box = browser.find_element(By.ID, "coverage-q")
    box.send_keys("crate-4-", Keys.ENTER)
    WebDriverWait(browser, 15).until(expected_conditions.url_contains("q=crate-4-"))
    found = browser.find_elements(By.CSS_SELECTOR, "#crates tbody tr")
    assert [r.text.split(" ")[0] for r in found] == [f"crate-4-{i}" for i in range(5)]
    _shot(browser, tmp_path, "coverage-search")
    browser.find_element(By.LINK_TEXT, "crate-4-2").click()
    target = next(j for j in jobs if j.name == "crate-4-2")
    assert browser.current_url == f"{url}/build/{target.job}"
    assert browser.find_element(By.CSS_SELECTOR, "h1").text == "crate-4-2 0.4.2 failed"

    browser.get(url + "/coverage?q=%3Cscript")
    rows = browser.find_elements(By.CSS_SELECTOR, "#crates tbody tr")
    assert len(rows) == 1 and rows[0].text.startswith(HOSTILE_NAME)  # shown as text, not run
    _no_alert(browser)


def test_a_blank_page_fails_the_screenshot_check(browser: webdriver.Chrome, tmp_path: Path) -> None:
    browser.get("about:blank")
    path = tmp_path / "blank.png"
    assert browser.save_screenshot(str(path))
    with pytest.raises(AssertionError, match="looks blank"):
        check_screenshot(path)
