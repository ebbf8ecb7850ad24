"""Silver's micro-batch replayed after a crash, on real Spark, Delta and MLflow.

Structured Streaming replays the last micro-batch after a crash; silver's two appends
are idempotent, and its repeat check looks silver itself up. A replay must route every
row exactly as the first attempt did, wherever the first attempt died: nothing lost,
nothing scored twice, nothing moved to quarantine as a "repeat" of itself.
"""

from __future__ import annotations

from unittest import mock

import pytest
from pyspark.sql import functions as F

from fraudlake.ml.train import train_model
from fraudlake.orchestration.pipeline import load_champion
from fraudlake.silver import stream as silver_stream
from fraudlake.silver.stream import SilverBatchWriter
from fraudlake.simulator import generate_batch
from fraudlake.tables import SILVER_QUARANTINE, SILVER_SCORED, ensure_tables, table_name
from tests.conftest import attached, make_context

pytestmark = [pytest.mark.spark, pytest.mark.slow]  # trains a model and streams a lakehouse


@pytest.fixture(scope="module")
def trained_home(spark, tmp_path_factory):
    ctx = make_context(
        tmp_path_factory.mktemp("silver-replay") / "home", ml={"samples": 2_000, "isolation_forest_trees": 20}
    )
    ensure_tables(spark, ctx)
    train_model(spark, ctx, model="isolation_forest")
    return ctx, load_champion(spark, ctx)


@pytest.fixture
def silver_home(spark, trained_home):
    """The module's home, the session's table names on its tables (the writers append by name)."""
    ctx, scorer = trained_home
    return attached(spark, ctx), scorer


def _batch(spark, ctx, first: int, n: int, bad: int = 0):
    """``n`` simulated bronze rows from row ``first``, the last ``bad`` of them with a bad amount."""
    rows = generate_batch(spark, ctx.settings.simulator, first + n).where(
        F.regexp_extract("transaction_id", r"(\d+)$", 1).cast("long") >= first
    )
    if bad:
        cut = f"tx-{first + n - bad:012d}"
        rows = rows.withColumn("amount", F.when(F.col("transaction_id") >= cut, F.lit(-1.0)).otherwise(F.col("amount")))
    return rows.localCheckpoint()


def _counts(spark, ctx, ids) -> dict:
    def rows(spec):
        return spark.table(table_name(ctx, spec)).where(F.col("transaction_id").isin(ids))

    scored, quarantined = rows(SILVER_SCORED), rows(SILVER_QUARANTINE)
    return {
        "scored": scored.count(),
        "scored_ids": scored.select("transaction_id").distinct().count(),
        "quarantined": quarantined.count(),
        "reasons": sorted(r[0] for r in quarantined.select("quarantine_reason").distinct().collect()),
    }


def _ids(batch) -> list[str]:
    return [r[0] for r in batch.select("transaction_id").collect()]


def test_a_replay_after_every_append_committed_changes_nothing(spark, silver_home):
    ctx, scorer = silver_home
    batch = _batch(spark, ctx, 0, 40)  # all valid: the first attempt writes no quarantine
    writer = SilverBatchWriter(ctx, scorer, "test-replay-committed")
    writer(batch, 0)
    first = _counts(spark, ctx, _ids(batch))
    assert first == {"scored": 40, "scored_ids": 40, "quarantined": 0, "reasons": []}
    SilverBatchWriter(ctx, scorer, "test-replay-committed")(batch, 0)  # the restarted query's replay
    assert _counts(spark, ctx, _ids(batch)) == first


def test_a_replay_after_a_crash_between_quarantine_and_silver_lands_each_row_once(spark, silver_home):
    ctx, scorer = silver_home
    batch = _batch(spark, ctx, 1_000, 40, bad=5)
    real_append = silver_stream.append_once
    scored_table = table_name(ctx, SILVER_SCORED)

    def crash_before_silver(frame, table, app_id, batch_id, verify=True):
        if table == scored_table:
            raise RuntimeError("injected crash before the silver append")
        return real_append(frame, table, app_id, batch_id, verify)

    with mock.patch.object(silver_stream, "append_once", side_effect=crash_before_silver):
        with pytest.raises(RuntimeError, match="injected crash"):
            SilverBatchWriter(ctx, scorer, "test-replay-crashed")(batch, 0)
    assert _counts(spark, ctx, _ids(batch))["quarantined"] == 5
    SilverBatchWriter(ctx, scorer, "test-replay-crashed")(batch, 0)
    assert _counts(spark, ctx, _ids(batch)) == {
        "scored": 35,
        "scored_ids": 35,
        "quarantined": 5,
        "reasons": ["amount not positive and finite"],
    }


def test_a_later_batch_with_the_same_rows_is_quarantined_as_repeats(spark, silver_home):
    ctx, scorer = silver_home
    batch = _batch(spark, ctx, 2_000, 20)
    writer = SilverBatchWriter(ctx, scorer, "test-repeats")
    writer(batch, 0)
    again = batch.withColumn("_ingest_time", F.col("_ingest_time") + F.expr("INTERVAL 1 MINUTE"))  # received again
    writer(again, 1)
    counts = _counts(spark, ctx, _ids(batch))
    assert counts == {"scored": 20, "scored_ids": 20, "quarantined": 20, "reasons": ["duplicate_transaction_id"]}
    assert writer.stats.reasons == {"duplicate_transaction_id": 20}
