"""Drives the gallery page of `collections serve` in a real headless Chromium
(Debian's chromium and chromium-driver; scripts/lib.sh's ensure_browser
installs them) and checks what a person would: a search shows cards whose
thumbnails load, a card opens from the keyboard and shows its item, Escape
closes it, a link with ?q= restores the search, and an over-long query shows
the API's own error message. No check may leave a JavaScript error behind.

Prints one line per check and a closing 'N passed, N failed'; exits 1 at the
first failed check, saying why.

Usage: browser-test.py --url http://127.0.0.1:PORT/ --query "dark, mostly black"
                       [--expect-min 1] [--screenshot PATH]
"""

import argparse
import json
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

WAIT_SECONDS = 20
# The API refuses queries longer than this many characters with a 400.
MAX_QUERY_CHARS = 1000

# Runs before the page's own script on every load: records uncaught errors
# and rejections, which the browser log may not carry in full.
CATCH_PAGE_ERRORS = """
window.__pageErrors = [];
addEventListener("error", (e) => {
  if (e instanceof ErrorEvent) window.__pageErrors.push(`${e.message} (${e.filename}:${e.lineno})`);
}, true);
addEventListener("unhandledrejection", (e) => {
  window.__pageErrors.push(`unhandled rejection: ${e.reason && e.reason.message || e.reason}`);
});
"""


class CheckFailed(Exception):
    """A check saw the page do something a person would call broken."""


class Gallery:
    """The page under test, asked the questions the checks need."""

    def __init__(self, driver, url):
        self.driver = driver
        self.url = url

    def open(self, query=None):
        target = self.url
        if query is not None:
            target = urllib.parse.urljoin(self.url, "?" + urllib.parse.urlencode({"q": query}))
        self.driver.get(target)
        self.wait_for(lambda d: d.execute_script("return document.readyState") == "complete", "the page to load")

    def wait_for(self, condition, what):
        try:
            return WebDriverWait(self.driver, WAIT_SECONDS).until(condition)
        except TimeoutException:
            raise CheckFailed(f"waited {WAIT_SECONDS} s for {what}; #status says {self.status()!r}") from None

    def status(self):
        found = self.driver.find_elements(By.ID, "status")
        return found[0].text.strip() if found else "(no #status element)"

    def query_input(self):
        return self.driver.find_element(By.CSS_SELECTOR, "form#search [name=q]")

    def search(self, text):
        box = self.query_input()
        box.clear()
        box.send_keys(text, Keys.ENTER)

    def hits(self):
        return self.driver.find_elements(By.CSS_SELECTOR, "#results .hit")

    def wait_for_hits(self, at_least):
        self.wait_for(lambda d: len(self.hits()) >= at_least, f"at least {at_least} .hit card(s)")
        return self.hits()

    def text_of(self, element, selector):
        found = element.find_elements(By.CSS_SELECTOR, selector)
        return found[0].get_attribute("textContent").strip() if found else ""

    def detail_is_open(self):
        return self.driver.execute_script("return document.getElementById('detail')?.open === true")

    def focused(self):
        return self.driver.switch_to.active_element

    def press(self, key):
        ActionChains(self.driver).send_keys(key).perform()

    def wait_for_image(self, img):
        """Waits until the image has finished (loaded or failed) and returns
        its natural width: 0 when the browser could not show it (a 404, or
        bytes that are not an image)."""
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", img)
        src = img.get_attribute("src")
        self.wait_for(lambda d: d.execute_script("return arguments[0].complete", img), f"the image {src} to load")
        return self.driver.execute_script("return arguments[0].naturalWidth", img)

    def errors(self, allowed=lambda entry: False):
        """JavaScript errors of the page, and SEVERE entries of the browser log
        that `allowed` does not expect. The log is drained by reading it."""
        found = list(self.driver.execute_script("return window.__pageErrors || []"))
        for entry in self.driver.get_log("browser"):
            if entry["level"] == "SEVERE" and not allowed(entry):
                found.append(f"console ({entry.get('source', '?')}): {entry['message']}")
        return found


