"""A step-by-step profile of each streaming query's micro-batch while the whole pipeline runs on local[2].

    python benchmarks/bench_batch_profile.py [--rate 1000] [--seconds 120] [--steps] [--out batch_profile]

The pipeline runs as in ``fraudlake run`` (every layer, rate source, a freshly trained
model, a fresh home). Over the batches that start after a warm-up third it reports,
per streaming query (names read from ``pipeline.queries``, whatever they are):

- micro-batches, and mean/p50/p95 of every ``durationMs`` entry of the progress reports
  (addBatch, getBatch, latestOffset, queryPlanning, walCommit, commitOffsets,
  triggerExecution), from a ``StreamingQueryListener``;
- Spark jobs per micro-batch: a query runs its jobs (foreachBatch's too) in the job
  group named by its run id, read with ``statusTracker().getJobIdsForGroup``;
- with ``--steps``, wall time of the Python steps inside the ``foreachBatch`` functions
  listed in ``STEP_TARGETS`` (wrapped before the pipeline starts; a target the code
  under test does not have is skipped and listed in the results);
- event time → silver commit and ``_ingest_time`` → silver commit, p50/p95/p99, from
  silver's change data feed (``_commit_timestamp``), for rows ingested after the warm-up.

At ``--seconds`` the sources stop and each later layer drains what they committed
(``drain_in_stages``), so the latest rows are not missing from the latency figures;
batches that start during the drain are not profiled.

To profile another copy of the code (e.g. a frozen commit) with this file, install that
copy non-editable into a folder of its own and put it first on PYTHONPATH; run from a
folder without a ``fraudlake`` directory (Spark's Python workers put their working
folder first on sys.path):

    git worktree add --detach /tmp/before COMMIT
    pip install --no-deps --target /tmp/before-site /tmp/before
    cd /tmp/before-site && PYTHONPATH=/tmp/before-site:REPO python REPO/benchmarks/bench_batch_profile.py --steps --out NAME

The results name which ``fraudlake`` the driver and the Python workers imported.
Writes benchmarks/results/<--out>.json.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

try:
    from benchmarks.common import fresh_context, under_profile, write_results
except ImportError:  # run as a script without the repository on PYTHONPATH
    # Appended, not inserted first: a fraudlake installed elsewhere (the code under test) must win.
    sys.path.append(str(Path(__file__).resolve().parents[1]))
    from benchmarks.common import fresh_context, under_profile, write_results

DURATIONS = ("triggerExecution", "addBatch", "getBatch", "latestOffset", "queryPlanning", "walCommit", "commitOffsets")
WARM_UP_SHARE = 1 / 3

# foreachBatch functions to time step by step with --steps. ``batch``: the foreachBatch
# callable, "module:Class.method"; ``steps``: callables timed when called directly from it, "module:name" or "module:Class.method" (module
# attributes are replaced, so a name the module imported is wrapped where it is called);
# ``actions``: DataFrame methods called directly from it, timed under the label given.
# A step nested in another timed step counts only in the outer one; what no step covers
# is reported as "(rest)".
STEP_TARGETS = (
    {
        # Bronze and silver in one query (fraudlake.orchestration.pipeline): the source and silver's validation
        # to the driver, then silver's routing (timed as steps of this batch, not as a batch of its own) while
        # bronze's append runs on a thread of its own (not timed; "wait for the bronze append" is what was left
        # of it when silver had committed).
        "batch": "fraudlake.orchestration.pipeline:IngestAndScore.__call__",
        "steps": {
            "fraudlake.silver.stream:SilverBatchWriter.validated": "rows and validation to the driver",
            "fraudlake.silver.stream:local_frame": "local_frame",
            "fraudlake.silver.stream:arrow_bounds": "arrow_bounds",
            "fraudlake.silver.stream:SilverBatchWriter._route": "silver near (repeats)",
            "fraudlake.bronze.labels:SimulatedLabels.due": "labels due",
            "fraudlake.silver.stream:SilverBehaviour.features": "behavioural features",
            "fraudlake.silver.stream:score_transactions": "score_transactions",
            "fraudlake.silver.stream:append_once": "append_once",
            "fraudlake.silver.stream:SilverBatchWriter._count": "_count",
            "fraudlake.orchestration.pipeline:_Parallel.join": "wait for the bronze append (and labels)",
        },
    },
    {
        "batch": "fraudlake.silver.stream:SilverBatchWriter.__call__",
        "steps": {
            "fraudlake.silver.stream:SilverBatchWriter.validated": "rows and validation to the driver",
            "fraudlake.silver.stream:arrow_bounds": "arrow_bounds",
            "fraudlake.silver.stream:SilverBatchWriter._route": "silver near (repeats)",
            "fraudlake.silver.stream:SilverBehaviour.features": "behavioural features",
            "fraudlake.silver.stream:local_frame": "local_frame",
            "fraudlake.silver.stream:score_transactions": "score_transactions",
            "fraudlake.silver.stream:append_once": "append_once",
            "fraudlake.silver.stream:SilverBatchWriter._count": "_count",
        },
    },
    {
        "batch": "fraudlake.gold.stream:GoldBatchWriter.__call__",
        "steps": {
            "fraudlake.gold.stream:GoldBatchWriter._restore": "_restore",
            "fraudlake.gold.stream:minute_sums": "minute_sums",
            "fraudlake.gold.stream:user_minute_sums": "user_minute_sums",
            "fraudlake.gold.stream:GoldBatchWriter._alerts": "_alerts",
            "fraudlake.gold.stream:GoldBatchWriter._write_minutes": "_write_minutes",
            "fraudlake.gold.stream:GoldBatchWriter._append_user_minutes": "_append_user_minutes",
        },
        # The batch's first action reads silver's new rows (the Delta source).
        "actions": {"toArrow": "silver rows to the driver"},
    },
)


# --- statistics ---------------------------------------------------------------------------


def summary(values, digits: int = 1) -> dict:
    """Mean, p50, p95 of ``values`` (empty: nulls)."""
    import numpy as np

    if not len(values):
        return {"mean": None, "p50": None, "p95": None}
    array = np.asarray(values, dtype=float)
    return {
        "mean": round(float(array.mean()), digits),
        "p50": round(float(np.percentile(array, 50)), digits),
        "p95": round(float(np.percentile(array, 95)), digits),
    }


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def java_processes() -> int:
    """JVMs running on the machine (ours included): other Spark jobs compete for the 2 cores."""
    count = 0
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            count += comm.read_text().strip() == "java"
        except OSError:
            pass
    return count


# --- per micro-batch progress and jobs ----------------------------------------------------


def _progress_listener(spark):
    """A StreamingQueryListener keeping every progress report once per (run id, batch id).

    For each new report it also takes the jobs that appeared in the query's job group
    (its run id) since the previous report: those of the batch just ended (the listener
    runs asynchronously, so a job the next batch started before the report was handled
    counts here; the mean per batch is unaffected).
    """
    from pyspark.sql.streaming import StreamingQueryListener

    tracker = spark.sparkContext.statusTracker()

    class BatchProgress(StreamingQueryListener):
        def __init__(self):
            self.lock = threading.Lock()
            self.batches: dict[str, dict[int, dict]] = {}  # run id -> batch id -> record
            self.names: dict[str, str] = {}
            self.seen_jobs: dict[str, set] = {}

        def onQueryStarted(self, event):
            with self.lock:
                self.names[str(event.runId)] = event.name

        def onQueryProgress(self, event):
            progress = event.progress
            run_id = str(progress.runId)
            jobs = set(tracker.getJobIdsForGroup(run_id))
            with self.lock:
                new_jobs = jobs - self.seen_jobs.setdefault(run_id, set())
                self.seen_jobs[run_id] |= new_jobs
                batches = self.batches.setdefault(run_id, {})
                if progress.batchId in batches:
                    return
                batches[progress.batchId] = {
                    "started": _parse_time(progress.timestamp),
                    "rows": int(progress.numInputRows or 0),
                    "durations": {k: int(v) for k, v in dict(progress.durationMs or {}).items()},
                    "jobs": len(new_jobs),
                }

        def onQueryIdle(self, event):
            pass

        def onQueryTerminated(self, event):
            pass

    return BatchProgress()


def _parse_time(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


def query_profiles(listener, queries: dict, intervals: dict, window: tuple[float, float]) -> dict:
    """Per query: batches that started inside ``window`` (epoch seconds), durations and jobs."""
    profiles = {}
    for name, query in queries.items():
        records = listener.batches.get(str(query.runId), {})
        measured = [r for _, r in sorted(records.items()) if window[0] <= r["started"] < window[1]]
        starts = [r["started"] for r in measured]
        keys = [k for k in DURATIONS if any(k in r["durations"] for r in measured)]
        keys += sorted({k for r in measured for k in r["durations"]} - set(keys))
        profiles[name] = {
            "trigger_seconds": intervals.get(name),
            "batches": len(measured),
            "batches_with_rows": sum(1 for r in measured if r["rows"]),
            "rows_per_batch_mean": round(sum(r["rows"] for r in measured) / len(measured), 1) if measured else None,
            "seconds_between_batch_starts_mean": (
                round((starts[-1] - starts[0]) / (len(starts) - 1), 2) if len(starts) > 1 else None
            ),
            "jobs_per_batch": summary([r["jobs"] for r in measured]),
            "duration_ms": {k: summary([r["durations"][k] for r in measured if k in r["durations"]]) for k in keys},
        }
    return profiles


# --- Python steps inside foreachBatch (--steps) ---------------------------------------------


class StepTimer:
    """Wraps foreachBatch callables and the steps they call; records wall time per step and batch."""

    def __init__(self, spark):
        self.context = spark.sparkContext
        # The concrete DataFrame class (pyspark.sql.classic.dataframe.DataFrame in Spark 4),
        # whose methods override the ones of pyspark.sql.DataFrame.
        self.frame_class = type(spark.range(0))
        self.local = threading.local()
        self.lock = threading.Lock()
        self.records: list[dict] = []  # one per foreachBatch call
        self.patched: list[str] = []
        self.missing: list[str] = []
        self._undo: list[tuple] = []

    def install(self, targets) -> None:
        frame = self.frame_class
        for target in targets:
            owner, attr = self._resolve(target["batch"])
            if owner is None:
                continue
            self._patch(
                owner, attr, self._batch_wrapper(getattr(owner, attr), target.get("actions", {})), target["batch"]
            )
            for spec, label in target["steps"].items():
                owner, attr = self._resolve(spec)
                if owner is not None:
                    self._patch(owner, attr, self._step_wrapper(getattr(owner, attr), label), spec)
        for method in sorted({m for t in targets for m in t.get("actions", {})}):
            if method in vars(frame):
                self._patch(
                    frame,
                    method,
                    self._action_wrapper(getattr(frame, method), method),
                    f"{frame.__module__}.{frame.__qualname__}.{method}",
                )
            else:
                self.missing.append(f"{frame.__module__}.{frame.__qualname__}.{method}")

    def uninstall(self) -> None:
        for owner, attr, original in reversed(self._undo):
            setattr(owner, attr, original)
        self._undo.clear()

    def _resolve(self, spec: str):
        import importlib

        module_name, _, path = spec.partition(":")
        try:
            owner = importlib.import_module(module_name)
            *parents, attr = path.split(".")
            for part in parents:
                owner = getattr(owner, part)
            if attr not in vars(owner):  # only what this class/module defines itself
                raise AttributeError(attr)
            return owner, attr
        except (ImportError, AttributeError):
            self.missing.append(spec)
            return None, None

    def _patch(self, owner, attr: str, wrapper, spec: str) -> None:
        self._undo.append((owner, attr, vars(owner)[attr]))
        setattr(owner, attr, wrapper)
        self.patched.append(spec)

    def _batch_wrapper(self, original, actions: dict):
        timer = self

        @functools.wraps(original)
        def timed_batch(writer, batch, batch_id, *args, **kwargs):
            outer = getattr(timer.local, "batch", None)
            if outer is not None:  # a subclass calling its parent's __call__: time once
                return original(writer, batch, batch_id, *args, **kwargs)
            record = {
                "query_id": timer.context.getLocalProperty("sql.streaming.queryId"),
                "writer": type(writer).__name__,
                "batch_id": batch_id,
                "started": time.time(),
                "steps": [],
            }
            timer.local.batch, timer.local.depth, timer.local.actions = record, 0, actions
            began = time.perf_counter()
            try:
                return original(writer, batch, batch_id, *args, **kwargs)
            finally:
                record["total_ms"] = (time.perf_counter() - began) * 1000
                timer.local.batch = None
                with timer.lock:
                    timer.records.append(record)

        return timed_batch

    def _timed(self, label_of, original, args, kwargs):
        record = getattr(self.local, "batch", None)
        if record is None or self.local.depth:
            return original(*args, **kwargs)
        self.local.depth += 1
        began = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            self.local.depth -= 1
            label = label_of(args)
            calls = sum(1 for seen, _ in record["steps"] if seen.split(" #")[0] == label)
            # The same step called again in a batch (e.g. three persists) is told apart by its order.
            record["steps"].append((f"{label} #{calls + 1}" if calls else label, (time.perf_counter() - began) * 1000))

    def _step_wrapper(self, original, label: str):
        timer = self

        def label_of(args) -> str:
            if label == "append_once" and len(args) > 1:  # (frame, table, app id, batch id)
                return f"append_once({'.'.join(str(args[1]).replace('`', '').split('.')[-2:])})"
            return label

        @functools.wraps(original)
        def timed_step(*args, **kwargs):
            return timer._timed(label_of, original, args, kwargs)

        return timed_step

    def _action_wrapper(self, original, method: str):
        timer = self

        def label_of(args) -> str:
            return timer.local.actions.get(method, f"DataFrame.{method}")

        @functools.wraps(original)
        def timed_action(*args, **kwargs):
            if method not in (getattr(timer.local, "actions", None) or {}):
                return original(*args, **kwargs)
            return timer._timed(label_of, original, args, kwargs)

        return timed_action

    def profiles(self, queries: dict, window: tuple[float, float]) -> dict:
        """Per query (and foreachBatch class): each step's ms per batch, over batches started in ``window``."""
        names = {str(q.id): name for name, q in queries.items()}
        grouped: dict[str, list[dict]] = {}
        for record in self.records:
            if window[0] <= record["started"] < window[1]:
                key = f"{names.get(record['query_id'], record['query_id'])} ({record['writer']})"
                grouped.setdefault(key, []).append(record)
        result = {}
        for key, records in sorted(grouped.items()):
            # Steps in the order they run (a step some batches skip sits where it runs in the others).
            positions: dict[str, list[float]] = {}
            for r in records:
                for index, (label, _) in enumerate(r["steps"]):
                    positions.setdefault(label, []).append(index / max(1, len(r["steps"]) - 1))
            labels = sorted(positions, key=lambda label: sum(positions[label]) / len(positions[label]))
            steps = {}
            for label in labels:
                per_batch = [ms for r in records for lab, ms in r["steps"] if lab == label]
                steps[label] = {"batches": len(per_batch), **summary(per_batch)}
            rest = [r["total_ms"] - sum(ms for _, ms in r["steps"]) for r in records]
            steps["(rest)"] = {"batches": len(rest), **summary(rest)}
            result[key] = {
                "batches": len(records),
                "foreachBatch_total_ms": summary([r["total_ms"] for r in records]),
                "steps_ms": steps,
            }
        return result


