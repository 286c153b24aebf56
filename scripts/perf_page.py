r"""Writes the performance page (docs/performance.md) from a `scripts/bench.py` JSON file.

  python scripts/bench.py --json=docs/bench.json        # measure (every area)
  python scripts/perf_page.py                           # docs/bench.json -> docs/performance.md
  python scripts/perf_page.py --bench=b.json --out=p.md   # leaves the README alone

The page lists what each area measures and the command that measures it, then every key of
the JSON with its value, its target where `scripts/bench.py` sets one (met or missed) and
what it means. The README's table of the targeted keys, between `README_BEGIN` and
`README_END`, is rewritten from the same JSON. Both are generated: edit this script or rerun
the bench, not them.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scripts.bench import AREAS, TARGETS  # noqa: E402

# Area -> (key prefix, what it measures). The `envs` area writes `env.*` keys.
AREA_INFO = {
  "nap": (
    "nap",
    "NaP's weight projection: a jitted Nature-CNN DQN update with and without "
    "it, timed interleaved",
  ),
  "replay": (
    "replay",
    "the replay memory at Atari scale: 1M prioritized transitions of "
    "84x84 frames, n-step 3, batches of 32",
  ),
  "envs": (
    "env",
    "8 Pong environments through the wrapper against ALE's raw vector "
    "environment, timed in alternating blocks",
  ),
  "learner": (
    "learner",
    "the agent update alone (Nature CNN, batch 32): updates/s, FLOPs, "
    "FLOP utilization against the machine's matmul rate, seeds per "
    "process, per-layer kernels",
  ),
  "train": (
    "train",
    "the whole training loop (dqn on Pong) and the cost of the plasticity diagnostics",
  ),
  "scale": (
    "scale",
    "S seeds in one process against S separate processes on the same cores (dqn on Pong)",
  ),
  "compare": (
    "compare",
    "`scripts/compare.py` on 100 synthetic runs of 10M frames (2 variants x 5 games x 10 seeds)",
  ),
  "continual": (
    "continual",
    "one configuration of the continual supervised benchmark, extrapolated to the default grid",
  ),
  "jitted": (
    "jitted",
    "the fully jitted loop (DQN on gymnax Breakout-MinAtar, 4 envs per seed) for 1 and 8 "
    "seeds against the host loop on `minatar:breakout` with the same agent and update ratio; "
    "8 seeds with 3-step prioritized replay, and of Rainbow",
  ),
}

# Key (or fnmatch pattern, first match wins) -> meaning.
MEANINGS = [
  ("nap.overhead", "update time with the projection / without (median of interleaved pairs)"),
  ("nap.update_ms_with_projection", "median update time with the projection (ms)"),
  ("nap.update_ms_without_projection", "median update time without it (ms)"),
  ("nap.device", "JAX backend of the measurement"),
  ("replay.bytes_per_transition", "bytes of every array at full capacity / capacity"),
  ("replay.sample_batches_per_s", "prioritized `sample(32)` calls per second (wall clock)"),
  (
    "replay.sample_batches_per_cpu_s",
    "prioritized `sample(32)` calls per CPU second of the process",
  ),
  ("replay.sample_update_per_s", "`sample` + `update_priorities` pairs per second"),
  ("replay.add_per_s", "transitions added per second (8 streams per call)"),
  ("replay.stored_transitions", "transitions stored when sampling was timed"),
  ("replay.capacity", "capacity of the memory"),
  ("*.load_average", "1-minute load average at the end of the area"),
  ("env.raw_steps_per_s", "agent steps/s of ALE's vector environment, summed over envs"),
  ("env.steps_per_s", "agent steps/s through `envs.make` (the wrapper)"),
  ("env.wrapper_vs_raw", "wrapper speed / raw speed"),
  ("*.num_envs", "environments stepped"),
  ("jitted.seeds1_sps", "agent steps/s of the jitted loop, one seed"),
  (
    "jitted.seeds8_sps",
    "agent steps/s of the jitted loop, 8 seeds in one process (sharded over the cores), summed",
  ),
  ("jitted.seeds8_one_device_sps", "the same 8 seeds vmapped on one CPU device, summed"),
  ("jitted.seeds8_sharded_vs_one_device", "8 seeds sharded over the cores / on one device"),
  ("jitted.host_loop_sps", "agent steps/s of the host loop on `minatar:breakout`"),
  (
    "jitted.seeds8_vs_host_loop",
    "8 seeds jitted / host loop, aggregate agent steps/s: the median of the pairs",
  ),
  ("jitted.seeds8_vs_host_loop_min", "the lowest pair's ratio"),
  (
    "jitted.seeds8_prioritized_sps",
    "the same 8 seeds with 3-step returns and prioritized replay, summed",
  ),
  ("jitted.prioritized_vs_uniform", "3-step prioritized / 1-step uniform replay, 8 seeds"),
  ("jitted.seeds8_rainbow_sps", "the Rainbow MinAtar preset, 8 seeds in one process, summed"),
  ("jitted.seeds8_learner_gflops", "8 seeds' updates/s x XLA's FLOPs of one update"),
  (
    "jitted.seeds8_learner_flop_utilization",
    "8 seeds' learner GFLOP/s / matmul peak measured in the same run",
  ),
  ("learner.flops_per_update", "XLA's cost analysis of the Rainbow update (`nn.Conv`)"),
  ("learner.flops_per_update_analytic", "hand count of the Nature CNN's multiply-adds"),
  ("learner.flops_per_update_gemm_conv", "XLA's count with the GEMM convolutions"),
  ("learner.matmul_gflops", "2048x2048 float32 matmul, XLA's default path (GFLOP/s)"),
  (
    "learner.matmul_eigen_gflops",
    "the 2048x2048 matmul without YNNPACK, XLA's Eigen dot (GFLOP/s)",
  ),
  ("learner.matmul_peak_gflops", "the faster of the two per repetition: the peak"),
  ("learner.flop_utilization", "Rainbow update's FLOP rate / matmul peak (one seed)"),
  ("learner.flop_utilization_xla_grads", "the same with flax's `nn.Conv` derivatives"),
  ("learner.flop_utilization_gemm_conv", "the same with the GEMM convolutions forced"),
  ("learner.flop_utilization_no_donation", "the same without donating the state"),
  (
    "learner.flop_utilization_xla_default_flags",
    "the same without the launchers' XLA:CPU flag (child process)",
  ),
  (
    "learner.achieved_gflops*",
    "GFLOP/s of the update named by the matching `flop_utilization` key",
  ),
  ("learner.rainbow_updates_per_s", "Rainbow updates/s, one seed"),
  ("learner.rainbow_updates_per_s_no_donation", "the same without donating the state"),
  (
    "learner.rainbow_updates_per_s_xla_default_flags",
    "the same without the launchers' XLA:CPU flag",
  ),
  ("learner.rainbow_nap_updates_per_s", "Rainbow+NaP updates/s (LayerNorm and projection)"),
  ("learner.dqn_updates_per_s", "DQN updates/s, one seed"),
  ("learner.rainbow_nap_vs_rainbow", "Rainbow+NaP speed / Rainbow speed"),
  ("learner.rainbow_donated_vs_not", "speed with the state donated / without"),
  ("learner.rainbow_s2d_grads_vs_xla", "speed with space-to-depth derivatives / with `nn.Conv`'s"),
  ("learner.seeds4_mode", "how `--num_seeds=4` runs by default here"),
  ("learner.seeds4_flop_utilization", "4 seeds in the default mode: FLOP rate / peak"),
  ("learner.seeds4_flop_utilization_vmap", "4 seeds vmapped (GEMM convolutions) / peak"),
  ("learner.seeds4_flop_utilization_vmap_xla_conv", "4 seeds vmapped with `nn.Conv` / peak"),
  ("learner.seeds4_achieved_gflops*", "GFLOP/s of the matching `seeds4_flop_utilization` variant"),
  ("learner.seeds4_per_seed_vs_one_seed", "per-seed speed of 4 seeds (default mode) / 1 seed"),
  ("learner.seeds4_per_seed_vs_one_seed_vmap", "the same, vmapped"),
  (
    "learner.seeds4_vmap_gemm_vs_xla_conv",
    "vmapped speed with GEMM convolutions / with grouped `nn.Conv`",
  ),
  ("learner.layer.*_vs_matmul", "that pass alone, FLOP rate / matmul peak"),
  ("learner.layer_kernels_ms", "time of the update's convolution and dense passes (ms)"),
  ("learner.layer_update_ms", "time of the update in the same measurement (ms)"),
  ("learner.layer_kernels_share_of_update", "their share of the update's time"),
  ("learner.layer_kernels_utilization_cap", "utilization the passes alone would allow"),
  ("train.dqn_pong_sps", "agent steps/s of the training loop after learning starts"),
  ("train.dqn_pong_sps_vs_cleanrl", "that / 91, CleanRL's dqn_atari_jax.py on 2 cores"),
  ("train.diagnostics_seconds", "one diagnostics pass (s)"),
  ("train.diagnostics_overhead", "one pass / the learner time of the 1,000 updates between passes"),
  ("scale.repeats", "stacked/separate pairs per S"),
  ("scale.seeds1_sps", "one seed, one process: agent steps/s"),
  ("scale.seeds*_vs_processes_range", "the ratio's spread over the pairs"),
  ("scale.seeds*_vs_processes", "S seeds in one process / S processes (median of pairs)"),
  ("scale.seeds*_vs_seeds1", "S seeds in one process / one seed alone (aggregate steps/s)"),
  ("scale.seeds*_sps", "S seeds in one process: aggregate agent steps/s"),
  ("scale.processes*_sps", "S single-seed processes: aggregate agent steps/s"),
  ("compare.seconds_100_runs", "wall-clock seconds of the full report on 100 runs"),
  ("compare.cpu_seconds_100_runs", "CPU seconds of the report on 100 runs"),
  ("compare.seconds_100_runs_train_metric", "wall-clock seconds with `--metric=train`"),
  ("compare.figures", "figures written"),
  ("compare.log_mb", "size of the 100 runs' logs (MB)"),
  ("compare.metrics_lines", "lines in their `metrics.jsonl` files"),
  ("continual.config_seconds", "one configuration (`none`, MLP, 3 seeds), timed tasks (s)"),
  ("continual.config_seconds_upgd", "one `upgd` configuration, timed tasks (s)"),
  ("continual.config_seconds_30_tasks", "`none` extrapolated to 30 tasks (s)"),
  ("continual.config_seconds_30_tasks_upgd", "`upgd` extrapolated to 30 tasks (s)"),
  ("continual.seconds_per_task", "per task, training and diagnostics, `none` (s)"),
  ("continual.seconds_per_task_upgd", "the same for `upgd` (s)"),
  ("continual.diagnostics_seconds_per_task", "end-of-task diagnostics, `none` (s)"),
  ("continual.diagnostics_seconds_per_task_upgd", "the same for `upgd` (s)"),
  ("continual.num_tasks_timed", "tasks timed per configuration"),
  ("continual.grid_configs", "configurations the default grid trains"),
  ("continual.grid_minutes_estimate", "estimated minutes for the default grid"),
  ("*.error", "the area failed: the exception"),
]


def meaning(key: str) -> str:
  for pattern, text in MEANINGS:
    if fnmatch.fnmatchcase(key, pattern):
      return text
  return ""


def fmt(value: Any) -> str:
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return str(value)
  if abs(value) >= 1e7:
    return f"{value:.4g}"
  if abs(value) >= 1000:
    return f"{round(value):,}"
  if isinstance(value, int):
    return str(value)
  return f"{value:.4g}"


def target(key: str, value: Any) -> str:
  if key not in TARGETS:
    return ""
  op, bound = TARGETS[key]
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return f"{op} {bound}"
  ok = value <= bound if op == "<=" else value >= bound
  return f"{op} {bound}: {'met' if ok else 'missed'}"


def area_of(key: str) -> str | None:
  prefix = key.split(".", 1)[0]
  for area, (area_prefix, _) in AREA_INFO.items():
    if prefix in (area, area_prefix):
      return area
  return None


README_BEGIN = "<!-- bench targets from docs/bench.json: python scripts/perf_page.py -->"
README_END = "<!-- bench targets end -->"


def key_table(results: dict[str, Any], keys: list[str]) -> list[str]:
  """Markdown table lines: each of `keys`, its value in `results`, target and meaning."""
  lines = ["| key | value | target | meaning |", "|---|---:|---|---|"]
  for key in keys:
    value = results[key]
    lines.append(f"| `{key}` | {fmt(value)} | {target(key, value)} | {meaning(key)} |")
  return lines


def readme_section(results: dict[str, Any]) -> str:
  """The README's table: each targeted key of `results`, its value, target and meaning."""
  return "\n".join(key_table(results, [k for k in TARGETS if k in results]))


