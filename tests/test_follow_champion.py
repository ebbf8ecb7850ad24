"""A champion promoted while silver runs (``streams.follow_champion``): silver scores with it from
the next micro-batch on, and never with two versions in one batch. Real Spark, Delta and an
MLflow registry on SQLite."""

from __future__ import annotations

import pytest
from pyspark.sql import functions as F

from fraudlake.bronze.ingest import start_bronze_ingest
from fraudlake.conf.settings import SimulatorSettings
from fraudlake.ml.registry import mlflow_client, promote
from fraudlake.ml.train import train_model
from fraudlake.orchestration.pipeline import load_champion
from fraudlake.silver.stream import start_silver
from fraudlake.simulator import generate_batch
from fraudlake.tables import SILVER_SCORED, ensure_tables, table_name
from tests.conftest import make_context

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def _land(spark, ctx, name: str, rows: int, seed: int) -> None:
    """``rows`` simulated transactions (ids ``name-…``) into bronze, through the files source."""
    landing = ctx.paths.home / "landing"
    records = generate_batch(spark, SimulatorSettings(seed=seed, rows_per_day=500), rows)
    records = records.withColumn("transaction_id", F.concat(F.lit(f"{name}-"), "transaction_id"))
    records.drop("_raw", "_source", "_ingest_time").coalesce(1).write.json(str(landing / name))
    start_bronze_ingest(spark, ctx, "files", landing=str(landing), available_now=True).awaitTermination(120)


def test_a_promotion_while_silver_runs_scores_from_the_next_batch_on(spark, tmp_path, monkeypatch):
    # The registry is asked at every batch boundary here (by default at most every 5 s).
    monkeypatch.setattr("fraudlake.ml.serving.FOLLOW_EVERY_SECONDS", 0.0)
    small = {"samples": 2_000, "isolation_forest_trees": 20}
    ctx = make_context(tmp_path / "home", ml=small, streams={"follow_champion": True, "console_alerts_per_batch": 0})
    ensure_tables(spark, ctx)
    train_model(spark, ctx, model="isolation_forest")  # version 1, champion
    train_model(spark, ctx, model="isolation_forest", contamination=0.2)  # version 2, challenger
    _land(spark, ctx, "before", 300, seed=1)

    query, writer = start_silver(spark, ctx, load_champion(spark, ctx))
    try:
        query.processAllAvailable()  # bronze's rows so far, scored by the champion silver started with
        promote(mlflow_client(ctx), ctx, 2)
        _land(spark, ctx, "after", 300, seed=2)
        query.processAllAvailable()
    finally:
        query.stop()
    assert query.exception() is None

    silver = table_name(ctx, SILVER_SCORED)
    # Every row of each silver commit, with the version that scored it: one version per commit.
    scored = spark.sql(
        f"SELECT _commit_version, split(transaction_id, '-')[0] AS landed, model_version "
        f"FROM table_changes('{silver}', 0) WHERE _change_type = 'insert'"
    )
    per_commit = scored.groupBy("_commit_version").agg(
        F.collect_set("model_version").alias("versions"), F.collect_set("landed").alias("landed")
    )
    assert all(len(r["versions"]) == 1 for r in per_commit.collect())
    by_landing = {
        r["landed"]: sorted(r["versions"])
        for r in scored.groupBy("landed").agg(F.collect_set("model_version").alias("versions")).collect()
    }
    assert by_landing == {"before": ["1"], "after": ["2"]}
    assert spark.table(silver).count() == 600 and writer.stats.scored == 600
