"""Tests for scripts/perf_page.py: the performance page generated from a bench JSON."""

import json
import os

import pytest

from scripts import perf_page

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")


def test_page_from_a_small_bench_json(tmp_path):
  bench = tmp_path / "bench.json"
  bench.write_text(
    json.dumps(
      {
        "machine.cpus": 2,
        "machine.jax_backend": "cpu",
        "machine.load_before": 0.5,
        "nap.overhead": 0.99,
        "nap.bench_seconds": 9.4,
        "replay.sample_batches_per_s": 1500.0,
        "replay.add_per_s": 27121.2,
        "learner.flops_per_update": 2263276544.0,
        "learner.seeds4_mode": "loop",
        "scale.seeds4_vs_processes_range": "0.828-0.880",
        "train.error": "RuntimeError: boom",
      }
    )
  )
  out, readme = tmp_path / "performance.md", tmp_path / "README.md"
  readme.write_text(f"# A README\n{perf_page.README_BEGIN}\nold\n{perf_page.README_END}\nafter\n")
  assert perf_page.main([f"--bench={bench}", f"--out={out}", f"--readme={readme}"]) == 0
  rewritten = readme.read_text()
  assert "| `nap.overhead` | 0.99 | <= 1.03: met |" in rewritten and "\nold\n" not in rewritten
  assert rewritten.startswith("# A README\n") and rewritten.endswith("-->\nafter\n")
  lines = out.read_text().splitlines()
  assert lines[0] == "# Performance"
  assert (
    f"`python scripts/bench.py --json={bench}` (every area; `--quick` for shorter runs," in lines
  )
  assert (
    "| `nap` | NaP's weight projection: a jitted Nature-CNN DQN update with and without "
    "it, timed interleaved | 9.4 | `python scripts/bench.py --only=nap` |" in lines
  )
  assert (
    "| `nap.overhead` | 0.99 | <= 1.03: met | update time with the projection / without "
    "(median of interleaved pairs) |" in lines
  )
  assert (
    "| `replay.sample_batches_per_s` | 1,500 | >= 2000: missed | prioritized "
    "`sample(32)` calls per second (wall clock) |" in lines
  )
  assert (
    "| `replay.add_per_s` | 27,121 |  | transitions added per second (8 streams per "
    "call) |" in lines
  )
  assert any(line.startswith("| `learner.flops_per_update` | 2.263e+09 |") for line in lines)
  assert any(line.startswith("| `learner.seeds4_mode` | loop |") for line in lines)
  assert any(
    line.startswith("| `scale.seeds4_vs_processes_range` | 0.828-0.880 |") for line in lines
  )
  assert "| `train.error` | RuntimeError: boom |  | the area failed: the exception |" in lines
  # Areas in bench order; machine and bench-time keys are not rows of the key table.
  keys = [
    line.split("`")[1] for line in lines if line.startswith("| `") and "." in line.split("`")[1]
  ]
  assert keys == [
    "nap.overhead",
    "replay.add_per_s",
    "replay.sample_batches_per_s",
    "learner.flops_per_update",
    "learner.seeds4_mode",
    "train.error",
    "scale.seeds4_vs_processes_range",
  ]
  assert "Machine: CPUs: 2, JAX backend: cpu, 1-minute load before: 0.5." in lines


def test_every_committed_bench_key_has_a_meaning():
  with open(os.path.join(DOCS, "bench.json")) as f:
    results = json.load(f)
  missing = [
    k
    for k in results
    if not k.startswith("machine.")
    and not k.endswith(".bench_seconds")
    and not perf_page.meaning(k)
  ]
  assert not missing


def test_committed_page_is_generated_from_the_committed_json():
  with open(os.path.join(DOCS, "bench.json")) as f:
    results = json.load(f)
  with open(os.path.join(DOCS, "performance.md")) as f:
    assert f.read() == perf_page.render(results, "docs/bench.json")


def test_unreadable_bench_json_is_refused(tmp_path, capsys):
  bad = tmp_path / "bench.json"
  bad.write_text("[1, 2]")
  with pytest.raises(SystemExit):
    perf_page.main([f"--bench={bad}", f"--out={tmp_path / 'p.md'}"])
  assert "--bench" in capsys.readouterr().err


def test_committed_readme_table_is_generated_from_the_committed_json():
  with open(os.path.join(DOCS, "bench.json")) as f:
    results = json.load(f)
  with open(os.path.join(os.path.dirname(DOCS), "README.md")) as f:
    readme = f.read()
  assert perf_page.render_readme(readme, results) == readme
  assert "| `jitted.seeds8_vs_host_loop` |" in perf_page.readme_section(results)
  with pytest.raises(ValueError, match="bench targets from"):
    perf_page.render_readme("# a README without the markers\n", results)


def test_another_bench_json_leaves_the_readme_alone(tmp_path, monkeypatch):
  """Only the committed docs/bench.json rewrites the README by default."""
  monkeypatch.chdir(tmp_path)
  readme = tmp_path / "README.md"
  text = f"# A README\n{perf_page.README_BEGIN}\nold\n{perf_page.README_END}\n"
  readme.write_text(text)
  (tmp_path / "b.json").write_text(json.dumps({"nap.overhead": 0.99}))
  assert perf_page.main(["--bench=b.json", "--out=p.md"]) == 0
  assert readme.read_text() == text and (tmp_path / "p.md").exists()
  (tmp_path / "docs").mkdir()
  (tmp_path / "docs" / "bench.json").write_text(json.dumps({"nap.overhead": 0.99}))
  assert perf_page.main(["--out=p.md"]) == 0  # the committed JSON: the README follows it
  assert "| `nap.overhead` | 0.99 |" in readme.read_text()
