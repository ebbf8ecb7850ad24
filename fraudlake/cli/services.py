"""The services a run can use on this machine: ``kafka start|stop|status`` (a local broker),
``produce`` (the simulator to the topic) and ``cluster start|stop|status`` (Spark standalone)."""

from __future__ import annotations

import argparse

from fraudlake.cli.common import context_from, format_option, positive_float, positive_int
from fraudlake.output import emit, note, render_mapping


def add_service_commands(commands, common: argparse.ArgumentParser) -> None:
    kafka = commands.add_parser(
        "kafka",
        parents=[common],
        help="start, stop or look at a local Kafka broker",
        description=(
            "A single Apache Kafka broker in KRaft mode for --source kafka, listening at "
            "ingest.kafka.bootstrap_servers; its jars come from Maven Central (through Maven) the "
            "first time, its data and log live under HOME/kafka."
        ),
    )
    kafka.add_argument("action", choices=["start", "stop", "status"])
    format_option(kafka)
    kafka.set_defaults(handler=cmd_kafka)

    produce = commands.add_parser(
        "produce",
        parents=[common],
        help="send simulated transactions to the Kafka topic",
        description=(
            "Send the simulator's transactions as JSON records to ingest.kafka.topic: --count N at "
            "once, or --rate R rows/s (for --duration S, else until Ctrl-C)."
        ),
    )
    how = produce.add_mutually_exclusive_group(required=True)
    how.add_argument("--count", type=positive_int, help="send this many transactions at once, then stop")
    how.add_argument("--rate", type=positive_int, help="rows per second, as a stream")
    produce.add_argument("--duration", type=positive_float, help="with --rate: stop after this many seconds")
    format_option(produce)
    produce.set_defaults(handler=cmd_produce)

    cluster = commands.add_parser(
        "cluster",
        parents=[common],
        help="start, stop or look at a Spark standalone cluster on this machine",
        description=(
            "A Spark standalone master and workers, each a JVM of its own, from the installed pyspark's "
            "launcher; then fraudlake run --master spark://HOST:PORT runs executors in the workers. "
            "Logs and pid files under HOME/cluster."
        ),
    )
    cluster.add_argument("action", choices=["start", "stop", "status"])
    cluster.add_argument("--workers", type=positive_int, default=2, help="workers to start (default 2)")
    cluster.add_argument("--cores", type=positive_int, default=1, help="cores per worker (default 1)")
    cluster.add_argument("--memory", default="2g", help="memory per worker (default 2g)")
    cluster.add_argument("--port", type=positive_int, default=7077, help="the master's port (default 7077)")
    cluster.add_argument("--web-port", type=positive_int, default=8080, help="the master's web UI (default 8080)")
    format_option(cluster)
    cluster.set_defaults(handler=cmd_cluster)


def cmd_kafka(args: argparse.Namespace) -> int:
    from fraudlake import broker as kafka_broker

    ctx = context_from(args)
    broker = kafka_broker.Broker.of(ctx.paths.home, ctx.settings.ingest.kafka.bootstrap_servers)
    if args.action == "start":
        pid = kafka_broker.start(broker)
        state = "running"
    elif args.action == "stop":
        state = "stopped" if kafka_broker.stop(broker) else "not running"
        pid = None
    else:
        pid = broker.pid()
        state = "running" if pid is not None else "not running"
    emit(
        render_mapping(
            {"broker": state, "bootstrap_servers": broker.address, "pid": str(pid or ""), "folder": str(broker.folder)},
            args.format,
        )
    )
    return 0 if args.action != "status" or pid is not None else 1


def cmd_produce(args: argparse.Namespace) -> int:
    from fraudlake.bronze.ingest import produce_batch, start_producer
    from fraudlake.orchestration.streaming import progress_printer, run_queries
    from fraudlake.spark import get_spark

    ctx = context_from(args)
    kafka = ctx.settings.ingest.kafka
    spark = get_spark(ctx, master=args.master)
    if args.count:
        note(f"sending {args.count:,} simulated transactions to {kafka.topic} at {kafka.bootstrap_servers}...")
        sent, labels = produce_batch(spark, ctx, args.count)
        emit(
            render_mapping(
                {"topic": kafka.topic, "sent": sent, "labels topic": kafka.labels_topic or "", "labels sent": labels},
                args.format,
            )
        )
        return 0
    until = f"for {args.duration:g}s" if args.duration else "until Ctrl-C"
    note(f"sending {args.rate:,} simulated transactions/s to {kafka.topic} at {kafka.bootstrap_servers} {until}")
    tally = run_queries(
        {"produce": start_producer(spark, ctx, args.rate)},
        args.duration,
        ctx.settings.ingest.progress_seconds,
        spark=spark,
        report=progress_printer(args.format),
    )["produce"]
    emit(render_mapping({"topic": kafka.topic, **tally}, args.format))
    return 0


def cmd_cluster(args: argparse.Namespace) -> int:
    from fraudlake import standalone

    ctx = context_from(args)
    cluster = standalone.Cluster(ctx.paths.home / "cluster", port=args.port, web_port=args.web_port)
    if args.action == "start":
        note(f"starting a master and {args.workers} workers ({args.cores} cores, {args.memory} each)...")
        standalone.start(cluster, args.workers, args.cores, args.memory)
    elif args.action == "stop":
        stopped = standalone.stop(cluster)
        note(f"stopped: {', '.join(stopped) or 'nothing was running'}")
    running = cluster.pids()
    emit(
        render_mapping(
            {
                "master": cluster.url if "master" in running else "not running",
                "processes": ", ".join(f"{name} (pid {pid})" for name, pid in running.items()) or "none",
                "run with": f"fraudlake run --master {cluster.url}" if running else "",
                "folder": str(cluster.folder),
            },
            args.format,
        )
    )
    return 0 if args.action != "status" or running else 1
