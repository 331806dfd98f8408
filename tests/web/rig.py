"""What the web client's browser test and benchmark share: a missived on
loopback, people registered, `missive web` for each, headless chromium
(selenium, chromedriver) on their pages. Exits 77 (skipped) when chromium,
chromedriver or selenium is missing."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tied import tied  # noqa: E402

SKIP = 77


def have_browser():
    if not (os.path.exists("/usr/bin/chromium") and os.path.exists("/usr/bin/chromedriver")):
        return "chromium or chromedriver is not installed (scripts/deps.sh installs them)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "python3-selenium is not installed (scripts/deps.sh installs it)"
    return None


why = have_browser()
if why:
    print("SKIP: " + why)
    sys.exit(SKIP)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402

M = D = SHOTS = work = None

passed = 0
failed = 0


def ok(cond, what):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print("FAIL: " + what, file=sys.stderr, flush=True)
    return cond


def setup(missive_path, missived_path, shots):
    """a scratch directory to work in, the programs to run, where screenshots go"""
    global M, D, SHOTS, work
    M, D = os.path.realpath(missive_path), os.path.realpath(missived_path)
    SHOTS = os.path.realpath(shots)
    os.makedirs(SHOTS, exist_ok=True)
    work = tempfile.mkdtemp(prefix="missive-web-")
    os.chdir(work)


procs = []
drivers = []
env = dict(os.environ, MISSIVE_PASSWORD="correct horse battery")
env.pop("MISSIVE_PASSPHRASE", None)


def cleanup():
    for d in drivers:
        try:
            d.quit()
        except Exception:
            pass
    for p in reversed(procs):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
    shutil.rmtree(work, ignore_errors=True)


def until(fn, timeout=15, step=0.1):
    end = time.time() + timeout
    while True:
        try:
            v = fn()
        except Exception:
            v = None
        if v or time.time() > end:
            return v
        time.sleep(step)


def text_at(d, css, timeout=15, want=""):
    """The text of the first element matching css once it holds want; else the last text seen
    (None when nothing matched). The page may draw an element again while it is read, so the
    element is found afresh on every try."""
    seen = [None]

    def read():
        seen[0] = d.find_element(By.CSS_SELECTOR, css).text
        return want in seen[0]
    until(read, timeout)
    return seen[0]


def missive(who, *args, check=True, timeout=60):
    r = subprocess.run([M, "--data-dir", "dev-" + who, "--account", handle(who)] + list(args),
                       env=env, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        print("missive %s %s: %s" % (who, " ".join(args), r.stderr), file=sys.stderr)
    return r


def handle(who):
    return who.split("-")[0] + "@example.org"


# ---- a server, three people -----------------------------------------------------------

servers = []


def start_missived(port="0"):
    """missived on loopback (on port, or any free one); its TLS port"""
    e = dict(env, MISSIVED_SERVER_LISTEN_PORT=port, MISSIVED_HTTP_LISTEN_PORT="0",
             MISSIVED_ACCOUNTS_ARGON2_MEMLIMIT_KIB="8")
    log = open("srv.log", "ab")
    if os.path.exists("srv/missived.ports"):
        os.remove("srv/missived.ports")
    p = subprocess.Popen([D, "--data-dir", "srv"], env=e, stderr=log, preexec_fn=tied())
    procs.append(p)
    servers.append(p)
    ports = until(lambda: open("srv/missived.ports").read(), 60)
    return re.search(r"^tls (\d+)", ports, re.M).group(1)


def stop_missived():
    """stops the running missived (its data stays)"""
    p = servers.pop()
    p.send_signal(signal.SIGTERM)
    p.wait(30)


def register(who, server):
    h = handle(who)
    subprocess.run([M, "--data-dir", "dev-" + who, "register", h, "--server", server], env=env,
                   capture_output=True)
    code = re.findall(r"handle=%s code=(\S+)" % re.escape(h), open("srv.log").read())[-1]
    r = subprocess.run([M, "--data-dir", "dev-" + who, "register", h, "--code", code], env=env,
                       capture_output=True, text=True)
    ok(r.returncode == 0, "register %s: %s" % (who, r.stderr))


def start_web(who):
    """missive web for who: its first line is the login URL"""
    p = subprocess.Popen([M, "--data-dir", "dev-" + who, "--account", handle(who), "web"], env=env,
                         stdout=subprocess.PIPE, stderr=open("web-%s.log" % who, "ab"), text=True,
                         preexec_fn=tied())
    procs.append(p)
    webs[who] = p
    line = p.stdout.readline().strip()
    m = re.match(r"^web: (http://127\.0\.0\.1:\d+/login\?token=\S+)$", line)
    ok(m is not None, "missive web's first line for %s: %r" % (who, line))
    return m.group(1) if m else None


webs = {}


def stop_webs():
    """stops each missive web: 0 if it stopped cleanly and said nothing of a sanitizer"""
    for who, p in webs.items():
        p.send_signal(signal.SIGTERM)
        try:
            rc = p.wait(30)
        except subprocess.TimeoutExpired:
            rc = "still running"
        said = open(os.path.join(work, "web-%s.log" % who), errors="replace").read()
        ok(rc == 0 and "Sanitizer" not in said, "%s's missive web stops cleanly (%s): %s" % (who, rc, said[-2000:]))


def owner_says(who, requests, wait=1.5):
    """sends JSON-RPC requests to who's owner on its socket (subscribed, schema 2); all it wrote"""
    import socket
    s = socket.socket(socket.AF_UNIX)
    s.connect(os.path.join(work, "dev-" + who, handle(who), "daemon.sock"))
    first = [{"jsonrpc": "2.0", "id": 1, "method": "schema", "params": {"version": 2}},
             {"jsonrpc": "2.0", "id": 2, "method": "subscribe"}]
    for i, (method, params) in enumerate(requests):
        first.append({"jsonrpc": "2.0", "id": 10 + i, "method": method, "params": params})
    s.sendall("".join(json.dumps(r) + "\n" for r in first).encode())
    s.settimeout(0.2)
    got, end, ids = b"", time.time() + 120, set(range(10, 10 + len(requests)))
    while time.time() < end:
        try:
            got += s.recv(65536)
        except socket.timeout:
            pass
        lines = [json.loads(x) for x in got.decode().split("\n")[:-1] if x.strip()]
        if ids <= {x.get("id") for x in lines}:
            end = min(end, time.time() + wait)
    s.close()
    return lines