def api_error_for(url, query):
    """The error message the API itself gives for this search, read directly."""
    search = urllib.parse.urljoin(url, "/v1/search?" + urllib.parse.urlencode({"q": query, "limit": 24}))
    try:
        with urllib.request.urlopen(search, timeout=WAIT_SECONDS) as response:
            raise CheckFailed(f"the API answered {response.status} to a {len(query)}-character query; expected 400")
    except urllib.error.HTTPError as err:
        if err.code != 400:
            raise CheckFailed(f"the API answered {err.code} to a {len(query)}-character query; expected 400") from None
        try:
            message = json.loads(err.read())["error"]
        except (ValueError, KeyError, TypeError):
            raise CheckFailed("the API's 400 answer has no JSON {\"error\": ...} body") from None
    if not isinstance(message, str) or not message.strip():
        raise CheckFailed("the API's 400 answer has an empty error message")
    return message.strip()


def check_loads(page, args):
    page.open()
    if not page.driver.find_elements(By.CSS_SELECTOR, "form#search [name=q]"):
        raise CheckFailed("no form#search with an input named q")
    assert_no_errors(page)
    return f"{args.url} ({page.driver.title!r})"


def check_search(page, args):
    page.search(args.query)
    hits = page.wait_for_hits(args.expect_min)
    shown = urllib.parse.parse_qs(urllib.parse.urlparse(page.driver.current_url).query).get("q", [None])[0]
    if shown != args.query:
        raise CheckFailed(f"the URL does not carry the query: {page.driver.current_url}")
    return f"{len(hits)} card(s) for {args.query!r}; #status says {page.status()!r}"


def check_thumbnails(page, args):
    broken = []
    hits = page.hits()
    for hit in hits:
        imgs = hit.find_elements(By.TAG_NAME, "img")
        if not imgs or not imgs[0].get_attribute("src"):
            broken.append(f"card {hit.get_attribute('data-item-id')} has no thumbnail <img src>")
        elif page.wait_for_image(imgs[0]) <= 0:
            broken.append(f"broken thumbnail {imgs[0].get_attribute('src')}")
    if broken:
        raise CheckFailed("; ".join(broken))
    # After the images, so a broken one is named above rather than as a 404 here.
    assert_no_errors(page)
    return f"{len(hits)} loaded"


def check_keyboard_opens_detail(page, args):
    first = page.hits()[0]
    page.driver.execute_script("document.querySelector('form#search [type=submit]').focus()")
    page.press(Keys.TAB)
    if page.focused() != first:
        raise CheckFailed("Tab from the search button does not reach the first card")
    page.press(Keys.ENTER)
    page.wait_for(lambda d: page.detail_is_open(), "#detail to open after Enter on the first card")
    detail = page.driver.find_element(By.ID, "detail")
    page.wait_for(lambda d: page.text_of(detail, ".detail-summary"), "a non-empty .detail-summary")
    want = page.text_of(first, ".hit-summary")
    got = page.text_of(detail, ".detail-summary")
    if got != want:
        raise CheckFailed(f"the detail's summary {got!r} is not the card's {want!r}")
    for img in detail.find_elements(By.TAG_NAME, "img"):
        if page.wait_for_image(img) <= 0:
            raise CheckFailed(f"broken image in the detail: {img.get_attribute('src')}")
    assert_no_errors(page)
    return f"item {first.get_attribute('data-item-id')}: {got!r}"


def check_escape_closes(page, args):
    page.press(Keys.ESCAPE)
    page.wait_for(lambda d: not page.detail_is_open(), "#detail to close after Escape")
    first = page.hits()[0]
    if page.focused() != first:
        raise CheckFailed("focus did not return to the card that opened the detail")
    return "focus is back on the card"


