"""Random ``kill -9`` across ``fraudlake run``, ``rescore`` and ``maintain`` on one home, then a
clean run and ``fraudlake check --full``: the invariants hold whatever was killed when.

Each round starts one of the three commands as a user would (its own process and JVM), waits
a random time within the round's window, and kills its whole process group with SIGKILL
(some rounds end by themselves first: a short ``rescore`` or ``maintain``). Between kills,
``check`` runs every ``--check-every`` rounds. Figures (rounds, kills, rows, every check's
result, seconds) go to ``benchmarks/results/random_kills.json``.

    python benchmarks/bench_random_kills.py --kills 100          # about 75 minutes on 2 cores
    python benchmarks/bench_random_kills.py --kills 10 --out random_kills_10
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import write_results  # noqa: E402

RATE = 200


def fraudlake(home: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "FRAUDLAKE_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "fraudlake.cli", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def started(home: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "FRAUDLAKE_HOME": str(home)}
    return subprocess.Popen(
        [sys.executable, "-m", "fraudlake.cli", *args],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def check(home: Path) -> dict:
    result = fraudlake(home, "check", "--full", "--format", "json")
    report = json.loads(result.stdout) if result.stdout.strip() else {"ok": False, "error": result.stderr[-2000:]}
    report["exit_code"] = result.returncode
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--kills",
        type=int,
        default=100,
        help="kill -9s to deliver (default 100); a round whose command ended by itself first does not count",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--check-every", type=int, default=10, help="run fraudlake check every N rounds")
    parser.add_argument("--out", default="random_kills")
    args = parser.parse_args()

    rng = random.Random(args.seed)
    home = Path(tempfile.mkdtemp(prefix="fraudlake-kills-")) / "home"
    began = time.time()
    trained = fraudlake(home, "train", "--samples", "5000", "--model", "gradient_boosting")
    assert trained.returncode == 0, trained.stderr[-2000:]

    rounds, checks = [], []
    n = 0
    while sum(r["killed"] for r in rounds) < args.kills:
        n += 1
        command = rng.choices(["run", "rescore", "maintain"], weights=[6, 2, 2])[0]
        if command == "run":
            argv = ["run", "--rate", str(RATE)]
        elif command == "rescore":
            argv = ["rescore", "--since", "2000-01-01T00:00:00Z"]  # every row another version did not score
        else:
            argv = ["maintain", "--optimize"]
        wait = rng.uniform(5, 40)  # the JVM takes ~10 s to start: some kills land before any write
        process = started(home, *argv)
        time.sleep(wait)
        ended_by_itself = process.poll() is not None
        if not ended_by_itself:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(60)
        rounds.append({"round": n, "command": command, "after_seconds": round(wait, 1), "killed": not ended_by_itself})
        print(f"round {n}: {command} {'killed' if not ended_by_itself else 'ended'} after {wait:.1f}s", flush=True)
        if n % args.check_every == 0:
            report = check(home)
            checks.append({"after_round": n, **report})
            print(f"  check: {'ok' if report.get('ok') else 'FAILED'}", flush=True)

    # A clean run drains what the kills left, then the final check.
    final_run = fraudlake(home, "run", "--rate", str(RATE), "--duration", "20", "--format", "json")
    final = check(home)
    summary = json.loads(final_run.stdout) if final_run.returncode == 0 else {"error": final_run.stderr[-2000:]}
    path = write_results(
        args.out,
        {
            "kills": sum(r["killed"] for r in rounds),
            "rounds": rounds,
            "checks_between": [{"after_round": c["after_round"], "ok": c.get("ok")} for c in checks],
            "final_run_exit_code": final_run.returncode,
            "final_rows": summary.get("rows"),
            "final_check": final,
            "seconds": round(time.time() - began, 1),
        },
    )
    ok = final.get("ok") and all(c.get("ok") for c in checks)
    print(f"{'every check held' if ok else 'a check FAILED'}; results in {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