def browser(name, width=1200, height=820, extra=()):
    o = webdriver.ChromeOptions()
    o.binary_location = "/usr/bin/chromium"
    for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=%d,%d" % (width, height), "--lang=en-US"] + list(extra):
        o.add_argument(a)
    dl = os.path.join(work, "downloads-" + name)
    os.makedirs(dl, exist_ok=True)
    o.add_experimental_option("prefs", {"download.default_directory": dl,
                                        "download.prompt_for_download": False})
    o.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=o)
    d.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": dl})
    d.download_dir = dl
    d.who = name
    d.console = []
    drivers.append(d)
    return d


def js(d, script, *args):
    return d.execute_script(script, *args)


def logs(d):
    """the browser's console so far (kept across calls)"""
    try:
        d.console += d.get_log("browser")
    except Exception:
        pass
    return d.console


def shot(d, name):
    d.save_screenshot(os.path.join(SHOTS, "web-%s.png" % name))


def ready(d):
    return until(lambda: js(d, "return document.body.classList.contains('ready')"), 20)


def open_conv(d, conv):
    """opens a conversation through the New dialog (a handle) or the list (a group)"""
    if conv.startswith("group:"):
        until(lambda: js(d, "const li=document.querySelector('#convs li[data-conv=\"'+arguments[0]+'\"]');"
                            "if(li){li.click();return true}return false", conv))
    else:
        d.find_element(By.ID, "btn-new").click()
        inp = until(lambda: d.find_element(By.CSS_SELECTOR, "dialog[open] input"))
        inp.send_keys(conv, Keys.ENTER)
    return until(lambda: js(d, "return window.missive.state.current") == conv)


def run(main):
    """runs a browser test's main: a screenshot of each page if it stops, its verdict as the exit"""
    try:
        main()
    except Exception as e:
        import traceback
        traceback.print_exc()
        ok(False, "the test stopped: %r" % e)
        for d in drivers:
            shot(d, "failure-" + d.who)
    finally:
        for d in drivers:
            logs(d)
        cleanup()
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(0 if failed == 0 else 1)
