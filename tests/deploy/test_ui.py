"""The Prefect UI shows a completed ad-hoc run with its artifacts: headless Chromium (Debian's ``chromium`` and
``chromium-driver``, driven by selenium through ``/usr/bin/chromedriver``; nothing is downloaded) on the stack's
server.

The flow run page (``/runs/flow-run/<id>``, Prefect's V1 UI at this path) must show the run Completed and, on its
Artifacts tab, the ``summary-<run key>`` markdown artifact and the ``progress-<run key>`` progress artifact at 3/3;
the summary's own page must render the markdown (result, where the outputs went). Screenshots of both pages are
saved under the test's tmp dir; with ``ASK_BATCH_UPDATE_SCREENSHOT=1`` they are also copied to ``docs/img/``.

The UI is a single-page app: every check is an explicit wait (WebDriverWait, with a deadline) for an element or a
text, never a sleep. ``scripts/install-test-deps.sh`` (run by ``make test``) installs the Debian packages when it
can; without them this module is skipped, naming them.
"""

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployments.local import Stack
from tests.deploy.conftest import REPO
from tests.deploy.helpers import adhoc_run_end_to_end, artifacts

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
_missing = [pkg for pkg, path in (("chromium", CHROMIUM), ("chromium-driver", CHROMEDRIVER))
            if not os.access(path, os.X_OK)]

pytestmark = [
    pytest.mark.deploy,
    pytest.mark.timeout(300),
    pytest.mark.skipif(bool(_missing), reason=f"the browser test needs the Debian package(s) {' '.join(_missing)} "
                                              f"(apt-get install {' '.join(_missing)}; `make test` does it as root)"),
]

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -r "
                                                             "requirements-dev.txt)")
from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.remote.webelement import WebElement  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--hide-scrollbars", "--window-size=1400,1200")
VIEWPORT = {"width": 1400, "height": 1120}  # the screenshots' size: the run page down to its artifact cards
WAIT_SECONDS = 45
UPDATE_ENV = "ASK_BATCH_UPDATE_SCREENSHOT"
DOCS_IMG = REPO / "docs" / "img"


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WebDriver]:
    """Headless Chromium with a fresh profile, through the distribution's chromedriver (no selenium-manager)."""
    monkeypatch.setenv("SE_OFFLINE", "true")  # selenium-manager must never try to download a driver or a browser
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    service = Service(CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        # The window's size less the browser's frame is not fixed in headless mode: set the viewport itself.
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {**VIEWPORT, "deviceScaleFactor": 1,
                                                                        "mobile": False})
        yield driver
    finally:
        driver.quit()


def wait_for(driver: WebDriver, what: str, condition, timeout: float = WAIT_SECONDS):
    """``WebDriverWait(...).until(condition)``; at the deadline fail naming ``what`` and the page's text."""
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.25).until(condition)
    except TimeoutException:
        text = driver.find_element(By.TAG_NAME, "body").text
        pytest.fail(f"{what}: not on {driver.current_url} after {timeout}s; the page shows:\n{text[:3000]}")


def artifact_card(driver: WebDriver, key: str) -> WebElement | None:
    """The artifact card titled ``key`` on the run's Artifacts tab, once it is rendered."""
    for card in driver.find_elements(By.CSS_SELECTOR, ".artifact-card"):
        titles = card.find_elements(By.CSS_SELECTOR, ".artifact-card__title")
        if titles and titles[0].text.strip() == key:
            return card
    return None


def in_viewport(driver: WebDriver, element: WebElement) -> bool:
    """True when the whole element is inside the viewport (so a screenshot shows it)."""
    return driver.execute_script(
        "const r = arguments[0].getBoundingClientRect();"
        "return r.top >= 0 && r.left >= 0 && r.bottom <= window.innerHeight && r.right <= window.innerWidth;",
        element)