# --- the run ---------------------------------------------------------------------------------


def with_model(spark, ctx) -> None:
    """A small model registered as the champion (as bench_pipeline.py trains it)."""
    from fraudlake.ml.train import train_model
    from fraudlake.tables import ensure_tables

    ensure_tables(spark, ctx)
    train_model(spark, ctx, model="gradient_boosting", samples=20_000)


def code_under_test(spark) -> dict:
    """Which fraudlake the driver imported, and which one Spark's Python workers import."""
    import importlib

    from pyspark.sql import functions as F

    driver = {
        name: importlib.import_module(name).__file__
        for name in (
            "fraudlake",
            "fraudlake.silver.stream",
            "fraudlake.gold.stream",
            "fraudlake.orchestration.pipeline",
        )
    }

    @F.udf("string")
    def worker_module(_):
        import importlib as lib

        return lib.import_module("fraudlake.silver.stream").__file__

    worker = spark.range(1).select(worker_module("id")).first()[0]
    return {"driver": driver, "python_worker_fraudlake_silver_stream": worker}


def stop(pipeline) -> None:
    """Sources first, then each layer once it has caught up (falls back to a plain stop)."""
    from fraudlake.orchestration.streaming import stop_between_batches

    try:
        from fraudlake.orchestration.streaming import drain_in_stages

        if getattr(pipeline, "stages", None):
            drain_in_stages(pipeline.queries, pipeline.stages, getattr(pipeline, "intervals", {}) or {})
    finally:
        stop_between_batches([q for q in pipeline.queries.values() if q.isActive])


