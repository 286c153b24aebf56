"""The documentation's links and the README's length."""

import glob
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_README_LINES = 250
# [text](target) outside code spans; the target up to whitespace or ')'.
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _pages() -> list[str]:
  docs = sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
  return [os.path.join(ROOT, "README.md")] + docs


def _links(path: str) -> list[str]:
  with open(path, encoding="utf-8") as f:
    text = f.read()
  text = re.sub(r"```.*?```", "", text, flags=re.S)   # code blocks
  text = re.sub(r"`[^`\n]*`", "", text)               # code spans
  return _LINK.findall(text)


def test_relative_links_resolve_to_files():
  broken = []
  for page in _pages():
    for target in _links(page):
      if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
        continue   # URLs, mail addresses, anchors within the page
      path = target.split("#", 1)[0]
      if not os.path.exists(os.path.join(os.path.dirname(page), path)):
        broken.append(f"{os.path.relpath(page, ROOT)}: {target}")
  assert not broken, broken


def test_pages_have_links_to_check():
  assert len(_pages()) > 1 and _links(os.path.join(ROOT, "README.md"))


def test_readme_is_at_most_250_lines():
  with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
    assert len(f.read().splitlines()) <= MAX_README_LINES