def screenshot(driver: WebDriver, tmp_path: Path, name: str, *shows: WebElement) -> Path:
    """Save a PNG of the viewport under the test's tmp dir (also into docs/img/ when ASK_BATCH_UPDATE_SCREENSHOT=1),
    after checking that each element of ``shows`` is wholly inside it."""
    for element in shows:
        assert in_viewport(driver, element), f"{name}: not in the screenshot: {element.text!r}"
    path = tmp_path / name
    assert driver.save_screenshot(str(path)), path
    assert path.stat().st_size > 10_000, path  # a real page, not a blank image
    if os.environ.get(UPDATE_ENV) == "1":
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_IMG / name)
    return path


def test_flow_run_page_shows_the_summary_and_the_progress(stack: Stack, browser: WebDriver,
                                                          tmp_path: Path) -> None:
    run = adhoc_run_end_to_end(stack)
    by_key = {a["key"]: a for a in artifacts(stack, run["id"]) if a["key"]}
    summary_key = next(k for k in by_key if k.startswith("summary-"))
    progress_key = next(k for k in by_key if k.startswith("progress-"))
    assert by_key[progress_key]["data"] == 100.0, by_key[progress_key]

    browser.get(f"{stack.ui_url}/runs/flow-run/{run['id']}")
    wait_for(browser, f"the run's name {run['name']} in the page header",
             lambda d: run["name"] in d.find_element(By.CSS_SELECTOR, ".p-layout-default__content").text)
    wait_for(browser, "the Completed state badge",
             lambda d: any(b.text.strip() == "Completed" for b in d.find_elements(By.CSS_SELECTOR, ".state-badge")))

    wait_for(browser, "the Artifacts tab", lambda d: d.find_element(By.CSS_SELECTOR, "li.p-tab#artifacts")).click()
    summary = wait_for(browser, f"the artifact card {summary_key}", lambda d: artifact_card(d, summary_key))
    progress = wait_for(browser, f"the artifact card {progress_key}", lambda d: artifact_card(d, progress_key))
    assert "MARKDOWN" in summary.text.upper() and f"ask-batch run {run['name']}" in summary.text, summary.text
    assert "PROGRESS" in progress.text.upper(), progress.text
    # The card truncates its description with CSS; the DOM text is whole.
    wait_for(browser, "the progress card's 3/3",
             lambda d: "3/3 indexes done" in progress.get_attribute("textContent"))
    screenshot(browser, tmp_path, "flow-run.png", summary, progress)

    # The summary's own page renders the markdown: the result and where the outputs were downloaded.
    summary.click()
    wait_for(browser, "the summary artifact page", lambda d: "/artifacts/artifact/" in d.current_url)
    rendered = wait_for(browser, "the rendered summary markdown",
                        lambda d: d.find_element(By.CSS_SELECTOR, ".artifact-data-markdown"))
    wait_for(browser, "the summary's result line", lambda d: "Result: succeeded" in rendered.text)
    assert f"downloaded to outputs/{run['name']}" in rendered.text, rendered.text
    screenshot(browser, tmp_path, "summary-artifact.png", rendered.find_element(By.CSS_SELECTOR, "h1"))


def test_custom_run_form_opens_on_the_work(stack: Stack, browser: WebDriver, tmp_path: Path) -> None:
    """The adhoc deployment's Custom run form: the job section first, its image, command, completions and
    parallelism on the first screen (no scrolling), the other sections after it."""
    from tests.deploy.helpers import deployment

    dep = deployment(stack, "adhoc")
    browser.get(f"{stack.ui_url}/deployments/deployment/{dep['id']}/run")

    def label(text: str):
        def find(d: WebDriver) -> WebElement | None:
            for element in d.find_elements(By.CSS_SELECTOR, "label, legend, .p-label__text"):
                if element.text.strip().lower().startswith(text) and element.is_displayed():
                    return element
            return None
        return find

    image = wait_for(browser, "the form's image field", label("image"))
    shown = [image] + [wait_for(browser, f"the form's {name} field", label(name))
                       for name in ("command", "completions", "parallelism")]
    for element in shown:
        assert in_viewport(browser, element), f"not on the first screen: {element.text!r}"
    page = browser.find_element(By.TAG_NAME, "body").text.lower()
    assert page.index("image") < page.index("region"), "the target section comes before the work"
    screenshot(browser, tmp_path, "custom-run-form.png", *shown)
