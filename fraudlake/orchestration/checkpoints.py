"""Streaming checkpoints: looked over before a run starts, and set aside when one is damaged.

A query's checkpoint (``checkpoints/<query>``) is Spark's record of what the query has read:
``offsets/N`` is written before micro-batch N runs, ``commits/N`` after it committed, and
``metadata`` names the query. Spark writes each file whole (a temporary file, renamed), so a
truncated or garbled one is damage from outside: a failing disk, a copy cut short, a hand
edit. Spark then fails deep inside the query's start with a parse or checksum error; a run
here refuses before any Spark starts, naming the file and the recovery.

The recovery sets the checkpoint aside (``checkpoints/_set_aside/<query>-<UTC time>``, kept
for a post-mortem) and lets the query start over, which is exact for each of fraudlake's
queries because every layer recognises rows it has already handled:

- a label query (``labels_kafka``, ``labels_files``): the label records are read again and each
  repeat lands in ``bronze.label_quarantine`` as a ``duplicate_label``;
- an ingest query (``bronze_rate``, ``bronze_files``, ``bronze_kafka``; with silver, the combined
  ingest and score query): the source starts over — the rate source numbers its rows from 0
  again, the files source reads every landing file again, the Kafka source reads the topic from
  its starting offsets — and silver quarantines each repeat as a
  ``duplicate_transaction_id``: bronze keeps every row, bronze = silver + quarantine holds;
- ``silver`` (bronze → silver alone): it reads bronze from its first version again and leaves
  the rows silver or quarantine already hold alone (its writer always looks them up);
- ``gold_live``: gold's tables count each silver row once per checkpoint, so gold is
  recomputed from silver — a full refresh, as Delta Live Tables does for a streaming table:
  its tables are emptied (a ``DELETE`` each; the rows stay in their Delta history) and the
  next run counts every silver row again, raising each alert once. Alerts a ``rescore`` raised
  for rows it later stopped flagging are in the history only.

A checkpoint folder deleted by hand needs no reset except gold's: without its checkpoint the
gold query would count silver a second time into tables that hold the first count, so a run
refuses that too.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fraudlake.bronze.ingest import checkpoint_name, rate_claim
from fraudlake.bronze.label_records import LABEL_SOURCES
from fraudlake.bronze.label_records import checkpoint_name as label_checkpoint_name
from fraudlake.errors import FraudlakeError
from fraudlake.gold.stream import FORMER_QUERIES
from fraudlake.gold.stream import QUERY_NAME as GOLD_QUERY
from fraudlake.settings import Context
from fraudlake.silver.stream import QUERY_NAME as SILVER_QUERY
from fraudlake.streaming_io import writer_app_id
from fraudlake.tables import GOLD_WRITTEN, table_location, table_name

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

SET_ASIDE = "_set_aside"
INGEST_QUERIES = {checkpoint_name(source): source for source in ("rate", "files", "kafka")}
LABEL_QUERIES = {label_checkpoint_name(source): source for source in LABEL_SOURCES}
QUERIES = (*INGEST_QUERIES, *LABEL_QUERIES, SILVER_QUERY, GOLD_QUERY)


@dataclass(frozen=True)
class Damage:
    """What is wrong with one query's checkpoint."""

    query: str
    problem: str

    def message(self) -> str:
        return (
            f"the {self.query} checkpoint {self.problem}; `fraudlake reset-checkpoint {self.query}` sets it aside: "
            f"{after_reset(self.query)} (see the README, 'Faults')"
        )


def after_reset(query: str) -> str:
    """What the next run does once ``query``'s checkpoint is set aside."""
    if query == GOLD_QUERY:
        return "gold's tables are emptied and the next run recomputes them from silver"
    if query == SILVER_QUERY:
        return "silver reads bronze again and leaves the rows it routed alone"
    if INGEST_QUERIES.get(query) == "rate":
        return "the rate source numbers its rows from 0 again and silver quarantines the repeats"
    if query in LABEL_QUERIES:
        return "the label records are read again and bronze.label_quarantine keeps the repeats (duplicate_label)"
    if INGEST_QUERIES.get(query) == "kafka":
        return (
            "the topic is read again from ingest.kafka.starting_offsets (earliest: what the broker still "
            "holds) and silver quarantines the repeats"
        )
    return "the landing files are read again and silver quarantines the repeats"


def queries_of(layers, source: str) -> tuple[str, ...]:
    """The checkpoints a run of ``layers`` reads (silver's too with bronze: a backlog is caught up by it)."""
    used = []
    if "bronze" in layers:
        used.append(checkpoint_name(source))
        if source in LABEL_SOURCES:
            used.append(label_checkpoint_name(source))
    if "silver" in layers:
        used.append(SILVER_QUERY)
    if "gold" in layers:
        used.append(GOLD_QUERY)
    return tuple(used)


