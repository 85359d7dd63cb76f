#!/usr/bin/env python3
"""Open every page of the built documentation site in headless Chromium and fail on what a reader
would see broken.

    python docs/check_site.py [SITE_DIR] [--widths 1280,390] [--screenshots DIR]

This is a real-browser check, not HTML parsing: the script serves ``SITE_DIR`` (default ``site``)
on 127.0.0.1, starts Chromium (``chromium``, ``chromium-browser``, ``google-chrome`` or
``$CHROMIUM``) with ``--remote-debugging-pipe`` and drives it over the DevTools protocol through
that pipe (standard library only: no websocket client, nothing installed). Every ``index.html``
is loaded at each width (1280 px, a laptop, and 390 px, a phone); once the page has loaded,
MathJax has typeset and the fonts are in, it fails (exit 1, one line per problem) on

* raw TeX in the rendered text: ``\\(``, ``\\[``, ``$$``, ``$...$`` or a ``\\command`` outside
  ``pre``/``code`` (the table of contents and the page title included), a math span MathJax did
  not typeset, or a TeX error MathJax reported;
* ``>>>`` outside a code block;
* a broken image (the file is missing or does not decode);
* a console error, an uncaught exception, a failed or 4xx/5xx request;
* a request to anything but the local site (the site must work offline: external hosts are
  made unresolvable for the browser);
* a page wider than the viewport (``scrollWidth > clientWidth``, with the elements that stick
  out), and a code block that needs a horizontal scrollbar (code must wrap or fit; tables may
  scroll inside the content column).

Exit status: 0 all pages pass, 1 problems found (listed), 2 the check could not run (no Chromium,
no site, the browser failed to start).
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import functools
import http.server
import json
import os
import select
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

MAX_PER_KIND = 12  # problems of one kind listed per page view, then a count
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

# Runs in the page once it has loaded; returns the page's problems as a JSON-able object.
PAGE_SCRIPT = r"""
(async () => {
  const withTimeout = (promise, ms) => Promise.race([promise, new Promise(r => setTimeout(r, ms))]);
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await withTimeout(MathJax.startup.promise, 20000);
  }
  if (document.fonts) await withTimeout(document.fonts.ready, 10000);
  await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));

  const snippet = (text) => text.replace(/\s+/g, " ").trim().slice(0, 100);
  const describe = (el) => {
    if (!el || el.nodeType !== 1) return String(el);
    let s = el.tagName.toLowerCase();
    if (el.id) s += "#" + el.id;
    if (typeof el.className === "string" && el.className.trim()) {
      s += "." + el.className.trim().split(/\s+/).slice(0, 3).join(".");
    }
    if (el.closest("nav")) return s + " (in the navigation / table of contents)";
    let heading = null;  // the last heading before el: where a reader finds it
    for (const h of document.querySelectorAll("article h1, article h2, article h3, article h4")) {
      if (h === el || h.compareDocumentPosition(el) & Node.DOCUMENT_POSITION_FOLLOWING) heading = h;
      else break;
    }
    if (heading) s += ` (under "${snippet(heading.textContent).replace(/¶$/, "").trim()}")`;
    return s;
  };
  const inside = (node, selector) => {
    const el = node.nodeType === 1 ? node : node.parentElement;
    return !!(el && el.closest(selector));
  };
  const problems = {tex: [], prompts: [], images: [], overflow: null, code: []};

  // Raw TeX and >>> in the text a reader sees (the table of contents and the nav included).
  const rawTex = /\\[()\[\]]|\$\$|\$[^$\s][^$]*?\$|\\[A-Za-z]{2,}/;
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const text = node.nodeValue;
    if (!text.trim()) continue;
    if (inside(node, "script, style, noscript, template, textarea")) continue;
    const code = inside(node, "pre, code");
    if (!code && !inside(node, "mjx-container, .arithmatex") && rawTex.test(text)) {
      problems.tex.push(`raw TeX in ${describe(node.parentElement)}: "${snippet(text)}"`);
    }
    if (!code && text.includes(">>>")) {
      problems.prompts.push(`'>>>' outside a code block in ${describe(node.parentElement)}: "${snippet(text)}"`);
    }
  }
  if (rawTex.test(document.title)) problems.tex.push(`raw TeX in the page title: "${document.title}"`);
  for (const el of document.querySelectorAll(".arithmatex")) {  // typeset: the TeX replaced by mjx-container
    if (!el.querySelector("mjx-container")) {
      problems.tex.push(`math not typeset (raw TeX) in ${describe(el)}: "${snippet(el.textContent)}"`);
    }
  }
  // A typeset formula draws its characters through CSS (::before content) and web fonts: check both.
  let blank = 0, example = "";
  for (const container of document.querySelectorAll("mjx-container")) {
    const chars = container.querySelectorAll("mjx-c");
    if (chars.length && [...chars].every(c => getComputedStyle(c, "::before").content === "none")) {
      blank += 1;
      if (!example) example = describe(container.closest(".arithmatex") || container);
    }
  }
  if (blank) problems.tex.push(`${blank} formula(s) typeset but drawn blank (no character styles), e.g. in ${example}`);
  if (document.fonts) {
    for (const font of document.fonts) {
      if (font.status === "error") {
        problems.tex.push(`font failed to load: ${font.family} (${font.style} ${font.weight})`);
      }
    }
  }
  for (const el of document.querySelectorAll("mjx-merror")) {
    const message = el.getAttribute("data-mjx-error") || el.textContent;
    problems.tex.push(`TeX error in ${describe(el.closest(".arithmatex") || el)}: ${snippet(message)}`);
  }

  // Images: load every one again (lazy ones too) and decode it.
  for (const img of document.querySelectorAll("img")) {
    const src = img.currentSrc || img.src;
    if (!src) { problems.images.push(`<img> without src in ${describe(img.parentElement)}`); continue; }
    const probe = new Image();
    probe.src = src;
    try {
      await withTimeout(probe.decode(), 10000);
      if (!probe.naturalWidth) throw new Error("no pixels");
    } catch (error) {
      problems.images.push(`broken image ${src} (${error.message || error})`);
    }
  }

  // Width: the page against the viewport, and the elements that stick out of it.
  const root = document.documentElement;
  const viewport = root.clientWidth;
  if (root.scrollWidth > viewport + 1 || document.body.scrollWidth > viewport + 1) {
    const culprits = [];
    for (const el of document.body.querySelectorAll("*")) {
      const rect = el.getBoundingClientRect();
      if (rect.width === 0 || rect.right <= viewport + 1) continue;
      const own = getComputedStyle(el);
      if (own.position === "fixed" || own.visibility === "hidden" || own.opacity === "0") continue;
      // Only the outermost element that sticks out, and not one an ancestor clips.
      let parent = el.parentElement, clipped = false, parentSticksOut = false;
      for (; parent && parent !== document.body; parent = parent.parentElement) {
        const style = getComputedStyle(parent);
        if (style.overflowX !== "visible") { clipped = true; break; }
        if (parent.getBoundingClientRect().right > viewport + 1) { parentSticksOut = true; break; }
      }
      if (!clipped && !parentSticksOut) culprits.push(`${describe(el)} reaches ${Math.round(rect.right)} px`);
      if (culprits.length >= 5) break;
    }
    problems.overflow = {scrollWidth: Math.max(root.scrollWidth, document.body.scrollWidth), viewport, culprits};
  }

  // Code blocks that hide part of their text behind a horizontal scrollbar.
  for (const code of document.querySelectorAll("pre > code")) {
    if (code.scrollWidth > code.clientWidth + 1) {
      const firstLine = code.textContent.split("\n").find(l => l.trim()) || "";
      problems.code.push(`code block needs horizontal scrolling (${code.scrollWidth} px in ${code.clientWidth} px) ` +
                         `in ${describe(code.parentElement)}: "${snippet(firstLine)}"`);
    }
  }
  return problems;
})()
"""


class CheckError(Exception):
    """The check could not run (exit 2)."""


class Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
    the browser reads commands on fd 3 and writes replies and events on fd 4, each message a JSON
    text followed by a NUL byte)."""

    def __init__(self, executable: str, width: int, height: int, host: str):
        self.profile = tempfile.TemporaryDirectory(prefix="check_site_chromium_")
        self.stderr_path = os.path.join(self.profile.name, "stderr.txt")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # Keep the child's ends away from 3 and 4 so the dup2s below cannot overwrite each other.
        child_in = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD_CLOEXEC, 10)
        child_out = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(to_browser_r)
        os.close(from_browser_w)
        args = [
            executable, "--headless", "--no-sandbox", "--remote-debugging-pipe",
            f"--user-data-dir={self.profile.name}", f"--window-size={width},{height}",
            "--hide-scrollbars", "--no-first-run", "--no-default-browser-check", "--disable-extensions",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-default-apps", "--mute-audio", "--disable-gpu", "--disable-dev-shm-usage",
            # Offline: every host but the local server is unresolvable.
            f"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE {host}",
            "about:blank",
        ]
        actions = [
            (os.POSIX_SPAWN_DUP2, child_in, 3),
            (os.POSIX_SPAWN_DUP2, child_out, 4),
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, self.stderr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ]
        try:
            self.pid = os.posix_spawn(executable, args, os.environ, file_actions=actions)
        finally:
            os.close(child_in)
            os.close(child_out)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    def _stderr_tail(self) -> str:
        with contextlib.suppress(OSError):
            return Path(self.stderr_path).read_text(errors="replace")[-2000:]
        return ""

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            ready, _, _ = select.select([self._from_browser], [], [], remaining)
            if not ready:
                raise TimeoutError
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise CheckError("Chromium closed the DevTools pipe (it exited?)\n" + self._stderr_tail())
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def call(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 60) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        data = json.dumps(message).encode() + b"\0"
        while data:
            data = data[os.write(self._to_browser, data):]
        deadline = time.monotonic() + timeout
        while True:
            try:
                reply = self._read_message(deadline)
            except TimeoutError:
                raise CheckError(f"no answer from Chromium to {method} within {timeout:g} s") from None
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise CheckError(f"{method}: {reply['error'].get('message', reply['error'])}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, session: str, timeout: float) -> bool:
        """Read until ``method`` arrives for ``session`` (kept in ``events``); False on timeout."""
        if any(e.get("method") == method and e.get("sessionId") == session for e in self.events):
            return True
        deadline = time.monotonic() + timeout
        while True:
            try:
                event = self._read_message(deadline)
            except TimeoutError:
                return False
            self.events.append(event)
            if event.get("method") == method and event.get("sessionId") == session:
                return True

    def drain(self, seconds: float) -> None:
        """Collect the events that arrive within ``seconds``."""
        deadline = time.monotonic() + seconds
        with contextlib.suppress(TimeoutError):
            while True:
                self.events.append(self._read_message(deadline))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.call("Browser.close", timeout=5)
        for _ in range(50):
            pid, _ = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                break
            time.sleep(0.1)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, 9)
            os.waitpid(self.pid, 0)
        for fd in (self._to_browser, self._from_browser):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.profile.cleanup()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass


