"""The page at / in headless Chromium (the OS package and its chromedriver): a person
answers five pairs, the answers are stored, the bars show the stored weights."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
pytestmark = pytest.mark.skipif(not CHROMIUM.exists() or not Path(CHROMEDRIVER).exists(),
                                reason="needs the chromium and chromium-driver OS packages "
                                       "(scripts/setup.sh installs them)")
ANSWERS = 5


@pytest.fixture
def browser(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1280,900",
                 f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def test_five_answers_through_the_page(export_dir, tmp_path, start_server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 60)

    def state() -> str:
        return browser.find_element(By.TAG_NAME, "body").get_attribute("data-state")

    with start_server(export_dir, tmp_path / "users.db") as server:
        browser.get(server.url + "/?user=page-person")
        wait.until(lambda _: state() in ("ready", "error"))
        assert state() == "ready", browser.find_element(By.ID, "status").text
        shown = []
        for k in range(ANSWERS):
            side = "option-a" if k % 2 == 0 else "option-b"
            other = "option-b" if side == "option-a" else "option-a"
            prompt = browser.find_element(By.ID, "prompt").text
            chosen = browser.find_element(By.ID, side).find_element(By.TAG_NAME, "span").text
            rejected = browser.find_element(By.ID, other).find_element(By.TAG_NAME, "span").text
            shown.append((prompt, chosen, rejected))
            browser.find_element(By.ID, side).click()
            wait.until(lambda _, k=k: browser.find_element(By.ID, "answered").text == str(k + 1)
                       and state() in ("ready", "error"))
            assert state() == "ready", browser.find_element(By.ID, "status").text
        browser.save_screenshot(str(tmp_path / "page.png"))

        info = server.client.get("/v1/users/page-person").json()
        assert info["n_comparisons"] == ANSWERS
        assert [(c["prompt"], c["chosen"], c["rejected"]) for c in info["comparisons"]] == shown
        bars = browser.find_elements(By.CSS_SELECTOR, "#weights .bar")
        assert len(bars) == server.reward.K
        shown_weights = [float(b.get_attribute("data-weight")) for b in bars]
        assert shown_weights == pytest.approx(info["weights"], abs=1e-6)
        assert [b.find_element(By.CLASS_NAME, "num").text for b in bars] == \
            [f"{w:.3f}" for w in info["weights"]]
        rewards = browser.find_elements(By.CSS_SELECTOR, "#rewards li")
        assert len(rewards) >= 2 and all(r.get_attribute("data-reward") for r in rewards)
