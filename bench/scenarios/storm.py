"""Scenario storm (issue 14): every client reconnects at once after the server restarts, writes going on.

N resuming subscribers (bench/resuming.py, several processes, source addresses 127.0.0.x) are live on an
instance of their own; a writer commits at a steady rate; the instance is killed (SIGKILL: no close
frames, as in a crash) and a new one is started on the same port. Every client reconnects at once, and
after each refusal or failure retries with full-jitter exponential backoff, subscribing with `since` =
the last change id it received (or the one its first ack named). Once the writer is done, one more row
(the sentinel) is committed; when every client has it, each client's record is judged against the
table's rows: every change exactly once, in order. Figures: time from the kill until all are live again
(and the restart's share of it), attempts, the database's load over the storm (pg_stat_database deltas
per second, against the same before the kill) and the new instance's replay counters (/metrics); and
what the kernel did with the connections (bench/listen_queue.py: the accept queue's length sampled, the
TCP counters' growth, each attempt's outcome, and how long the attempts that went live spent in connect(),
where a dropped SYN waits for its retransmission).
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace

import psycopg

from bench import harness, listen_queue, scale, sources, workers, writer
from bench.fleet import FleetPool, Status, Verdict
from bench.measure import Bench
from bench.resuming import SYN_RETRIES_AT
from bench.scenarios.base import Row, RunResult, Scenario, Size, Target

TABLE = "bench_storm"
REPLAY_SAMPLES = ("replays_total", "replayed_changes_total", "replay_gaps_total", "connections_opened_total")


@dataclass(frozen=True)
class Params:
    clients: int
    write_rate: float = 2.0  # changes/s, before, during and after the storm
    before_kill: float = 5.0  # seconds of writes with every client live, before the kill
    write_seconds: float = 30.0  # how long the writer writes in all
    processes: int = 4  # client processes
    in_flight: int = 64  # first connect: attempts under way at once, per client process
    backoff_base: float = 0.2
    backoff_cap: float = 10.0
    # From connect() to the subscribe's ack. No shorter than the server's own wait for a pool connection
    # (30 s): a client that gives up sooner leaves its subscribe queued there and queues another, and the
    # storm feeds on itself (seen with 10 s: 5,000 clients were not live again after 11 minutes).
    attempt_timeout: float = 30.0
    open_timeout: float = 900.0
    live_timeout: float = 600.0  # for every client to be live again after the kill (then judged as is)
    drain_timeout: float = 120.0


SIZES: dict[Size, Params] = {
    "quick": Params(clients=5_000, write_rate=5.0, before_kill=3.0, write_seconds=15.0, live_timeout=180),
    "full": Params(clients=100_000, write_rate=1.0, write_seconds=60.0),
}


def sized(size: Size) -> Params:
    """The size's parameters; BENCH_STORM_CLIENTS, when set, says how many clients (to compare server
    versions or worker counts at one size, e.g. 19,000, which one process holds here)."""
    chosen = os.environ.get("BENCH_STORM_CLIENTS")
    return replace(SIZES[size], clients=int(chosen)) if chosen else SIZES[size]


def measure_run(bench: Bench, size: Size, earlier: list[RunResult]) -> RunResult:
    wanted = sized(size)
    clients = workers.instance_connections("storm", wanted.clients)
    params = replace(wanted, clients=clients, processes=workers.client_processes(clients, wanted.processes))
    channel = harness.create_table(bench.dsn, TABLE)
    env = SCENARIO.env(size)
    fleet = FleetPool(params.processes)
    with contextlib.ExitStack() as stack:
        stack.callback(fleet.stop)
        stack.callback(fleet.close)
        first = stack.enter_context(
            harness.running_server(bench.dsn, bench.work_dir / "storm-first.log", env)
        )
        addresses = sources.source_addresses(params.clients)
        settings: dict[str, object] = {
            "host": "127.0.0.1",
            "port": first.port,
            "channel": channel,
            "sources": addresses,
            "backoff_base": params.backoff_base,
            "backoff_cap": params.backoff_cap,
            "attempt_timeout": params.attempt_timeout,
        }
        connect_s = fleet.open(settings, params.clients, params.in_flight, params.open_timeout)
        attempts_before = sum(s.attempts for s in fleet.status())
        # Opened now: after the storm the new instance's pools may hold every connection the database has.
        judge = stack.enter_context(psycopg.connect(bench.dsn, autocommit=True))
        steady = scale.database_counters(bench.dsn)
        bench.writer.send("paced", bench.dsn, TABLE, params.write_rate, params.write_seconds, 64, ())
        time.sleep(params.before_kill)
        at_kill = scale.database_counters(bench.dsn)
        sampler = scale.CounterSampler(bench.dsn)
        stack.callback(sampler.stop)
        clients_cpu, machine = fleet.cpu_seconds(), harness.machine_cpu_times()
        outcomes_before = _outcomes(fleet.status())
        tcp_before = listen_queue.counters()
        killed_at, killed_mono = time.time(), time.monotonic()
        # The whole instance at once, its worker processes included, as a crash of its machine would.
        for pid in harness.process_tree(first.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        queue = listen_queue.QueueSampler(first.port, killed_mono)  # after the kill: the new server's
        stack.callback(queue.stop)
        second = stack.enter_context(
            harness.running_server(bench.dsn, bench.work_dir / "storm-second.log", env, port=first.port)
        )
        ready_s = time.time() - killed_at
        live = fleet.wait_live(params.live_timeout)
        tcp_after = listen_queue.counters()
        queue.stop()
        # The new server's CPU is all storm (and its start); the old one's died with it.
        load = _storm_cpu(sum(second.cpu_seconds()), fleet.cpu_seconds() - clients_cpu, machine, killed_mono)
        sampler.stop()
        replay = scale.scrape(second)
        report = bench.writer.receive(params.write_seconds * 3 + 60)
        sentinel, _ = scale.insert_row(judge, TABLE)
        reached = fleet.wait_rows(sentinel, params.drain_timeout)
        first_row, last_row, count, total = scale.log_rows(judge, TABLE)
        verdicts = fleet.verdicts(first_row, last_row, count, total, killed_at)
        status = fleet.status()
        outcomes = _outcomes(status) - outcomes_before
        fleet.close()  # before the servers stop: their clients would only reconnect meanwhile
        new_server_log = second.log_lines()  # LOG_LEVEL=warning: what went wrong in the storm, if anything
    live_times = sorted(t - killed_at for t in scale.joined(verdicts, "live_at"))
    counts = scale.merged(verdicts)
    # Only when every client made it; otherwise the table says how many did.
    all_live_s = live_times[-1] if live_times and len(live_times) == params.clients else None
    all_live = sampler.at(killed_mono + (params.live_timeout if all_live_s is None else all_live_s))
    figures = {
        "clients": params.clients,
        "capped_by_fd_limit": params.clients < wanted.clients,
        "server_processes": workers.server_processes(wanted.clients),
        "connect_s": connect_s,
        "connect_per_s": params.clients / connect_s if connect_s else 0.0,
        "readyz_s": ready_s,  # late under a storm: /readyz waits in the same accept queue
        "first_live_s": live_times[0] if live_times else 0.0,
        "live_again": live,
        "reconnected": len(live_times),
        "all_live_s": all_live_s,
        "half_live_s": live_times[len(live_times) // 2] if live_times else 0.0,
        "attempts_per_client": (sum(s.attempts for s in status) - attempts_before) / params.clients,
        "changes_written": len(report.ids),
        "writer_still_writing": killed_at + (all_live_s or params.live_timeout)
        < (report.committed_at[-1] if report.ids else 0.0),
        "log_rows": count,
        "log_contiguous": last_row - first_row + 1 == count,
        "sentinel_reached": reached,
        "exact_clients": counts["exact"],
        "lost_clients": counts["short"],
        "stranded_clients": counts["stranded"],
        "duplicated_clients": counts["disorder"],
        "wrong_clients": counts["wrong"],
        "metrics_answered": bool(replay),
        "server_connections_after": replay.get("connections", -1.0),
        **{f"new_server_{k}": replay.get(k, 0.0) for k in REPLAY_SAMPLES},
        **_loop_lag(replay),
        **scale.database_load(steady, at_kill, "steady_db_"),
        **scale.database_load(at_kill, all_live, "storm_db_"),
        **load,
        **scale.client_figures(status),
        **listen_queue.grown(tcp_before, tcp_after, "storm_"),
        **queue.figures(),
        **{f"storm_attempts_{name}": float(n) for name, n in sorted(outcomes.items())},
        **_live_attempts(verdicts, killed_at),
    }
    details = {
        "live_curve": scale.curve(live_times),
        # (seconds since the kill, transactions committed since) of the database, over the storm.
        "db_curve": [
            (s["at"] - killed_mono, s["xact_commit"] - at_kill["xact_commit"]) for s in sampler.samples
        ],
        "kernel": sources.kernel_limits(),
        # (seconds since the kill, connections waiting in the accept queue), every 0.1 s
        "listen_queue": queue.samples,
        "fd_note": workers.fd_limit_note(wanted.clients),
        "source_addresses": len(addresses),
        "client_errors": [e for s in status for e in s.errors][:10],
        "stranded_sample": [line for v in verdicts for line in v.stranded_sample][:10],
        # The new server's log lines by event (the word after `logger=...`), and the last of them.
        "new_server_log_events": dict(Counter(_event(line) for line in new_server_log).most_common(20)),
        "new_server_log_tail": new_server_log[-30:],
        "params": asdict(params),
        "payload_bytes": writer.SMALL_PAYLOAD,
    }
    return RunResult(figures, {}, details)


def _loop_lag(samples: dict[str, float]) -> dict[str, float]:
    """How late the new server's event loops ran their timers from its start to the end of the storm (the
    workers' histograms summed): the share of samples late by more than 1 s, and the bound under which 99 %
    fell."""
    name = "event_loop_lag_seconds_bucket"
    buckets = sorted(
        (float(key.partition('le="')[2].rstrip('"}')), count)
        for key, count in samples.items()
        if key.startswith(name + "{")
    )
    total = buckets[-1][1] if buckets else 0.0
    if not total:
        return {}
    within_1s = next(count for bound, count in buckets if bound >= 1.0)
    p99 = next(bound for bound, count in buckets if count >= 0.99 * total)
    return {"loop_lag_over_1s_pct": 100 * (total - within_1s) / total, "loop_lag_p99_le_s": p99}


def _event(line: str) -> str:
    """`bus_peer_lost` of `... level=WARNING logger=app.services.cluster bus_peer_lost origin=...`."""
    _, _, rest = line.partition(" logger=")
    words = rest.split()
    return words[1] if len(words) > 1 else line[:60]


def _outcomes(status: list[Status]) -> Counter[str]:
    total: Counter[str] = Counter()
    for s in status:
        total.update(s.outcomes)
    return total


def _live_attempts(verdicts: list[Verdict], killed_at: float) -> dict[str, float]:
    """How the attempts that went live spent their time, for the first and the second half of the
    clients to be live again: in connect() (a second or more: the SYN was dropped and sent again), and
    from connect()'s return to the 101 (waiting in the server)."""
    attempts = sorted(
        (live - killed_at, connect, wait)
        for v in verdicts
        for live, connect, wait in zip(v.live_at, v.connect_s, v.wait_s, strict=True)
    )
    figures: dict[str, float] = {}
    middle = len(attempts) // 2
    for name, part in (("first_half", attempts[:middle]), ("second_half", attempts[middle:])):
        if not part:
            continue
        connects = [c for _, c, _ in part]
        waits = sorted(w for _, _, w in part)
        figures[f"live_{name}_syn_resent"] = float(sum(c >= SYN_RETRIES_AT[0] for c in connects))
        figures[f"live_{name}_connect_p50_s"] = statistics.median(connects)
        figures[f"live_{name}_connect_max_s"] = max(connects)
        figures[f"live_{name}_wait_p50_s"] = waits[len(waits) // 2]
        figures[f"live_{name}_wait_p90_s"] = waits[int(len(waits) * 0.9)]
    return figures


def _storm_cpu(server: float, clients: float, machine: tuple[float, float], since: float) -> dict[str, float]:
    """CPU shares from the kill to now (% of one core; the machine's in % of all cores)."""
    wall = max(1e-6, time.monotonic() - since)
    busy, total = harness.machine_cpu_times()
    return {
        "storm_cpu_server_pct": 100 * server / wall,
        "storm_cpu_clients_pct": 100 * clients / wall,
        "storm_cpu_machine_pct": 100 * (busy - machine[0]) / max(1.0, total - machine[1]),
    }


def rows(size: Size) -> list[Row]:
    params = sized(size)
    return [
        Row(
            f"storm: {params.clients:,} reconnect with since (SIGKILL + restart, {params.write_rate:g} "
            "changes/s)",
            "all live again after the kill",
            "all_live_s",
            "{:.1f}",
            "s",
            Target("<=", 30, "≤ 30 s"),
        ),
        Row("", "clients (fewer: capped by the open-file limit)", "clients", "{:,.0f}"),
        Row("", "server worker processes (one port)", "server_processes", "{:,.0f}"),
        Row("", "live again at the end of the wait", "live_again", "{:,.0f}"),
        Row("", "first client live again", "first_live_s", "{:.1f}", "s"),
        Row("", "half live again", "half_live_s", "{:.1f}", "s"),
        Row("", "attempts per client", "attempts_per_client", "{:.1f}"),
        Row(
            "",
            "SYNs dropped at the full accept queue (TcpExtListenOverflows)",
            "storm_TcpExtListenOverflows",
            "{:,.0f}",
        ),
        Row(
            "",
            "second half live: connect() waited for a SYN resent",
            "live_second_half_syn_resent",
            "{:,.0f}",
        ),
        Row("", "accept queue: longest sampled (backlog)", "listen_queue_max", "{:,.0f}"),
        Row("", "clients with every change once", "exact_clients", "{:,.0f}"),
        Row("", "live clients that lost a change", "lost_clients", "{:,.0f}", "", Target("<=", 0, "0")),
        Row(
            "", "clients not live again (not judged)", "stranded_clients", "{:,.0f}", "", Target("<=", 0, "0")
        ),
        Row("", "clients with a duplicate", "duplicated_clients", "{:,.0f}", "", Target("<=", 0, "0")),
        Row("", "replays (new server)", "new_server_replays_total", "{:,.0f}"),
        Row("", "event loop timers late by > 1 s (new server)", "loop_lag_over_1s_pct", "{:.1f}", "%"),
        Row("", "event loop lateness, 99 % under (bucket bound)", "loop_lag_p99_le_s", "{:g}", "s"),
        Row("", "DB transactions/s during storm", "storm_db_xact_commit_per_s", "{:,.0f}"),
        Row("", "DB transactions/s before the kill", "steady_db_xact_commit_per_s", "{:,.0f}"),
        Row("", "DB rows read/s during storm", "storm_db_tup_returned_per_s", "{:,.0f}"),
        Row("", "DB rows read/s before the kill", "steady_db_tup_returned_per_s", "{:,.0f}"),
    ]


SCENARIO = Scenario(
    name="storm",
    measure=measure_run,
    rows=rows,
    load=lambda s: [(f"storm: {sized(s).clients:,} reconnecting", "storm_")],
    params=sized,
    sized_env=lambda s: workers.instance_env(sized(s).clients),
    max_runs=1,  # minutes per run at full size
)
