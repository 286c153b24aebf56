r"""gymnax's Breakout-MinAtar against the original MinAtar, as one JSON.

    python scripts/minatar_parity.py --host=RUN_DIR --jitted=RUN_DIR [--host_as_gymnax=RUN_DIR] \
        --out=summary.json

- `lockstep`: the original game (no sticky actions, its minimal action set) and gymnax's,
  started from the same ball and driven by the same actions (97 % following the
  ball, so that episodes run long and the bricks get cleared), compared at every step:
  observation, reward and termination.
- `random_play`: returns of a uniformly random policy, `--episodes` episodes in each of
  gymnax's game, the original as the host loop makes it (`minatar:breakout`: 6 actions,
  sticky actions 0.1) and the original set up as gymnax (3 actions, no sticky actions).
- `runs`: each seed's mean return over its last 20 episodes in the `--host` (experiments.loop),
  `--jitted` (agents.anakin) and optional `--host_as_gymnax` (experiments.minatar_as_gymnax:
  the host loop with gymnax's set-up) run directories; per loop their mean with a 95 % t
  interval over seeds and a percentile bootstrap interval (scripts.stats); per pair of loops
  whether the t intervals overlap and Welch's test of the difference.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from importlib import metadata

import gymnax
import jax
import jax.numpy as jnp
import minatar
import numpy as np
import scipy.stats

import envs
from experiments import rundir
from scripts import stats

GYMNAX_ID = "Breakout-MinAtar"
LAST = 20  # episodes per seed in a run's final score
COMMAND_FLAGS = (
  "env",
  "agent",
  "seed",
  "num_seeds",
  "num_envs",
  "num_frames",
  "log_every",
  "eval_every",
)


def lockstep(episodes: int, seed: int, max_steps: int = 1000, follow_prob: float = 0.97) -> dict:
  """Steps and mismatches (observation, reward or termination) of the two games in lock-step."""
  env, params = gymnax.make(GYMNAX_ID)
  step = jax.jit(lambda s, a: env.step_env(jax.random.PRNGKey(0), s, a, params))
  _, template = env.reset_env(jax.random.PRNGKey(0), params)
  game = minatar.Environment("breakout", sticky_action_prob=0.0)
  game.seed(seed)
  actions = game.minimal_action_set()  # gymnax's action a is the original's actions[a]
  rng = np.random.default_rng(seed)
  steps = mismatches = 0
  returns = []
  for _ in range(episodes):
    game.reset()
    g = game.env
    state = template.replace(
      ball_x=jnp.int32(g.ball_x), ball_dir=jnp.int32(g.ball_dir), last_x=jnp.int32(g.last_x)
    )
    returns.append(0.0)
    for _ in range(max_steps):
      target = g.ball_x + (1 if g.ball_dir in (1, 2) else -1)  # where the ball goes next
      follow = [0, 2, 1][int(np.sign(target - g.pos))]  # stay, right, left
      a = follow if rng.random() < follow_prob else int(rng.integers(3))
      reward, done = game.act(actions[a])
      obs, state, r, terminated, _ = step(state, a)
      same = np.array_equal(np.asarray(obs).astype(bool), game.state())
      mismatches += not (same and float(r) == reward and bool(terminated) == done)
      steps, returns[-1] = steps + 1, returns[-1] + reward
      if done:
        break
  # An episode past 30 (the bricks of a wall) has seen the wall rebuilt.
  return {
    "episodes": episodes,
    "steps": steps,
    "max_return": max(returns),
    "mismatches": mismatches,
  }


def gymnax_random_returns(episodes: int, seed: int) -> np.ndarray:
  """Returns of uniformly random play in gymnax's game (episodes end by the time limit)."""
  env, params = gymnax.make(GYMNAX_ID)

  def episode(key):
    reset_key, key = jax.random.split(key)
    _, state = env.reset(reset_key, params)

    def body(carry, key):
      state, total, live = carry
      action_key, step_key = jax.random.split(key)
      action = jax.random.randint(action_key, (), 0, env.num_actions)
      _, state, reward, terminated, truncated, _ = env.step(step_key, state, action, params)
      return (state, total + reward * live, live & ~(terminated | truncated)), None

    keys = jax.random.split(key, params.max_steps_in_episode)
    (_, total, _), _ = jax.lax.scan(body, (state, jnp.float32(0), jnp.bool_(True)), keys)
    return total

  keys = jax.random.split(jax.random.PRNGKey(seed), episodes)
  return np.asarray(jax.jit(jax.vmap(episode))(keys), np.float64)


def minatar_random_returns(episodes: int, seed: int, **options) -> np.ndarray:
  """Returns of uniformly random play in `envs.make('minatar:breakout', **options)`."""
  env = envs.make("minatar:breakout", num_envs=8, seed=seed, **options)
  rng = np.random.default_rng(seed)
  env.reset()
  returns = []
  while len(returns) < episodes:
    out = env.step(rng.integers(env.num_actions, size=env.num_envs))
    returns.extend(out.episode_return[out.terminated | out.truncated].tolist())
  env.close()
  return np.asarray(returns[:episodes], np.float64)


