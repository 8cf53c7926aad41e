"""End-to-end in real headless Chromium (Debian's chromium + chromium-driver,
driven by selenium): log in, import a key, see it on the keys page, see a
chart on the dashboard. Usage: python3 browser_e2e.py PATH_TO_BINARY [SHOT_DIR]
Skips, saying why, only when Chromium or its driver is not installed.
"""
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.request

from harness import ADMIN, GOOD, Checks, Stack

BUSY = "sk-e2e-busy-000000000000000002"
DEAD = "sk-e2e-dead-000000000000000003"
PAGES = ["/admin", "/admin/keys", "/admin/logs", "/admin/aliases", "/admin/models", "/admin/connect", "/admin/logs/clear", "/admin/keys/1/delete",
         "/admin/keys/bulk/delete-invalid", "/admin/clients"]


def main():
    checks = Checks()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as EC
        from selenium.webdriver.support.ui import WebDriverWait
    except ImportError:
        webdriver = None
    if not (chromium and driver_path and webdriver):
        print("SKIP browser end-to-end: chromium, chromedriver or selenium is not installed "
              "(apt-get install chromium chromium-driver; pip install selenium)")
        checks.skipped += 1
        checks.finish()
    shots = sys.argv[2] if len(sys.argv) > 2 else tempfile.mkdtemp()
    os.makedirs(shots, exist_ok=True)
    stack = Stack(sys.argv[1])
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1300,1400", f"--user-data-dir={tempfile.mkdtemp()}"]:
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(driver_path), options=options)
    browser.set_page_load_timeout(30)
    base = stack.base
    try:
        def login():
            browser.get(base + "/")
            browser.find_element(By.NAME, "username").send_keys(ADMIN[0])
            browser.find_element(By.NAME, "password").send_keys(ADMIN[1])
            browser.find_element(By.CSS_SELECTOR, "form.login button").click()
            # A click returns before the next page has loaded: wait for it.
            WebDriverWait(browser, 15).until(EC.url_matches(r"/admin/?$"))
            assert "Dashboard" in browser.find_element(By.TAG_NAME, "h1").text

        def import_key():
            browser.get(base + "/admin/keys")
            browser.find_element(By.NAME, "keys").send_keys(GOOD)
            browser.find_element(By.CSS_SELECTOR, "form[action='/admin/keys/import'] button").click()
            status = WebDriverWait(browser, 15).until(
                EC.presence_of_element_located((By.CSS_SELECTOR, ".banner.info"))).text
            assert "1 added" in status, status
            rows = browser.find_element(By.CSS_SELECTOR, "table tbody").text
            assert "sk-e2e-...0001" in rows and "active" in rows, rows
            # The fake answers 410 on /v1/user/info, as SiliconFlow China does: unknown, not 0.
            assert "unknown" in rows and "0.00" not in rows, rows
            assert GOOD not in browser.page_source, "full key shown"
            browser.save_screenshot(os.path.join(shots, "keys-first.png"))

        def dashboard_chart():
            for _ in range(5):
                stack.chat()
            stack.chat(model="deepseek-ai/DeepSeek-V3", stream=True)
            browser.get(base + "/admin")
            charts = browser.find_elements(By.CSS_SELECTOR, "figure.chart")
            assert len(charts) >= 4, len(charts)
            bars = browser.find_elements(By.CSS_SELECTOR, "figure.chart .col i")
            assert bars, "no bars drawn"
            assert GOOD not in browser.page_source
            cards = browser.find_element(By.CSS_SELECTOR, ".cards").text
            assert "unknown" in cards and "¥0.00" not in cards, cards
            browser.save_screenshot(os.path.join(shots, "dashboard-first.png"))

        def logs_page():
            browser.get(base + "/admin/logs")
            text = browser.find_element(By.CSS_SELECTOR, "table tbody").text
            assert "Qwen/Qwen3-8B" in text and "stream" in text, text

        def more_traffic():
            # A rate-limited key (calls fail over from it), a dead one, a bad model.
            stack.admin("POST", "/import_keys", {"keys": [BUSY, DEAD]})
            for i in range(12):
                stack.chat(stream=i % 4 == 0)
            try:
                stack.chat(model="no-such-model")
            except Exception:
                pass

        def clients_page():
            browser.get(base + "/admin/clients")
            browser.find_element(By.NAME, "name").send_keys("browser-team")
            browser.find_element(By.NAME, "rpm").send_keys("60")
            models = browser.find_element(By.NAME, "models")
            models.send_keys("Qwen/*")
            models.find_element(By.XPATH, "./ancestor::form").submit()
            WebDriverWait(browser, 15).until(EC.presence_of_element_located((By.CSS_SELECTOR, "code.secret")))
            key = browser.find_element(By.CSS_SELECTOR, "code.secret").text
            assert key.startswith("sk-") and len(key) == 51, key
            req = urllib.request.Request(base + "/v1/models", headers={"Authorization": "Bearer " + key})
            with urllib.request.urlopen(req, timeout=30) as r:
                ids = [m["id"] for m in json.loads(r.read())["data"]]
            assert ids == ["Qwen/Qwen3-8B", "Qwen/tiny-window"], ids
            browser.get(base + "/admin/clients")
            assert key not in browser.page_source, "the key is shown once"
            assert "browser-team" in browser.page_source
            browser.save_screenshot(os.path.join(shots, "clients.png"))

        def aliases_page():
            browser.get(base + "/admin/aliases")
            box = browser.find_element(By.NAME, "aliases")
            box.clear()
            box.send_keys("claude-*haiku* = Qwen/Qwen3-8B\nclaude-* = deepseek-ai/DeepSeek-V3\n")
            box.find_element(By.XPATH, "./ancestor::form").submit()
            notice = WebDriverWait(browser, 15).until(
                EC.presence_of_element_located((By.CSS_SELECTOR, ".banner"))).text
            assert "Saved 2 aliases" in notice, notice
            stack.chat(model="claude-opus-4-8")
            deadline = time.time() + 10
            while True:
                browser.get(base + "/admin/logs")
                text = browser.find_element(By.CSS_SELECTOR, "table tbody").text
                if "as claude-opus-4-8" in text or time.time() > deadline:
                    break
                time.sleep(0.2)
            assert "deepseek-ai/DeepSeek-V3" in text and "as claude-opus-4-8" in text, text
            browser.get(base + "/admin/aliases")
            browser.save_screenshot(os.path.join(shots, "aliases.png"))

        def viewport(width, height=900):
            browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})

        def fits(width):
            viewport(width)
            for path in PAGES:
                browser.get(base + path)
                scroll, inner = browser.execute_script(
                    "return [document.documentElement.scrollWidth, window.innerWidth]")
                assert scroll <= inner, f"{path} at {width} px: the page is {scroll} px wide"
                header = browser.execute_script("return document.querySelector('header.top').offsetHeight")
                assert header < 60, f"{path} at {width} px: the header wraps ({header} px)"
                overlap = browser.execute_script(
                    "const out = document.querySelector('form.logout').getBoundingClientRect().left;"
                    "return [...document.querySelectorAll('header.top nav a')]"
                    ".filter(a => a.getBoundingClientRect().right > out + 0.5).map(a => a.textContent)")
                assert not overlap, f"{path} at {width} px: {overlap} run into Log out"
            browser.save_screenshot(os.path.join(shots, f"bulk-{width}.png"))

        def phone():
            fits(390)
            viewport(390, 1600)
            for name in ["dashboard", "keys", "logs", "clients", "aliases", "models"]:
                browser.get(base + ("/admin" if name == "dashboard" else "/admin/" + name))
                browser.save_screenshot(os.path.join(shots, f"{name}-390.png"))

        def laptop():
            fits(1400)
            viewport(1400, 1000)
            browser.get(base + "/admin/logs")
            heights = browser.execute_script(
                "return [...document.querySelectorAll('table.logs tbody tr')].map(r => r.offsetHeight)")
            assert heights and max(heights) <= 40, f"log rows wrap at 1400 px: {heights}"
            cells = browser.execute_script(
                "return [...document.querySelectorAll('td.nowrap')].map(c => c.getClientRects().length)")
            assert cells and all(n == 1 for n in cells), cells
            browser.save_screenshot(os.path.join(shots, "logs.png"))
            browser.get(base + "/admin/keys")
            browser.save_screenshot(os.path.join(shots, "keys.png"))
            browser.get(base + "/admin")
            legend = browser.find_element(By.CSS_SELECTOR, "figure.chart .legend").text
            assert "after failover" in legend and "upstream errors" in legend, legend
            size = browser.execute_script(
                "return parseFloat(getComputedStyle(document.querySelector('.yaxis span')).fontSize)")
            assert size >= 12, f"chart text is {size} px"
            browser.save_screenshot(os.path.join(shots, "dashboard.png"))

        def logout():
            browser.find_element(By.CSS_SELECTOR, "form.logout button").click()
            WebDriverWait(browser, 15).until(EC.presence_of_element_located((By.NAME, "password")))
            browser.get(base + "/admin")
            assert browser.find_elements(By.NAME, "password"), "still logged in after logout"

        for name, fn in [("log in", login), ("import a key and see it", import_key),
                         ("dashboard shows charts", dashboard_chart), ("logs page", logs_page),
                         ("more traffic: failover, errors", more_traffic),
                         ("clients page: create one, its key shown once, its models only", clients_page),
                         ("aliases page: a table saved, a Claude name served and logged as asked", aliases_page),
                         ("every page fits a 390 px phone, header on one line", phone),
                         ("1400 px: rows on one line, charts readable", laptop), ("log out", logout)]:
            checks.run(name, fn)
        print(f"screenshots in {shots}")
    finally:
        browser.quit()
        stack.stop()
    checks.finish()


if __name__ == "__main__":
    main()
