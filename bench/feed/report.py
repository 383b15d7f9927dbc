"""The feed bench's printed report: every figure beside its goal, with a verdict."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.feed.reads import cpu_per_page, saturation

LINE = "=" * 96


@dataclass(frozen=True)
class Goal:
    """One goal of the issue, the figure measured for it, and whether it is met."""

    name: str
    figure: str
    goal: str
    met: bool | None  # None: nothing to judge (a figure reported for context)

    @property
    def verdict(self) -> str:
        return "-" if self.met is None else ("met" if self.met else "MISSED")


def _rps(round_: dict[str, Any], name: str) -> float:
    return float(saturation(round_[name])[1]["rps"])


def goals(report: dict[str, Any]) -> list[Goal]:
    """Every goal with its figure (the same list feeds the table and the JSON)."""
    out: list[Goal] = []
    reads = report["reads"]
    today = reads["today"]
    ours, naive, floor = (_rps(today, n) for n in ("ours", "naive", "floor"))
    if "unlimited" in today:  # the same app with query cost budgets off (docs/limits.md)
        unlimited = _rps(today, "unlimited")
        out.append(
            Goal(
                "feed page: with cost budgets / without, saturation throughput",
                f"{ours / unlimited:.0%} ({ours:,.0f} vs {unlimited:,.0f} req/s)",
                "nothing measurable: >= 95% (noise of one run)",
                ours / unlimited >= 0.95,
            )
        )
    out.append(
        Goal(
            "feed page: ours / floor saturation throughput",
            f"{ours / floor:.0%} ({ours:,.0f} vs {floor:,.0f} req/s)",
            ">= 80% (not done below 50%)",
            ours / floor >= 0.8,
        )
    )
    out.append(
        Goal(
            "ours / naive throughput, today's network",
            f"{ours / naive:.2f}x ({ours:,.0f} vs {naive:,.0f} req/s)",
            ">= 1x",
            ours >= naive,
        )
    )
    history = reads.get("history")
    if history:
        h_ours, h_naive = _rps(history, "ours"), _rps(history, "naive")
        out.append(
            Goal(
                "ours / naive throughput, history network",
                f"{h_ours / h_naive:.2f}x ({h_ours:,.0f} vs {h_naive:,.0f} req/s)",
                ">= 5x",
                h_ours >= 5 * h_naive,
            )
        )
    for label, round_ in (("today's", today), ("history", history)):
        if not round_:
            continue
        pg_ours = cpu_per_page(round_["ours"], "postgres")
        pg_naive = cpu_per_page(round_["naive"], "postgres")
        share = pg_ours / pg_naive if pg_naive else float("inf")
        out.append(
            Goal(
                f"PostgreSQL CPU per page, ours / naive, {label} network",
                f"{share:.2%} ({pg_ours:.3f} vs {pg_naive:.3f} ms)",
                "< 2%",
                share < 0.02,
            )
        )
    fixed = reads.get("fixed_rate")
    if fixed:
        run = fixed["runs"]["ours"]
        late = f", {run['late']} late" if run["late"] else ""
        out.append(
            Goal(
                f"ours p99 at a fixed {fixed['rate']:,.0f} req/s (half the floor's saturation)",
                f"{run['p99_ms']} ms (p50 {run['p50_ms']} ms{late})",
                "< 50 ms",
                run["p99_ms"] < 50 and not run["late"],
            )
        )
    for workers in reads.get("workers", {}).values():
        out.append(
            Goal(
                f"ours with {workers['workers']} API processes / with 1",
                f"{workers['ours']['rps'] / ours:.2f}x ({workers['ours']['rps']:,.0f} req/s; "
                f"floor {workers['floor']['rps'] / floor:.2f}x)",
                "reported",
                None,
            )
        )
    for key, label in (("workers", "today's"), ("workers_history", "history")):
        for workers in reads.get(key, {}).values():
            if "naive" not in workers:
                continue
            w_ours, w_naive = workers["ours"]["rps"], workers["naive"]["rps"]
            out.append(
                Goal(
                    f"ours / naive with {workers['workers']} API processes each, {label} network",
                    f"{w_ours / w_naive:.2f}x ({w_ours:,.0f} vs {w_naive:,.0f} req/s)",
                    "reported (the 5x goal is judged with one process above)",
                    None,
                )
            )
    social = report.get("social")
    if social:
        plain, page = _rps(social["runs"], "plain"), _rps(social["runs"], "social")
        out.append(
            Goal(
                "social feed page / plain feed page, saturation throughput (same run)",
                f"{page / plain:.0%} ({page:,.0f} vs {plain:,.0f} req/s)",
                ">= 80%",
                page / plain >= 0.8,
            )
        )
        warm = social["warm"]
        out.append(
            Goal(
                "SQL per warm social page (PostgreSQL table scans: a statement reads a table)",
                f"{warm['sql_table_scans_per_page']} ({warm['sql_table_scans']} over "
                f"{warm['pages']:,} pages; {warm['compiled_share']:.0%} compiled)",
                "0",
                warm["sql_table_scans"] == 0,
            )
        )
    live = report.get("live")
    if live:
        complete = live["deliveries"] == live["expected_deliveries"]
        out.append(
            Goal(
                f"live delivery to {live['connected']:,} subscribers, READY to received, p99",
                f"{live['p99_ms']} ms (p50 {live['p50_ms']}, max {live['max_ms']}; "
                f"{live['deliveries']:,}/{live['expected_deliveries']:,} delivered)",
                "< 1,000 ms",
                bool(complete and live["p99_ms"] is not None and live["p99_ms"] < 1000),
            )
        )
    fan = report.get("fanout")
    if fan:
        ceiling = fan["ceiling"]["ceiling_per_s"]
        biggest = max(fan["authors"], key=lambda a: a["followers"])
        lua = biggest["lua_inserts_per_s"] / ceiling
        out.append(
            Goal(
                "fan-out / pipelined ZADD ceiling (Lua, largest author)",
                f"{lua:.0%} (whole job {biggest['job_inserts_per_s'] / ceiling:.0%})",
                ">= 25%",
                lua >= 0.25,
            )
        )
    memory = report["memory"]
    out.append(
        Goal(
            "Redis bytes per feed entry",
            f"{memory['bytes_per_entry']}",
            "<= 32",
            memory["bytes_per_entry"] <= 32,
        )
    )
    return out


def _closed_table(round_: dict[str, dict[str, Any]]) -> list[str]:
    clients = list(next(iter(round_.values())))
    lines = ["   " + f"{'':9}" + "".join(f"{c + ' conns':>26}" for c in clients)]
    lines.append("   " + f"{'':9}" + "".join(f"{'req/s':>9}{'p50':>8}{'p99':>9}" for _ in clients))
    for name, runs in round_.items():
        cells = "".join(
            f"{runs[c]['rps']:>9,.0f}{runs[c]['p50_ms']:>8}{runs[c]['p99_ms']:>9}" for c in clients
        )
        errors = sum(r["errors"] for r in runs.values())
        lines.append(f"   {name:9}{cells}" + (f"   ({errors} errors)" if errors else ""))
    return lines


def _cpu_table(round_: dict[str, dict[str, Any]]) -> list[str]:
    lines = [f"   {'':9}{'PostgreSQL':>12}{'Redis':>10}{'server':>10}   ms of CPU per page"]
    for name, runs in round_.items():
        cells = "".join(
            f"{cpu_per_page(runs, tier):>{w}.3f}"
            for tier, w in (("postgres", 12), ("redis", 10), ("server", 10))
        )
        lines.append(f"   {name:9}{cells}")
    return lines


def print_report(report: dict[str, Any]) -> None:
    m, n, reads = report["machine"], report["network"], report["reads"]
    print(f"\n{LINE}\nInstagraph feed bench  {report['timestamp']}")
    print(f"machine: {m['cores']} cores, {m['cpu_model']}, Python {m['python']}")
    print(
        f"network: {n['users']:,} users, {n['follows']:,} follows (median {n['median_followers']}"
        f" followers), {n['posts']:,} READY posts; {n['viewers']} viewers following "
        f"{n['viewer_followees']}; {n['celebrities']} celebrities at >= {n['read_threshold']:,}"
    )
    history = report.get("history")
    if history:
        print(
            f"history: +{history['posts']:,} older posts by {len(history['authors'])} of the "
            f"viewers' followees; a viewer follows {history['viewer_history_followees']} of them"
            f" on average and can see {history['viewer_visible_posts']:,} posts"
        )
    print(LINE)
    print("a) feed(first: 20), closed loop, today's network: req/s, p50 ms, p99 ms")
    print("\n".join(_closed_table(reads["today"])))
    print("\n".join(_cpu_table(reads["today"])))
    print(f"   PostgreSQL idle: {reads['postgres_idle_ms_per_s']} ms of CPU per second")
    if reads.get("history"):
        print("b) the same on the history network")
        print("\n".join(_closed_table(reads["history"])))
        print("\n".join(_cpu_table(reads["history"])))
    for label in ("today", "history"):
        plan = reads.get(f"naive_plan_{label}")
        if plan:
            print(
                f"   naive query plan ({label}): {plan['execution_ms']} ms, "
                f"{' > '.join(plan['nodes'][:4])}; largest row count {plan['largest_row_count']:,}"
            )
    fixed = reads.get("fixed_rate", {"rate": 0, "connections": 0, "runs": {}})
    print(f"c) fixed offered rate {fixed['rate']:,.0f} req/s over {fixed['connections']} "
          "connections (latency from each request's due time)")  # fmt: skip
    for name, r in fixed["runs"].items():
        print(
            f"   {name:9} achieved {r['rps']:>7,.0f}/s  p50 {r['p50_ms']:>8} ms  p90 "
            f"{r['p90_ms']:>8} ms  p99 {r['p99_ms']:>8} ms  max {r['max_ms']:>8} ms"
            + (f"  ({r['late']} still unanswered at the end: a lower bound)" if r["late"] else "")
        )
    for key in ("workers", "workers_history"):
        _print_workers(key, reads)
    social = report.get("social")
    if social:
        print(
            f"s) the feed page with likeCount, commentCount, viewerHasLiked and 2 comments vs "
            f"without ({social['likes']:,} likes, {social['comments']:,} comments on "
            f"{social['posts']:,} posts; {social['checked_posts']:,} checked)"
        )
        print("\n".join(_closed_table(social["runs"])))
        print("\n".join(_cpu_table(social["runs"])))
        commands = ", ".join(
            f"{name} {calls}" for name, calls in social["warm"]["redis_commands_per_page"].items()
        )
        print(f"   Redis commands per warm social page: {commands}")
    live = report.get("live")
    if live:
        print(
            f"e) live: {live['connected']:,} WebSocket subscribers of one author (connected "
            f"in {live['connect_s']} s), {live['posts']} posts; READY -> received: p50 "
            f"{live['p50_ms']} ms, p99 {live['p99_ms']} ms, max {live['max_ms']} ms"
        )
        print(
            f"   API RSS {live['api_rss_mb_before']} MB idle, {live['api_rss_mb_connected']} MB "
            f"with all connected, {live['api_rss_mb_delivered']} MB after delivery"
        )
        stages = [p for p in live["per_post"] if "job_started_ms" in p]
        if stages:
            mid = stages[len(stages) // 2]
            print(
                f"   one post, ms after READY: relayed {mid['relayed_ms']}, fan-out job started "
                f"{mid['job_started_ms']}, finished {mid['job_finished_ms']}, first received "
                f"{mid['first_received_ms']}, last {mid['last_received_ms']}"
            )
        print(
            f"   per delivery: API {live['api_cpu_ms_per_delivery']} ms CPU, PostgreSQL "
            f"{live['postgres_cpu_ms_per_delivery']} ms CPU, "
            f"{live['postgres_transactions_per_delivery']} transactions"
        )
    fan = report.get("fanout")
    if fan:
        ceiling = fan["ceiling"]
        print(
            f"f) fan-out: ceiling {ceiling['ceiling_per_s']:,} ZADD/s ({ceiling['ceiling_method']}"
            f"; redis-py {ceiling['redis_py_per_s']:,}/s)"
        )
        for a in fan["authors"]:
            print(
                f"   {a['followers']:>6,} followers: job {a['job_ms_median']} ms "
                f"({a['job_inserts_per_s']:,}/s), Lua {a['lua_inserts_per_s']:,}/s, Redis "
                f"{a['redis_us_per_insert']} us/insert, a script call holds Redis "
                f"{a['redis_ms_per_script_call']} ms"
            )
    mem, build = report["memory"], report["feed_build"]
    print(
        f"g) memory: {mem['bytes_per_entry']} bytes per feed entry ({'/'.join(mem['encodings'])}"
        f"; used_memory growth {mem['used_memory_per_entry']}); {build['feeds']:,} feeds built "
        f"in {build['seconds']} s; a full-feed rebuild holds Redis "
        f"{build['full_feed_rebuild_redis_ms']} ms; API RSS after the runs "
        f"{reads['rss_mb']['api']} MB"
    )
    print(LINE)
    print("goals (verdict, goal, target: measured)")
    for goal in goals(report):
        print(f"   {goal.verdict:7} {goal.name}\n{'':11}{goal.goal}: {goal.figure}")
    t = report["timings"]
    print(LINE)
    print("time: " + ", ".join(f"{k[:-2]} {v} s" for k, v in t.items()))
    print(LINE)


def _print_workers(key: str, reads: dict[str, Any]) -> None:
    network = "history network" if key == "workers_history" else "today's network"
    for workers in reads.get(key, {}).values():
        print(f"d) {workers['workers']} API processes, {workers['connections']} connections, "
              f"{network} (CPU seconds of each process in brackets)")  # fmt: skip
        for name in ("ours", "naive", "floor", "ours_uvicorn_workers"):
            if name not in workers:
                continue
            r = workers[name]
            label = (
                "sharing the port (make run)" if r["mode"] == "reuseport" else "uvicorn --workers"
            )
            spread = ", ".join(f"{s:.1f}" for s in r["server_cpu_s_by_process"] if s >= 0.05)
            print(
                f"   {name.split('_')[0]:6} {label:28} {r['rps']:>7,.0f} req/s  p50 "
                f"{r['p50_ms']} ms  p99 {r['p99_ms']} ms  [{spread}]"
            )