def check_more_like_this(page, args):
    first = page.hits()[0]
    item_id = first.get_attribute("data-item-id")
    first.click()
    page.wait_for(lambda d: page.detail_is_open(), "#detail to open on a click")
    detail = page.driver.find_element(By.ID, "detail")
    page.wait_for(lambda d: detail.find_elements(By.CSS_SELECTOR, "button.similar"), "a 'More like this' button")
    detail.find_element(By.CSS_SELECTOR, "button.similar").click()
    page.wait_for(lambda d: not page.detail_is_open(), "#detail to close")
    page.wait_for(lambda d: " like " in page.status(), "#status to say what the items are like")
    hits = page.wait_for_hits(1)
    ids = [hit.get_attribute("data-item-id") for hit in hits]
    if item_id in ids:
        raise CheckFailed("the item itself is among the items like it")
    assert_no_errors(page)
    return f"{len(hits)} item(s) like {item_id}: {page.status()!r}"


def check_link_restores(page, args):
    page.open(args.query)
    hits = page.wait_for_hits(args.expect_min)
    value = page.query_input().get_attribute("value")
    if value != args.query:
        raise CheckFailed(f"the search box shows {value!r}, not the linked query")
    assert_no_errors(page)
    return f"{len(hits)} card(s) from ?q="


def check_error_shown(page, args):
    query = "a" * (MAX_QUERY_CHARS + 1)
    message = api_error_for(args.url, query)
    page.search(query)
    page.wait_for(lambda d: message in page.status(), f"#status to show the API's message {message!r}")
    if page.hits():
        raise CheckFailed("cards are still shown beside the error")
    # The 400 itself is logged by the browser as a failed load: that one is expected.
    assert_no_errors(page, allowed=lambda e: e.get("source") == "network" and "/v1/search" in e["message"])
    return f"#status says {page.status()!r}"


def assert_no_errors(page, allowed=lambda entry: False):
    errors = page.errors(allowed)
    if errors:
        raise CheckFailed("JavaScript or console errors: " + " | ".join(errors))


CHECKS = [
    ("page loads without errors", check_loads),
    ("search shows cards", check_search),
    ("every thumbnail loads", check_thumbnails),
    ("Enter on a focused card opens its detail", check_keyboard_opens_detail),
    ("Escape closes the detail", check_escape_closes),
    ("'More like this' shows the item's neighbours, not itself", check_more_like_this),
    ("a ?q= link restores the search", check_link_restores),
    ("an over-long query shows the API's error", check_error_shown),
]


def start_browser(args, profile):
    options = webdriver.ChromeOptions()
    options.binary_location = args.chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 f"--user-data-dir={profile}", "--window-size=1280,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # A driver path given means Selenium Manager never looks for (or downloads) one.
    driver = webdriver.Chrome(options=options, service=Service(executable_path=args.chromedriver))
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": CATCH_PAGE_ERRORS})
    return driver


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="the gallery page, e.g. http://127.0.0.1:8080/")
    parser.add_argument("--query", required=True, help="a search that finds at least --expect-min items")
    parser.add_argument("--expect-min", type=int, default=1, help="cards the search must show (default 1)")
    parser.add_argument("--screenshot", help="save the page as a PNG here when the run ends")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    args = parser.parse_args()
    if args.expect_min < 1:
        parser.error("--expect-min must be at least 1: the card checks need a card")

    passed = 0
    with tempfile.TemporaryDirectory(prefix="browser-test-") as profile:
        try:
            driver = start_browser(args, profile)
        except WebDriverException as err:
            print(f"error: could not start {args.chromium} through {args.chromedriver}: {err.msg}", file=sys.stderr)
            return 1
        try:
            page = Gallery(driver, args.url)
            for name, check in CHECKS:
                try:
                    detail = check(page, args)
                except (CheckFailed, WebDriverException) as err:
                    # WebDriver messages go on with session details; their first line says it.
                    reason = (err.msg or "").splitlines()[0] if isinstance(err, WebDriverException) else str(err)
                    print(f"FAIL {name}: {reason}", flush=True)
                    print(f"{passed} passed, 1 failed")
                    return 1
                print(f"ok   {name}: {detail}", flush=True)
                passed += 1
        finally:
            if args.screenshot:
                driver.save_screenshot(args.screenshot)
            driver.quit()
    print(f"{passed} passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