def silver_latency(spark, ctx, measured_from: float) -> dict:
    """Event time and ingest time → silver commit (change data feed), for rows ingested after ``measured_from``."""
    from pyspark.sql import functions as F

    from fraudlake.tables import SILVER_SCORED, table_name

    changes = (
        spark.read.format("delta")
        .option("readChangeFeed", "true")
        .option("startingVersion", 0)
        .table(table_name(ctx, SILVER_SCORED))
        .where(
            (F.col("_change_type") == "insert")
            & (F.col("_ingest_time") >= F.timestamp_micros(F.lit(int(measured_from * 1_000_000))))
        )
    )
    committed = F.col("_commit_timestamp").cast("double")
    row = changes.select(
        F.count("*").alias("rows"),
        F.percentile(committed - F.col("_ingest_time").cast("double"), F.array(*map(F.lit, (0.5, 0.95, 0.99)))).alias(
            "ingest"
        ),
        F.percentile(committed - F.col("event_time").cast("double"), F.array(*map(F.lit, (0.5, 0.95, 0.99)))).alias(
            "event"
        ),
    ).first()

    def quantiles(values) -> dict:
        return {
            p: round(v, 2) for p, v in zip(("p50", "p95", "p99"), values or (None,) * 3, strict=True) if v is not None
        }

    return {
        "rows_measured": row["rows"],
        "ingest_to_silver_commit_seconds": quantiles(row["ingest"]),
        "event_to_silver_commit_seconds": quantiles(row["event"]),
    }


