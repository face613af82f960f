"""Every YAML and JSON block in README.md and docs/*.md parses: a reader can paste it."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
_BLOCK = re.compile(r"^( *)```(json|yaml|yml)\n(.*?)^\1```", re.M | re.S)


def blocks() -> list[tuple[str, str, str]]:
    found = []
    for path in DOCS:
        text = path.read_text()
        for m in _BLOCK.finditer(text):
            line = text[: m.start()].count("\n") + 1
            found.append((f"{path.name}:{line}", m.group(2), textwrap.dedent(m.group(3))))
    return found


def test_the_docs_have_blocks_to_check() -> None:
    kinds = {kind for _, kind, _ in blocks()}
    assert {"json", "yaml"} <= kinds


@pytest.mark.parametrize(("where", "kind", "body"), blocks(), ids=[b[0] for b in blocks()])
def test_block_parses(where: str, kind: str, body: str) -> None:
    if kind == "json":
        json.loads(body)
    else:
        assert yaml.safe_load(body) is not None


def test_the_kubernetes_job_is_complete() -> None:
    jobs = [
        yaml.safe_load(body) for _, kind, body in blocks() if kind == "yaml" and "kind: Job" in body
    ]
    assert jobs
    for job in jobs:
        assert job["metadata"]["name"], job
        spec = job["spec"]["template"]["spec"]
        assert spec["restartPolicy"] == "Never"
        assert all(c["name"] and c["image"] for c in spec["containers"])
