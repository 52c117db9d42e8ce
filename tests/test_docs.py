"""The docs cannot go stale quietly: the config reference is generated, the README stays short, links resolve."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README_MAX_LINES = 200
# [text](target) and ![alt](target), the target up to a space or ")"; reference-style links are not used.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _config_reference():
    spec = importlib.util.spec_from_file_location("config_reference", REPO / "scripts" / "config_reference.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _markdown_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def test_config_reference_is_the_generators_output():
    expected = _config_reference().render()
    actual = (REPO / "docs" / "config.md").read_text()
    assert actual == expected, "docs/config.md is stale: run `python scripts/config_reference.py > docs/config.md`"


def test_config_reference_lists_every_key():
    from pipeline.config import Config

    text = (REPO / "docs" / "config.md").read_text()
    for section, info in Config.model_fields.items():
        assert f"## {section}\n" in text
        sub = info.annotation
        fields = getattr(sub, "model_fields", None) or getattr(sub, "__dataclass_fields__", None)
        for name in fields or ():
            assert f"| `{section}.{name}` |" in text, f"{section}.{name} missing"
    assert "| `cameras[].camera_id` |" in text
    assert str(REPO) not in text  # paths of the shipped assets are written <assets>/..., not this checkout's


def test_readme_is_short():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move details to docs/"


def test_readme_keeps_the_test_command():
    # .ci/run runs "the README's test command": keep it in the README.
    text = (REPO / "README.md").read_text()
    assert "make test" in text
    assert "make test-fast" in text


@pytest.mark.parametrize("doc", _markdown_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(doc: Path):
    broken = []
    for target in LINK.findall(doc.read_text()):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # http:, mailto:, ... and anchors in the same file
        path = target.split("#", 1)[0]
        if not (doc.parent / path).exists():
            broken.append(target)
    assert not broken, f"{doc.relative_to(REPO)}: links to missing files: {broken}"


def test_link_pattern():
    found = LINK.findall('see [a](docs/a.md), ![b](b.png "title") and [c](https://x.org/y#z)')
    assert found == ["docs/a.md", "b.png", "https://x.org/y#z"]