def run(spark, base, args) -> dict:
    from fraudlake.orchestration.pipeline import parse_layers, start_pipeline

    ctx = fresh_context(base)
    load = {"start": loadavg(), "java_processes_start": java_processes()}
    code = code_under_test(spark)
    with_model(spark, ctx)
    listener = _progress_listener(spark)
    spark.streams.addListener(listener)
    timer = StepTimer(spark) if args.steps else None
    if timer:
        timer.install(STEP_TARGETS)
        print(f"timing steps of {len(timer.patched)} callables; not found: {timer.missing or 'none'}", flush=True)
    load_samples = []
    try:
        with open(os.devnull, "w") as devnull:
            pipeline = start_pipeline(spark, ctx, parse_layers(args.layers), "rate", rate=args.rate, out=devnull)
            started = time.time()
            try:
                while time.time() - started < args.seconds:
                    time.sleep(min(5.0, max(0.0, args.seconds - (time.time() - started))))
                    load_samples.append(os.getloadavg()[0])
                    failed = [n for n, q in pipeline.queries.items() if not q.isActive]
                    if failed:
                        raise RuntimeError(
                            f"queries stopped early: {failed}: {pipeline.queries[failed[0]].exception()}"
                        )
                ended = time.time()
            finally:
                stop(pipeline)
        window = (started + WARM_UP_SHARE * args.seconds, ended)
        load.update(
            end=loadavg(),
            java_processes_end=java_processes(),
            one_minute_during_run={"min": round(min(load_samples), 2), "max": round(max(load_samples), 2)},
        )
        result = {
            "profile": args.profile,
            "n_users": ctx.settings.simulator.n_users,
            "layers": args.layers,
            "rate": args.rate,
            "seconds": args.seconds,
            "master": args.master,
            "code_note": args.code_note,
            "code_under_test": code,
            "load_average": load,
            "measured_window_seconds": [round(window[0] - started, 1), round(window[1] - started, 1)],
            "queries": query_profiles(listener, pipeline.queries, getattr(pipeline, "intervals", {}) or {}, window),
        }
        if timer:
            result["foreach_batch_steps"] = timer.profiles(pipeline.queries, window)
            result["steps_patched"], result["steps_not_found"] = timer.patched, timer.missing
        result["latency"] = silver_latency(spark, ctx, window[0])
    finally:
        if timer:
            timer.uninstall()
        spark.streams.removeListener(listener)
        shutil.rmtree(ctx.paths.home, ignore_errors=True)
    return result


