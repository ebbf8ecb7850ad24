"""Exactly-once appends without Delta's per-append transaction check: a writer's first batch
after a start is looked for among the table's commits (its lineage, or Delta's txnAppId for
commits without one), later batches go straight in."""

from __future__ import annotations

import pytest

from fraudlake.streaming_io import ReplayCheck, append_once, batch_committed

pytestmark = pytest.mark.spark


def _table(spark, tmp_path) -> str:
    location = tmp_path / "t"
    spark.range(0).selectExpr("id", "'seed' AS batch").write.format("delta").save(str(location))
    return f"delta.`{location}`"


def _rows(spark, batch: str, n: int = 3):
    return spark.range(n).selectExpr("id", f"'{batch}' AS batch")


def test_a_restarted_writer_skips_its_committed_batch_behind_other_writers_commits(spark, tmp_path):
    table = _table(spark, tmp_path)
    assert append_once(_rows(spark, "a-3"), table, "writer-a", 3, verify=True)
    for other in range(5):  # another writer commits after it (the other query on the alerts table)
        append_once(_rows(spark, f"b-{other}"), table, "writer-b", other, verify=False)
    assert batch_committed(spark, table, "writer-a", 3)
    assert not batch_committed(spark, table, "writer-a", 4)
    assert not batch_committed(spark, table, "writer-c", 0)
    # The restarted writer replays batch 3: nothing lands twice; its next batch lands.
    assert not append_once(_rows(spark, "a-3"), table, "writer-a", 3, verify=True)
    assert append_once(_rows(spark, "a-4"), table, "writer-a", 4, verify=True)
    counts = {r["batch"]: r["count"] for r in spark.table(table).groupBy("batch").count().collect()}
    assert counts["a-3"] == 3 and counts["a-4"] == 3


def test_a_commit_without_lineage_is_still_found_by_its_delta_transaction(spark, tmp_path):
    # What Delta's streaming sink (a bronze-only run of an earlier fraudlake) leaves: a txnAppId, no lineage.
    table = _table(spark, tmp_path)
    location = table.removeprefix("delta.`").removesuffix("`")
    _rows(spark, "sink-7").write.format("delta").mode("append").option("txnAppId", "query-1").option(
        "txnVersion", 7
    ).save(location)
    append_once(_rows(spark, "sink-7"), table, "query-1", 7, verify=True)
    assert spark.table(table).where("batch = 'sink-7'").count() == 3


def test_only_the_first_write_to_each_table_after_a_start_is_checked():
    replays = ReplayCheck()
    assert [replays.needed("silver"), replays.needed("quarantine"), replays.needed("silver")] == [True, True, False]
    assert ReplayCheck().needed("silver")  # a restarted writer checks again