def log_problem(path: Path, kind: str) -> str | None:
    """Why ``path`` (an ``offsets``, ``commits`` or ``metadata`` file) would not load in Spark, or None.

    >>> log_problem(Path("checkpoints/gold_live/offsets/41"), "offsets")  # cut after 100 bytes  # doctest: +SKIP
    'line 3 is not JSON (truncated?)'
    """
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        return f"cannot be read ({getattr(error, 'strerror', None) or error})"
    lines = text.split("\n")
    if kind == "metadata":
        entries = lines[:1]
    else:
        if not (lines[0].startswith("v") and lines[0][1:].isdigit()):
            return "is empty" if not text else "does not start with a log version (truncated?)"
        entries = lines[1:]
        # offsets: the batch's metadata, then one line per source ("-" for a source with none yet)
        wanted, held = (2 if kind == "offsets" else 1), sum(1 for line in entries if line)
        if held < wanted:
            return f"holds {held} of its {wanted} entries (truncated?)"
    for number, line in enumerate(entries, start=1 if kind == "metadata" else 2):
        if not line or line == "-":
            continue
        try:
            json.loads(line)
        except ValueError:
            return f"line {number} is not JSON (truncated?)"
    return None


def checkpoint_damage(ctx: Context, query: str) -> Damage | None:
    """The first damaged file of ``query``'s checkpoint, or None (no Spark: a second, not a JVM start)."""
    folder = Path(ctx.paths.checkpoint(query))
    if not folder.is_dir():
        return None
    files = [folder / "metadata"] if (folder / "metadata").exists() else []
    for log in ("offsets", "commits"):
        if (folder / log).is_dir():
            files += sorted(
                (p for p in (folder / log).iterdir() if p.name.isdigit()), key=lambda p: int(p.name), reverse=True
            )
    for path in files:
        kind = "metadata" if path.name == "metadata" else path.parent.name
        problem = log_problem(path, kind)
        if problem is not None:
            return Damage(query, f"is damaged: {path.relative_to(folder)} {problem}")
    return None


def _holds_data(table: Path) -> bool:
    return table.is_dir() and any(p.suffix == ".parquet" for p in table.rglob("*") if "_delta_log" not in p.parts)


def gold_without_checkpoint(ctx: Context) -> Damage | None:
    """Gold's checkpoint gone while gold's tables hold what it counted (local tables only)."""
    if any(Path(ctx.paths.checkpoint(query)).exists() for query in (GOLD_QUERY, *FORMER_QUERIES)):
        return None  # an earlier fraudlake's gold: start_gold says how to move on from it
    if any(_holds_data(Path(table_location(ctx, spec))) for spec in GOLD_WRITTEN):
        return Damage(GOLD_QUERY, "is missing while gold's tables hold what it counted (gold would count silver twice)")
    return None


def verify_checkpoints(ctx: Context, layers, source: str) -> None:
    """Refuse, in one line, a run whose checkpoints Spark could not resume exactly."""
    for query in queries_of(layers, source):
        damage = checkpoint_damage(ctx, query) or (gold_without_checkpoint(ctx) if query == GOLD_QUERY else None)
        if damage is not None:
            raise FraudlakeError(damage.message())


def reset_checkpoint(spark: SparkSession | None, ctx: Context, query: str) -> dict:
    """Set ``query``'s checkpoint aside so the query starts over; for gold (``spark`` needed), empty
    gold's tables first (a reset cut short is simply run again). Run it with the pipeline stopped."""
    if query not in QUERIES:
        raise FraudlakeError(f"no checkpoint {query!r}: one of {', '.join(QUERIES)}")
    folder = Path(ctx.paths.checkpoint(query))
    emptied = []
    if query == GOLD_QUERY:
        assert spark is not None, "emptying gold's tables needs a session"
        for spec in GOLD_WRITTEN:
            name = table_name(ctx, spec)
            if not spark.catalog.tableExists(name):
                continue
            append_only = spec.properties.get("delta.appendOnly") == "true"
            if append_only:  # its one DELETE, allowed for the refresh and forbidden again after it
                spark.sql(f"ALTER TABLE {name} SET TBLPROPERTIES ('delta.appendOnly' = 'false')")
            spark.sql(f"DELETE FROM {name}")
            if append_only:
                spark.sql(f"ALTER TABLE {name} SET TBLPROPERTIES ('delta.appendOnly' = 'true')")
            emptied.append(f"{spec.layer}.{spec.name}")
    set_aside = None
    if folder.exists():
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        set_aside = folder.parent / SET_ASIDE / f"{query}-{stamp}"
        set_aside.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(folder), str(set_aside))
    if INGEST_QUERIES.get(query) == "rate":  # the new checkpoint may start at another rate
        rate_claim(ctx).unlink(missing_ok=True)
    if query == GOLD_QUERY:
        writer_app_id(str(folder), GOLD_QUERY)  # a fresh checkpoint: gold's tables were emptied for it
    return {
        "checkpoint": query,
        "set_aside": str(set_aside) if set_aside else f"nothing: {folder} does not exist",
        "tables_emptied": emptied,
        "next_run": after_reset(query),
    }