def describe(x: np.ndarray) -> dict:
  """Mean with its 95 % t interval, std, and the 2.5 / 97.5 percentiles of `x`."""
  x = np.asarray(x, np.float64)
  half = scipy.stats.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size)
  return {
    "n": int(x.size),
    "mean": float(x.mean()),
    "ci95": [float(x.mean() - half), float(x.mean() + half)],
    "std": float(x.std(ddof=1)),
    "percentiles_2.5_97.5": np.percentile(x, [2.5, 97.5]).tolist(),
  }


def random_play(episodes: int, seed: int) -> dict:
  return {
    "gymnax": describe(gymnax_random_returns(episodes, seed)),
    "minatar_host_defaults": describe(minatar_random_returns(episodes, seed)),
    "minatar_as_gymnax": describe(
      minatar_random_returns(episodes, seed, sticky_action_prob=0.0, minimal_action_set=True)
    ),
  }


def _read(path: str, kind: str) -> list[dict]:
  with open(path) as f:
    return [r for r in map(json.loads, f) if r.get("kind") == kind]


def summarize_loop(run_dirs: list[str]) -> dict:
  """Per-seed last-20 returns of the `seed_*` runs under `run_dirs`, their intervals, commands."""
  per_seed, commands = {}, []
  for run_dir in run_dirs:
    seed_dirs = sorted(glob.glob(os.path.join(run_dir, "seed_*")))
    if not seed_dirs:
      raise ValueError(f"{run_dir}: no seed_* run directory in it")
    with open(os.path.join(seed_dirs[0], "config.json")) as f:
      config = json.load(f)
    flags = config["flags"]
    # experiments.minatar_as_gymnax records the environment options it plays with.
    launcher = "minatar_as_gymnax" if "env_options" in config else "train"
    words = [f"--{k}={flags[k]}" for k in COMMAND_FLAGS if flags.get(k) is not None]
    words.append(f"--overrides={','.join(flags['overrides'])}")
    commands.append(" ".join([f"python -m experiments.{launcher}", *words, f"--run_dir={run_dir}"]))
    for d in seed_dirs:
      episodes = _read(os.path.join(d, "metrics.jsonl"), "episode")
      if len(episodes) < LAST:
        raise ValueError(f"{d}: {len(episodes)} episodes, fewer than {LAST}")
      lengths = [e["length"] for e in episodes]
      per_seed[d.rsplit("_", 1)[1]] = {
        "agent_steps": episodes[-1]["agent_steps"],
        "episodes": len(episodes),
        "last20_mean": float(np.mean([e["return"] for e in episodes[-LAST:]])),
        "max_length": max(lengths),
      }
  last = np.array([s["last20_mean"] for s in per_seed.values()])
  boot = stats.stratified_bootstrap([last], stats.AGGREGATES["mean"])
  out = {"commands": commands, "per_seed": per_seed, "last20": describe(last)}
  out["last20"]["bootstrap95"] = [boot.low, boot.high]
  return out


def compare(a: dict, b: dict) -> dict:
  """Two summarized loops: whether their t intervals overlap, and Welch's test of the
  difference of their mean last-20 returns (a - b, with its 95 % interval)."""
  x, y = ([s["last20_mean"] for s in loop["per_seed"].values()] for loop in (a, b))
  (al, ah), (bl, bh) = a["last20"]["ci95"], b["last20"]["ci95"]
  test = scipy.stats.ttest_ind(x, y, equal_var=False)
  low, high = test.confidence_interval(0.95)
  return {
    "ci95_overlap": bool(al <= bh and bl <= ah),
    "difference": float(np.mean(x) - np.mean(y)),
    "difference_ci95": [float(low), float(high)],
    "welch_p": float(test.pvalue),
  }


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
  parser.add_argument("--host", nargs="+", required=True, help="experiments.loop run dirs")
  parser.add_argument("--jitted", nargs="+", required=True, help="gymnax: run dirs")
  parser.add_argument(
    "--host_as_gymnax", nargs="*", default=[], help="experiments.minatar_as_gymnax run dirs"
  )
  parser.add_argument("--episodes", type=int, default=1000, help="random-play episodes")
  parser.add_argument("--lockstep_episodes", type=int, default=300)
  parser.add_argument("--out", required=True, help="the JSON file to write")
  args = parser.parse_args(argv)
  for name in ("episodes", "lockstep_episodes"):
    if getattr(args, name) < 1:
      parser.error(f"--{name}={getattr(args, name)}: must be >= 1")
  runs = {"host": summarize_loop(args.host), "jitted": summarize_loop(args.jitted)}
  runs["host_vs_jitted"] = compare(runs["host"], runs["jitted"])
  if args.host_as_gymnax:
    runs["host_as_gymnax"] = summarize_loop(args.host_as_gymnax)
    runs["host_as_gymnax_vs_jitted"] = compare(runs["host_as_gymnax"], runs["jitted"])
    runs["host_vs_host_as_gymnax"] = compare(runs["host"], runs["host_as_gymnax"])
  summary = {
    "command": " ".join(["python scripts/minatar_parity.py", *(argv or sys.argv[1:])]),
    "versions": {
      **rundir.package_versions(),
      "gymnax": metadata.version("gymnax"),
      "MinAtar": metadata.version("MinAtar"),
    },
    "lockstep": lockstep(args.lockstep_episodes, seed=0),
    "random_play": random_play(args.episodes, seed=0),
    "runs": runs,
  }
  rundir.write_json_atomic(args.out, summary)
  print(json.dumps(summary, indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
