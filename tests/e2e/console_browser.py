"""The console in headless Chromium (Debian's, through selenium), against a
running `sluice up --demo --console-listen`: log in, search with the
histogram, a row's context, a live tail with pause and resume, the events
timeline and status. Run by tests/e2e/console.rs, which makes HOME an NSS
database that trusts the CA of `sluice up`. Prints a JSON summary; takes
screenshots into --shots.
"""

import argparse
import json
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait


def main():
    parser = argparse.ArgumentParser()
    for flag in ["--url", "--token", "--shots", "--search", "--job", "--chromium", "--chromedriver"]:
        parser.add_argument(flag, required=True)
    args = parser.parse_args()

    options = webdriver.ChromeOptions()
    options.binary_location = args.chromium
    # As root Chromium needs --no-sandbox; the network is closed, so nothing
    # in the background may try to reach Google's hosts.
    for flag in [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,900",
    ]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(args.chromedriver), options=options)
    wait = WebDriverWait(driver, 60)
    summary = {}

    def shot(name):
        driver.save_screenshot(f"{args.shots}/{name}.png")

    def count(css):
        return len(driver.find_elements(By.CSS_SELECTOR, css))

    try:
        driver.get(args.url)
        wait.until(ec.visibility_of_element_located((By.ID, "token")))
        shot("1-login")
        driver.find_element(By.ID, "token").send_keys(args.token)
        driver.find_element(By.CSS_SELECTOR, "#login-form button").click()
        wait.until(lambda d: d.find_element(By.ID, "who").text != "")
        summary["who"] = driver.find_element(By.ID, "who").text
        # The session is an HttpOnly cookie: no script of the page reads it.
        summary["cookie_visible_to_scripts"] = driver.execute_script("return document.cookie") != ""

        # Explore: a search, its histogram, a row's context.
        driver.find_element(By.ID, "search").send_keys(args.search)
        driver.find_element(By.CSS_SELECTOR, "#search-form button").click()
        wait.until(lambda d: count("#results .row") > 0 and count("#histogram rect[data-n]") > 0)
        bars = driver.find_elements(By.CSS_SELECTOR, "#histogram rect[data-n]")
        summary["histogram_total"] = sum(int(b.get_attribute("data-n")) for b in bars)
        summary["histogram_jobs"] = sorted({b.get_attribute("data-job") for b in bars})
        summary["result_info"] = driver.find_element(By.ID, "result-info").text
        summary["first_row"] = driver.find_element(By.CSS_SELECTOR, "#results .row").text
        driver.find_element(By.CSS_SELECTOR, "#results .row").click()
        wait.until(lambda d: count("#context .hit") > 0)
        summary["context_hit"] = driver.find_element(By.CSS_SELECTOR, "#context .hit").text
        summary["context_lines"] = count("#context div")
        shot("2-explore")

        # Live tail: lines arrive; pausing keeps them; resuming shows them.
        driver.find_element(By.CSS_SELECTOR, "#tabs button[data-tab=tail]").click()
        driver.find_element(By.ID, "tail-job").send_keys(args.job)
        driver.find_element(By.CSS_SELECTOR, "#tail-form button[type=submit]").click()
        wait.until(lambda d: count("#tail-lines .line") >= 3)
        first = count("#tail-lines .line")
        wait.until(lambda d: count("#tail-lines .line") > first)
        summary["tail_instances"] = sorted(
            {e.get_attribute("data-instance") for e in driver.find_elements(By.CSS_SELECTOR, "#tail-lines .line")}
        )
        driver.find_element(By.ID, "pause").click()
        paused_at = count("#tail-lines .line")
        time.sleep(3)
        summary["grew_while_paused"] = count("#tail-lines .line") - paused_at
        held = driver.execute_script("return held.length")
        summary["held_while_paused"] = held
        driver.find_element(By.ID, "pause").click()
        summary["shown_after_resume"] = count("#tail-lines .line") - paused_at
        summary["tail_first_line"] = driver.find_element(By.CSS_SELECTOR, "#tail-lines .line").text
        shot("3-live-tail")

        # The events timeline.
        driver.find_element(By.CSS_SELECTOR, "#tabs button[data-tab=events]").click()
        driver.find_element(By.CSS_SELECTOR, "#events-form button").click()
        wait.until(lambda d: count("#timeline li[data-kind]") > 0)
        summary["event_kinds"] = sorted(
            {e.get_attribute("data-kind") for e in driver.find_elements(By.CSS_SELECTOR, "#timeline li[data-kind]")}
        )
        shot("4-events")

        # Status.
        driver.find_element(By.CSS_SELECTOR, "#tabs button[data-tab=status]").click()
        wait.until(lambda d: "version" in d.find_element(By.ID, "status-raw").text)
        summary["status_has_jobs"] = args.job in driver.find_element(By.ID, "status-raw").text
        shot("5-status")
    except Exception:
        shot("failure")
        summary["page"] = driver.find_element(By.TAG_NAME, "body").text[:2000]
        print(json.dumps(summary))
        raise
    finally:
        driver.quit()
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