def find_browser(explicit: str | None) -> str | None:
    for name in ([explicit] if explicit else [os.environ.get("CHROMIUM"), *BROWSERS]):
        if name and (path := shutil.which(name)):
            return path
    return None


def pages_of(site: Path) -> list[str]:
    """The site's pages as URL paths ('' for the home page, 'api/' ...), in a stable order."""
    pages = []
    for index in sorted(site.rglob("index.html")):
        relative = index.parent.relative_to(site).as_posix()
        if relative.startswith(("assets", "search", "javascripts", "stylesheets")):
            continue
        pages.append("" if relative == "." else relative + "/")
    return pages


def browser_problems(events: list[dict], session: str, origin: str) -> list[str]:
    """Console errors, uncaught exceptions, failed and external requests among ``events``."""
    problems: list[str] = []
    urls: dict[str, str] = {}
    reported: set[str] = set()

    def report(message: str, url: str = "") -> None:
        if message not in problems:
            problems.append(message)
        if url:
            reported.add(url)

    for event in events:
        if event.get("sessionId") != session:
            continue
        method, params = event.get("method"), event.get("params", {})
        if method == "Network.requestWillBeSent":
            url = params.get("request", {}).get("url", "")
            urls[params.get("requestId")] = url
            if url.split(":", 1)[0] in ("http", "https", "ws", "wss") and not url.startswith(origin + "/"):
                report(f"external request (the site must work offline): {url}", url)
        elif method == "Network.responseReceived":
            response = params.get("response", {})
            if response.get("status", 200) >= 400:
                report(f"HTTP {response['status']} for {response.get('url')}", response.get("url", ""))
        elif method == "Network.loadingFailed" and not params.get("canceled"):
            url = urls.get(params.get("requestId"), "")
            if url not in reported:
                report(f"request failed ({params.get('errorText')}): {url or params.get('requestId')}", url)
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            report(f"console.{params['type']}: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            report(f"uncaught exception: {details.get('exception', {}).get('description', details.get('text'))}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            if entry.get("url", "") not in reported or not entry.get("url"):
                report(f"console error ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}".rstrip())
    return problems


def check_page(browser: Browser, session: str, origin: str, page: str, width: int,
               screenshots: Path | None, max_shot_height: int) -> list[str]:
    url = f"{origin}/{page}"
    browser.events.clear()
    result = browser.call("Page.navigate", {"url": url}, session)
    if result.get("errorText"):
        return [f"could not load: {result['errorText']}"]
    if not browser.wait_event("Page.loadEventFired", session, timeout=60):
        return ["the page did not finish loading within 60 s"]
    evaluated = browser.call("Runtime.evaluate", {"expression": PAGE_SCRIPT, "awaitPromise": True,
                                                  "returnByValue": True}, session, timeout=120)
    if "exceptionDetails" in evaluated:
        details = evaluated["exceptionDetails"]
        return [f"the check script failed: {details.get('exception', {}).get('description', details)}"]
    found = evaluated["result"]["value"]
    browser.drain(0.3)  # late console messages and requests

    problems = []
    for kind in ("tex", "prompts", "images", "code"):
        problems += found[kind][:MAX_PER_KIND]
        if len(found[kind]) > MAX_PER_KIND:
            problems.append(f"... and {len(found[kind]) - MAX_PER_KIND} more like the above")
    if found["overflow"]:
        over = found["overflow"]
        problems.append(f"page is {over['scrollWidth']} px wide in a {over['viewport']} px viewport"
                        + "".join(f"\n      - {c}" for c in over["culprits"]))
    problems += browser_problems(browser.events, session, origin)
    if screenshots is not None:
        metrics = browser.call("Page.getLayoutMetrics", {}, session)
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        height = min(int(size["height"]), max_shot_height)
        shot = browser.call("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}}, session, timeout=120)
        name = (page.strip("/").replace("/", "_") or "index") + f"_{width}.png"
        (screenshots / name).write_bytes(base64.b64decode(shot["data"]))
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("site", nargs="?", default="site", help="the built site (default: site)")
    parser.add_argument("--widths", default="1280,390", help="viewport widths in px (default: 1280,390)")
    parser.add_argument("--height", type=int, default=900, help="viewport height in px (default: 900)")
    parser.add_argument("--pages", help="only these pages, comma-separated URL paths, e.g. 'api/,math/,'")
    parser.add_argument("--screenshots", type=Path, help="save a full-page PNG of every page and width here")
    parser.add_argument("--max-shot-height", type=int, default=16000, help="cut screenshots at this height (px)")
    parser.add_argument("--chromium", help="the browser executable (default: chromium, chromium-browser, ...)")
    args = parser.parse_args(argv)

    site = Path(args.site)
    if not (site / "index.html").is_file():
        print(f"check_site: no built site at {site}/ (run `make docs` first)", file=sys.stderr)
        return 2
    executable = find_browser(args.chromium)
    if executable is None:
        print("check_site: Chromium not found (looked for $CHROMIUM, " + ", ".join(BROWSERS) + ").\n"
              "  Install it, e.g. on Debian/Ubuntu: apt-get install -y chromium", file=sys.stderr)
        return 2
    widths = [int(w) for w in args.widths.split(",")]
    pages = pages_of(site) if args.pages is None else [p.strip() for p in args.pages.split(",")]
    if args.screenshots:
        args.screenshots.mkdir(parents=True, exist_ok=True)

    handler = functools.partial(QuietHandler, directory=str(site.resolve()))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    origin = f"http://127.0.0.1:{server.server_address[1]}"

    failures: dict[tuple[str, int], list[str]] = {}
    started = time.monotonic()
    browser = None
    try:
        browser = Browser(executable, widths[0], args.height, "127.0.0.1")
        version = browser.call("Browser.getVersion", timeout=60).get("product", "Chromium")
        print(f"check_site: {len(pages)} pages x widths {widths} in {version} (real browser, DevTools protocol), "
              f"served from {site}/ at {origin}")
        for width in widths:
            target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = browser.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                browser.call(f"{domain}.enable", {}, session)
            browser.call("Emulation.setDeviceMetricsOverride", {
                "width": width, "height": args.height, "deviceScaleFactor": 1, "mobile": width < 600}, session)
            for page in pages:
                problems = check_page(browser, session, origin, page, width, args.screenshots,
                                      args.max_shot_height)
                status = "ok" if not problems else f"{len(problems)} problem(s)"
                print(f"  {'/' + page:<16} {width:>5} px  {status}", flush=True)
                if problems:
                    failures[(page, width)] = problems
            browser.call("Target.closeTarget", {"targetId": target})
    except CheckError as error:
        print(f"check_site: could not run the check: {error}", file=sys.stderr)
        return 2
    finally:
        if browser is not None:
            browser.close()
        server.shutdown()

    elapsed = time.monotonic() - started
    if failures:
        count = sum(len(p) for p in failures.values())
        print(f"\ncheck_site: FAILED, {count} problem(s) on {len(failures)} page view(s) ({elapsed:.0f} s):")
        for (page, width), problems in failures.items():
            print(f"\n/{page} at {width} px:")
            for problem in problems:
                print(f"  - {problem}")
        return 1
    print(f"check_site: all {len(pages) * len(widths)} page views pass ({elapsed:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