HOW_MEASURED = (
    "Whole pipeline (fraudlake.orchestration.pipeline.start_pipeline, every layer, rate source) on a fresh home with a "
    "gradient_boosting champion trained on 20k simulated rows; profiled over micro-batches whose trigger started "
    "between measured_window_seconds (after a warm-up third, before the sources stop; the drain after is not "
    "profiled). queries.*.duration_ms: the durationMs entries of each batch's progress report (StreamingQueryListener, "
    "one report per batch id), mean/p50/p95 in ms. jobs_per_batch: Spark jobs that appeared in the query's job group "
    "(its run id; statusTracker().getJobIdsForGroup, works with the UI off) between two progress reports. "
    "foreach_batch_steps (--steps): wall ms per batch of the Python steps called directly from each foreachBatch "
    "callable in STEP_TARGETS (lazy steps only build plans; a DataFrame action or write runs the plan, filling caches "
    "on the way); '(rest)' is the callable's time outside the timed steps. latency: silver change data feed "
    "_commit_timestamp minus _ingest_time / event_time, exact percentiles, rows ingested after the warm-up; the "
    "sources stop at --seconds and the later layers drain, so the last rows count. load_average: os.getloadavg() "
    "(1, 5, 15 min) at start and end, 1-min samples every 5 s during the run, and JVMs on the machine: other Spark "
    "jobs running at the same time slow every figure."
)