def render_readme(text: str, results: dict[str, Any]) -> str:
  """`text` (the README) with the part between its markers replaced by `readme_section`."""
  begin, end = text.find(README_BEGIN), text.find(README_END)
  if begin < 0 or end < begin:
    raise ValueError(f"no {README_BEGIN!r} ... {README_END!r} section")
  head = text[: begin + len(README_BEGIN)]
  return f"{head}\n{readme_section(results)}\n{text[end:]}"


def render(results: dict[str, Any], bench_path: str = "docs/bench.json") -> str:
  """The page's Markdown for `results` (the JSON object `scripts/bench.py` writes)."""
  machine = ", ".join(
    f"{label} {results[key]}"
    for label, key in (
      ("CPUs:", "machine.cpus"),
      ("JAX backend:", "machine.jax_backend"),
      ("platform:", "machine.platform"),
      ("1-minute load before:", "machine.load_before"),
      ("after:", "machine.load_after"),
    )
    if key in results
  )
  lines = [
    "# Performance",
    "",
    f"Generated by `python scripts/perf_page.py` from `{bench_path}`, the output of",
    f"`python scripts/bench.py --json={bench_path}` (every area; `--quick` for shorter runs,",
    "`--only=<area>,...` for some areas). Rerun both commands rather than edit this page.",
    "",
    *([f"Machine: {machine}."] if machine else []),
    "The machine may be shared: ratios measured within one area (their sides timed",
    "interleaved) are steadier than absolute rates.",
    "",
    "| area | what it measures | seconds | command |",
    "|---|---|---:|---|",
  ]
  for area in AREAS:
    _, text = AREA_INFO[area]
    seconds = results.get(f"{area}.bench_seconds", "")
    lines.append(
      f"| `{area}` | {text} | {fmt(seconds)} | `python scripts/bench.py --only={area}` |"
    )
  lines += [
    "",
    "Each area's keys are defined in the docstring of `scripts/benches/<area>.py`.",
    "",
  ]
  order = {area: i for i, area in enumerate(AREAS)}
  keys = [k for k in results if not k.startswith("machine.") and not k.endswith(".bench_seconds")]
  keys.sort(key=lambda k: (order.get(area_of(k), len(order)), k))
  return "\n".join(lines + key_table(results, keys)) + "\n"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--bench", default="docs/bench.json", help="JSON from scripts/bench.py")
  parser.add_argument("--out", default="docs/performance.md", help="page to write")
  parser.add_argument(
    "--readme",
    default=None,
    help="README whose table to rewrite ('': none); default README.md when --bench is the "
    "committed docs/bench.json, none otherwise (another JSON must not rewrite the README)",
  )
  args = parser.parse_args(argv)
  try:
    with open(args.bench) as f:
      results = json.load(f)
  except (OSError, ValueError) as e:
    parser.error(f"--bench={args.bench}: cannot read a bench JSON object ({e})")
  if not isinstance(results, dict):
    parser.error(f"--bench={args.bench}: expected a JSON object of bench keys")
  if args.readme is None:
    args.readme = "README.md" if args.bench == "docs/bench.json" else ""
  if args.readme:
    try:
      with open(args.readme) as f:
        readme = render_readme(f.read(), results)
    except (OSError, ValueError) as e:
      parser.error(f"--readme={args.readme}: {e}")
  text = render(results, args.bench)
  with open(args.out, "w") as f:
    f.write(text)
  print(f"wrote {args.out} ({len(text.splitlines())} lines)", file=sys.stderr)
  if args.readme:
    with open(args.readme, "w") as f:
      f.write(readme)
    print(f"rewrote the bench table of {args.readme}", file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())
