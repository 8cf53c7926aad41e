"""End-to-end in real headless Chromium (Debian's chromium + chromium-driver,
driven by selenium): log in, import a key, see it on the keys page, see a
chart on the dashboard. Usage: python3 browser_e2e.py PATH_TO_BINARY [SHOT_DIR]
Skips, saying why, only when Chromium or its driver is not installed.
"""
import os
import shutil
import sys
import tempfile

from harness import ADMIN, GOOD, Checks, Stack


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
            browser.save_screenshot(os.path.join(shots, "keys.png"))

        def dashboard_chart():
            for _ in range(5):
                stack.chat()
            stack.chat(model="deepseek-ai/DeepSeek-V3", stream=True)
            browser.get(base + "/admin")
            charts = browser.find_elements(By.CSS_SELECTOR, "figure.chart svg")
            assert len(charts) >= 4, len(charts)
            bars = browser.find_elements(By.CSS_SELECTOR, "figure.chart svg rect.bar1")
            assert bars, "no bars drawn"
            assert GOOD not in browser.page_source
            cards = browser.find_element(By.CSS_SELECTOR, ".cards").text
            assert "unknown" in cards and "¥0.00" not in cards, cards
            browser.save_screenshot(os.path.join(shots, "dashboard.png"))

        def logs_page():
            browser.get(base + "/admin/logs")
            text = browser.find_element(By.CSS_SELECTOR, "table tbody").text
            assert "Qwen/Qwen3-8B" in text and "stream" in text, text
            browser.save_screenshot(os.path.join(shots, "logs.png"))

        def logout():
            browser.find_element(By.CSS_SELECTOR, "form.logout button").click()
            WebDriverWait(browser, 15).until(EC.presence_of_element_located((By.NAME, "password")))
            browser.get(base + "/admin")
            assert browser.find_elements(By.NAME, "password"), "still logged in after logout"

        for name, fn in [("log in", login), ("import a key and see it", import_key),
                         ("dashboard shows charts", dashboard_chart), ("logs page", logs_page), ("log out", logout)]:
            checks.run(name, fn)
        print(f"screenshots in {shots}")
    finally:
        browser.quit()
        stack.stop()
    checks.finish()


if __name__ == "__main__":
    main()