def print_table(result: dict) -> None:
    print(f"{'query':<24}{'batches':>8}{'trigger ms':>12}{'addBatch ms':>13}{'jobs/batch':>12}")
    for name, q in result["queries"].items():
        d = q["duration_ms"]
        print(
            f"{name:<24}{q['batches']:>8}{(d.get('triggerExecution') or {}).get('mean') or 0:>12.0f}"
            f"{(d.get('addBatch') or {}).get('mean') or 0:>13.0f}{q['jobs_per_batch']['mean'] or 0:>12.1f}"
        )
    for key, profile in (result.get("foreach_batch_steps") or {}).items():
        print(f"{key}: {profile['batches']} batches, foreachBatch mean {profile['foreachBatch_total_ms']['mean']} ms")
        for label, s in profile["steps_ms"].items():
            print(f"    {label:<40} n={s['batches']:<4} mean {s['mean']:>8} p50 {s['p50']:>8} p95 {s['p95']:>8}")
    print("latency", result["latency"])
    print("load average", result["load_average"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=1000, help="rows/s offered by the rate source")
    parser.add_argument("--seconds", type=float, default=120, help="how long the sources run")
    parser.add_argument("--steps", action="store_true", help="also time the Python steps in STEP_TARGETS")
    parser.add_argument("--out", default="batch_profile", help="results file name (benchmarks/results/NAME.json)")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument(
        "--layers", default="bronze,silver,gold", help="the layers that run (bronze,silver: silver without gold's load)"
    )
    parser.add_argument("--code-note", default=None, help="free text saved with the results, e.g. the commit profiled")
    parser.add_argument("--profile", choices=["latency", "throughput"], default="latency", help="stream profile")
    parser.add_argument("--users", type=int, default=None, help="simulator.n_users (see bench_pipeline.py --users)")
    args = parser.parse_args()

    from fraudlake.settings import Context
    from fraudlake.spark import get_spark

    base = Context.load(home=tempfile.mkdtemp(prefix="fraudlake-bench-session-"))
    if args.users is not None:
        base = base.with_settings(simulator={"n_users": args.users})
    base = under_profile(base, args.profile)
    spark = get_spark(base, master=args.master)
    result = run(spark, base, args)
    path = write_results(args.out, {"how_measured": HOW_MEASURED, **result})
    print_table(result)
    print(f"-> {path}")


if __name__ == "__main__":
    main()
