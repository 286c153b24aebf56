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
  text = re.sub(r"```.*?```", "", text, flags=re.S)  # code blocks
  text = re.sub(r"`[^`\n]*`", "", text)  # code spans
  return _LINK.findall(text)


def _anchors(path: str) -> set[str]:
  """GitHub's heading anchors: lower case, punctuation but '-' and '_' dropped, spaces -> '-'."""
  with open(path, encoding="utf-8") as f:
    text = re.sub(r"```.*?```", "", f.read(), flags=re.S)
  headings = re.findall(r"^#+\s+(.*?)\s*$", text, flags=re.M)
  return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_relative_links_resolve_to_files():
  broken = []
  for page in _pages():
    for target in _links(page):
      if re.match(r"^[a-z][a-z0-9+.-]*:", target):
        continue  # URLs, mail addresses
      path, _, anchor = target.partition("#")
      full = os.path.join(os.path.dirname(page), path) if path else page
      if not os.path.exists(full):
        broken.append(f"{os.path.relpath(page, ROOT)}: {target}")
      elif anchor and full.endswith(".md") and anchor not in _anchors(full):
        broken.append(f"{os.path.relpath(page, ROOT)}: {target} (no such heading)")
  assert not broken, broken


def test_pages_have_links_to_check():
  assert len(_pages()) > 1 and _links(os.path.join(ROOT, "README.md"))


def test_readme_is_at_most_250_lines():
  with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
    assert len(f.read().splitlines()) <= MAX_README_LINES


def test_anchor_rule_matches_github(tmp_path):
  page = tmp_path / "p.md"
  page.write_text(
    "# NaP-RL\n## Seeds in one process (`--num_seeds`, `--seed_mode`)\n"
    "## The paper vs NaP-RL\n```\n# not a heading\n```\n"
  )
  assert _anchors(str(page)) == {
    "nap-rl",
    "seeds-in-one-process---num_seeds---seed_mode",
    "the-paper-vs-nap-rl",
  }
