"""Render an SVG in headless Chromium (Debian's) and read back where its shapes landed.

The SVG is put inline in an HTML page whose script measures every shape of a known class
with ``getBBox()`` and writes the figures into the page; ``--dump-dom`` prints the page
after the script ran. Nothing is fetched from the network (file:// only, and Chromium's
own background traffic is switched off).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

CLASSES = ("attempt", "restore", "job", "final-sync", "lost", "notice", "deadline")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
_PAGE = """<!doctype html><html><body>{svg}
<pre id="out"></pre>
<script>
const found = {{}};
for (const cls of {classes}) {{
  found[cls] = [...document.querySelectorAll("svg ." + cls)].map((el) => {{
    const b = el.getBBox();
    return {{x: b.x, y: b.y, width: b.width, height: b.height,
             attempt: el.dataset.attempt, end: el.dataset.end}};
  }});
}}
document.getElementById("out").textContent = JSON.stringify(found);
</script></body></html>
"""


def find_chromium() -> str:
    """Chromium's path; skipped only outside CI when it is not installed."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (apt-get install chromium); CI needs it")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return found


def bar_geometry(chromium: str, svg: Path, work: Path) -> dict[str, list[dict[str, Any]]]:
    work.mkdir(parents=True, exist_ok=True)
    page = work / "page.html"
    page.write_text(_PAGE.format(svg=svg.read_text(), classes=json.dumps(CLASSES)))
    out = subprocess.run(
        [chromium, *FLAGS, f"--user-data-dir={work / 'profile'}", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    match = re.search(r'<pre id="out">(.*?)</pre>', out.stdout, re.S)
    assert match and match[1], f"the page's script did not report: {out.stdout[-2000:]}"
    found: dict[str, list[dict[str, Any]]] = json.loads(html.unescape(match[1]))
    return found
