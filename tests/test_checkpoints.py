"""A run looks its checkpoints over before any Spark starts (no JVM here): a damaged file or a
missing gold checkpoint is named with its recovery; what a run does not read does not stop it.

The files are written as Spark writes them (``v1``, then one JSON entry per line); the real
pipeline meets a truncated one in test_faults."""

from __future__ import annotations

from pathlib import Path

import pytest

from fraudlake.errors import FraudlakeError
from fraudlake.orchestration.checkpoints import checkpoint_damage, log_problem, verify_checkpoints
from tests.conftest import make_context

OFFSETS = (
    'v1\n{"batchWatermarkMs":0,"batchTimestampMs":1764633600000,"conf":{"spark.sql.shuffle.partitions":"2"}}\n'
    '{"sourceVersion":1,"reservoirId":"6f1c","reservoirVersion":12,"index":-1,"isStartingVersion":false}'
)
COMMIT = 'v1\n{"nextBatchWatermarkMs":0}'


def write_checkpoint(folder: Path, batches: int) -> None:
    (folder / "offsets").mkdir(parents=True)
    (folder / "commits").mkdir()
    (folder / "metadata").write_text('{"id":"0b7c2f4e-1d1a-4f43-9a57-5b0e0f1f7c1a"}')
    for n in range(batches):
        (folder / "offsets" / str(n)).write_text(OFFSETS)
        (folder / "commits" / str(n)).write_text(COMMIT)


@pytest.mark.parametrize("kind, text", [("offsets", OFFSETS), ("commits", COMMIT)])
def test_a_whole_log_file_loads_and_every_cut_of_it_is_named(tmp_path, kind, text):
    path = tmp_path / "3"
    path.write_text(text)
    assert log_problem(path, kind) is None
    for cut in range(len(text) - 1):  # every prefix, down to an empty file
        path.write_text(text[:cut])
        assert log_problem(path, kind) is not None, (kind, text[:cut])


def test_the_damaged_file_is_named_and_the_recovery_fits_the_query(tmp_path):
    ctx = make_context(tmp_path / "home")
    for query in ("bronze_rate", "silver", "gold_live"):
        write_checkpoint(Path(ctx.paths.checkpoint(query)), batches=3)
    assert all(checkpoint_damage(ctx, q) is None for q in ("bronze_rate", "silver", "gold_live"))
    verify_checkpoints(ctx, ("bronze", "silver", "gold"), "rate")

    newest = Path(ctx.paths.checkpoint("silver")) / "commits" / "2"
    newest.write_text(COMMIT[:12])
    damage = checkpoint_damage(ctx, "silver")
    assert damage is not None and damage.problem.startswith("is damaged: commits/2 ")
    with pytest.raises(FraudlakeError) as refused:
        verify_checkpoints(ctx, ("bronze", "silver", "gold"), "rate")
    message = str(refused.value)
    assert "`fraudlake reset-checkpoint silver`" in message and "leaves the rows it routed alone" in message
    # A run that does not read silver's checkpoint is not stopped by it.
    verify_checkpoints(ctx, ("gold",), "rate")


def test_gold_without_its_checkpoint_is_refused_only_once_gold_holds_rows(tmp_path):
    ctx = make_context(tmp_path / "home")
    verify_checkpoints(ctx, ("gold",), "rate")  # a new home: nothing counted yet
    alerts = Path(ctx.paths.warehouse) / "gold" / "fraud_alerts"
    (alerts / "_delta_log").mkdir(parents=True)
    verify_checkpoints(ctx, ("gold",), "rate")  # created, empty
    (alerts / "part-00000-1.snappy.parquet").write_bytes(b"PAR1")
    with pytest.raises(FraudlakeError, match="gold_live checkpoint is missing .* recomputes them from silver"):
        verify_checkpoints(ctx, ("gold",), "rate")
    verify_checkpoints(ctx, ("bronze", "silver"), "rate")
