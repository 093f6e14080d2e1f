"""The figures of a bench/load.py run as Markdown tables: each gateway beside the two relays.

Every table has one row per figure and one column per server; each gateway's
column is followed by its ratios to each relay (gateway / relay), so a ratio
above 1 means more of that figure than the relay: better for deltas/s and
capacity, worse for latency, CPU and memory.
"""

import statistics

LABELS = {"relay": "Python relay", "node": "Node relay", "inproc": "gateway", "redis": "gateway, REDIS_URL",
          "proc_a": "process A (sends)", "proc_b": "process B (watches)"}
RELAYS = ("relay", "node")
GATEWAYS = ("inproc", "redis")
# The two gateway processes of the `twoproc` measurement (REDIS_URL, one database).
TWO_PROCESSES = ("proc_a", "proc_b")
SHORT = {"inproc": "gateway", "redis": "Redis gw", "relay": "Py", "node": "Node", "proc_a": "A", "proc_b": "B"}


def percentile(values, p):
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def ratio(ours, theirs) -> str:
    numbers = (int, float)
    if not isinstance(ours, numbers) or not isinstance(theirs, numbers) or ours != ours or not theirs:
        return ""
    return f"{ours / theirs:.2f}"


def fmt(value, digits=1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, str):
        return value
    if value != value:
        return "n/a"
    return f"{value:,.{digits}f}"


def comparison_table(summaries: dict, rows, gateways=GATEWAYS) -> list[str]:
    """`rows`: (title, key, digits). Columns: the relays, then each gateway with its ratios to each relay."""
    relays = [k for k in RELAYS if k in summaries]
    gateways = [k for k in gateways if k in summaries]
    head = ["figure"] + [LABELS[k] for k in relays]
    for gateway in gateways:
        head += [LABELS[gateway]] + [f"{SHORT[gateway]} / {SHORT[r]}" for r in relays]
    lines = ["| " + " | ".join(head) + " |", "| --- " + "| ---: " * (len(head) - 1) + "|"]
    for title, key, digits in rows:
        cells = [title] + [fmt(summaries[k].get(key), digits) for k in relays]
        for gateway in gateways:
            cells.append(fmt(summaries[gateway].get(key), digits))
            cells += [ratio(summaries[gateway].get(key), summaries[r].get(key)) for r in relays]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def load_note(figures, name) -> str:
    mark = figures.get("load", {}).get(name, {})
    return (f"load average {mark.get('start', '?')} at {mark.get('at_start', '?')}, "
            f"{mark.get('end', '?')} at {mark.get('at_end', '?')}")


# --- Streaming: burst and paced ------------------------------------------------------------


def stream_summary(rounds) -> dict:
    """Deltas/s is the median round's; latencies and CPU over all rounds together."""
    median = statistics.median(r.rate for r in rounds)
    deltas = sum(r.deltas for r in rounds)
    lat = [v for r in rounds for v in r.latencies]
    first = [v for r in rounds for v in r.first_latencies]
    ttfd = [v for r in rounds for v in r.first_after_send]
    per = (lambda seconds: seconds / deltas * 1e6) if deltas else (lambda seconds: float("nan"))
    return {
        "deltas_per_s": median,
        "rounds": [round(r.rate) for r in rounds],
        "p50": percentile(lat, 50) * 1000, "p99": percentile(lat, 99) * 1000,
        "first_p50": percentile(first, 50) * 1000, "first_max": max(first, default=float("nan")) * 1000,
        "ttfd_p50": percentile(ttfd, 50) * 1000, "ttfd_max": max(ttfd, default=float("nan")) * 1000,
        "frames": sum(r.frames for r in rounds),
        "frames_per_delta": sum(r.frames for r in rounds) / deltas if deltas else float("nan"),
        "server_us": per(sum(r.server_cpu for r in rounds)),
        "mock_us": per(sum(r.mock_cpu for r in rounds)),
        "client_us": per(sum(r.client_cpu for r in rounds)),
        "client_lag_p99": percentile([v for r in rounds for v in r.client_lag], 99) * 1000,
        "deltas": deltas, "expected": sum(r.expected for r in rounds),
        "received": f"{deltas}/{sum(r.expected for r in rounds)}",
        "broken_turns": sum(r.broken_turns for r in rounds),
        "problems": "; ".join(p for r in rounds if (p := r.problems())),
    }


STREAM_ROWS = [
    ("deltas/s (median round)", "deltas_per_s", 0),
    ("added latency p50, ms", "p50", 2),
    ("added latency p99, ms", "p99", 2),
    ("first chunk delay p50, ms (vs the mock's first write)", "first_p50", 2),
    ("first chunk delay max, ms", "first_max", 1),
    ("send to first delta p50, ms (with the turn's set-up)", "ttfd_p50", 1),
    ("send to first delta max, ms", "ttfd_max", 1),
    ("chunk frames", "frames", 0),
    ("chunk frames per delta", "frames_per_delta", 3),
    ("server CPU per delta, us", "server_us", 1),
    ("mock CPU per delta, us", "mock_us", 1),
    ("client CPU per delta, us", "client_us", 1),
    ("client loop lag p99, ms (the client's own lateness)", "client_lag_p99", 1),
    ("deltas received whole / sent", "received", 0),
]


def stream_section(figures, name, title) -> list[str]:
    summaries = {k: stream_summary(v) for k, v in figures[name].items() if v}
    lines = ["", f"### {title}", "", f"({load_note(figures, name)})", ""]
    lines += comparison_table(summaries, STREAM_ROWS)
    for kind, s in summaries.items():
        if s["problems"] or s["deltas"] != s["expected"]:
            lines.append(f"\n**{LABELS[kind]} lost deltas:** {s['received']} arrived whole; {s['problems']}")
    lines.append("\nDeltas/s of each round: " + "; ".join(
        f"{LABELS[k]} {', '.join(map(str, s['rounds']))}" for k, s in summaries.items()))
    return lines


# --- Two processes ------------------------------------------------------------------------------


def twoproc_summaries(rounds: dict) -> dict:
    """stream_summary of each server; A's also gets the cross-process figures of its rounds.

    `cross`: per delta whole on both sockets of its session, its arrival on B minus its
    arrival on A. `both_us`: the CPU of both processes per delta sent (each delta went
    to two sockets, one on each).
    """
    summaries = {k: stream_summary(v) for k, v in rounds.items() if v}
    sent = rounds.get("proc_a") or []
    if sent:
        cross = [v for r in sent for v in r.cross]
        deltas = sum(r.deltas for r in sent)
        both = sum(r.server_cpu + r.watched.server_cpu for r in sent)
        summaries["proc_a"].update({
            "cross_p50": percentile(cross, 50) * 1000, "cross_p99": percentile(cross, 99) * 1000,
            "cross_max": max(cross, default=float("nan")) * 1000, "cross_deltas": len(cross),
            "both_us": both / deltas * 1e6 if deltas else float("nan"),
        })
        for kind in RELAYS:
            if kind in summaries:
                summaries[kind]["both_us"] = summaries[kind]["server_us"]
    return summaries


def twoproc_section(figures, cfg) -> list[str]:
    summaries = twoproc_summaries(figures["twoproc"])
    lines = ["", f"### Two processes: {cfg['sessions']} sessions x {cfg['paced_chunks']} deltas "
                 f"{cfg['paced_delay_ms']} ms apart, messages spread over {cfg['paced_stagger_ms']} ms, "
                 f"{cfg['paced_rounds']} round(s); each session's message sent on A, a second socket of it on B",
             "", f"(REDIS_URL and one database for both; the relays' paced rounds interleaved; "
                 f"{load_note(figures, 'twoproc')})", ""]
    lines += comparison_table(summaries, STREAM_ROWS + [
        ("server CPU per delta sent, both processes (relays: theirs), us", "both_us", 1)],
        gateways=TWO_PROCESSES)
    for kind, s in summaries.items():
        if s["problems"] or s["deltas"] != s["expected"]:
            lines.append(f"\n**{LABELS[kind]} lost deltas:** {s['received']} arrived whole; {s['problems']}")
    a = summaries.get("proc_a")
    if a:
        lines.append(f"\nCross process, per delta whole on both sockets of its session ({a['cross_deltas']}): "
                     f"its arrival on B minus its arrival on A, p50 {fmt(a['cross_p50'], 1)} / p99 "
                     f"{fmt(a['cross_p99'], 1)} / max {fmt(a['cross_max'], 1)} ms.")
    return lines


# --- Capacity ----------------------------------------------------------------------------------


def capacity_of(steps) -> int:
    """The largest step passed; steps stop at a server's first failure, so the passed ones come first."""
    return max((sessions for sessions, _, passed in steps if passed), default=0)


def capacity_section(figures, cfg) -> list[str]:
    lines = ["", f"### Capacity: sessions x {cfg['capacity_deltas']} deltas {cfg['capacity_delay_ms']} ms apart, "
                 f"messages spread over {cfg['capacity_stagger_ms']} ms; a step passes with p99 added latency "
                 f"<= {cfg['capacity_p99_ms']:g} ms and nothing lost",
             "", f"({load_note(figures, 'capacity')})", "",
             "| server | sessions | deltas/s | added p50 / p99 ms | deltas received whole | server CPU us/delta "
             "| server CPU busy | mock, client CPU busy | client lag p99 ms | load avg | passed |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for kind, steps in figures["capacity"].items():
        for sessions, r, passed in steps:
            wall = r.seconds or float("nan")
            lines.append(
                f"| {LABELS[kind]} | {sessions} | {fmt(r.rate, 0)} | {fmt(percentile(r.latencies, 50) * 1000, 1)}"
                f" / {fmt(percentile(r.latencies, 99) * 1000, 1)} | {r.deltas}/{r.expected} "
                f"| {fmt(r.per_delta_us(r.server_cpu), 1)} | {fmt(r.server_cpu / wall * 100, 0)} % "
                f"| {fmt(r.mock_cpu / wall * 100, 0)} %, {fmt(r.client_cpu / wall * 100, 0)} % "
                f"| {fmt(percentile(r.client_lag, 99) * 1000, 1)} "
                f"| {r.load_start}-{r.load_end} | {'yes' if passed else 'no: ' + (r.problems() or 'p99')} |")
    summaries = {kind: {"capacity": capacity_of(steps)} for kind, steps in figures["capacity"].items()}
    top = cfg["capacity_steps"][-1] if cfg["capacity_steps"] else None
    lines += ["", "Sessions served (largest passed step; 0: not even the first"
                  + (f"; {top} means every step passed, the real figure may be higher" if top else "") + "):", ""]
    lines += comparison_table(summaries, [("capacity, sessions", "capacity", 0)])
    return lines


# --- Idle sockets and the connect burst -----------------------------------------------------------

IDLE_ROWS = [
    ("sockets open at the end", "open", 0),
    ("sockets that did not open", "failed", 0),
    ("seconds to open them (100 at a time)", "open_seconds", 2),
    ("sockets opened per s, first tenth", "first_tenth_per_s", 0),
    ("sockets opened per s, last tenth", "last_tenth_per_s", 0),
    ("server RSS growth per socket, KiB", "kib_per_socket", 1),
    ("server CPU to open them, s", "server_cpu", 2),
    ("client CPU to open them, s", "client_cpu", 2),
]

CONNECT_ROWS = [
    ("sockets greeted", "greeted", 0),
    ("sockets refused, dropped or not greeted in time", "failed", 0),
    ("all greeted after, ms", "all_ms", 0),
    ("greeted p50, ms", "p50_ms", 0),
    ("greeted p99, ms", "p99_ms", 0),
    ("server CPU, s", "server_cpu", 2),
    ("client CPU, s", "client_cpu", 2),
]


def idle_section(figures, cfg) -> list[str]:
    summaries = {k: {**r, "kib_per_socket": r["bytes_per_socket"] / 1024} for k, r in figures["idle"].items()}
    lines = ["", f"### {cfg['idle_sockets']} idle sockets, one fresh process each ({load_note(figures, 'idle')})", ""]
    return lines + comparison_table(summaries, IDLE_ROWS)


def connect_section(figures, cfg) -> list[str]:
    summaries = {}
    for kind, r in figures["connect"].items():
        summaries[kind] = {**r, "p50_ms": r["p50"] * 1000, "p99_ms": r["p99"] * 1000,
                           "all_ms": r["all_seconds"] * 1000 if r["all_seconds"] is not None else "not all"}
    lines = ["", f"### {cfg['connect_sockets']} sockets connecting at once, one fresh process each "
                 f"({load_note(figures, 'connect')})", ""]
    return lines + comparison_table(summaries, CONNECT_ROWS)


# --- The whole report --------------------------------------------------------------------------------


def report(figures) -> str:
    cfg = figures["config"]
    lines = [f"Command: `{cfg['command']}` ({cfg['cpus']} CPUs, database {cfg['database']}, "
             f"started {cfg['started']}, took {cfg.get('seconds', '?')} s)"]
    if cfg["server_env"]:
        lines.append(f"Gateway environment added: {' '.join(cfg['server_env'])}")
    if figures.get("skipped"):
        lines += figures["skipped"]
    if figures.get("burst"):
        lines += stream_section(figures, "burst", f"Burst: {cfg['sessions']} sessions x {cfg['chunks']} deltas "
                                                  f"written at once, {cfg['rounds']} round(s)")
    if figures.get("paced"):
        lines += stream_section(figures, "paced", f"Paced: {cfg['sessions']} sessions x {cfg['paced_chunks']} "
                                                  f"deltas {cfg['paced_delay_ms']} ms apart, messages spread over "
                                                  f"{cfg['paced_stagger_ms']} ms, {cfg['paced_rounds']} round(s)")
    if figures.get("twoproc"):
        lines += twoproc_section(figures, cfg)
    if figures.get("capacity"):
        lines += capacity_section(figures, cfg)
    if figures.get("idle"):
        lines += idle_section(figures, cfg)
    if figures.get("connect"):
        lines += connect_section(figures, cfg)
    if "resume_long" in figures:
        long_ms = [t * 1000 for t in figures["resume_long"]]
        empty_ms = [t * 1000 for t in figures["resume_empty"]]
        lines += ["", f"Gateway, connect to session_start, {cfg['history']}-message session: "
                      f"p50 {percentile(long_ms, 50):.1f} ms, max {max(long_ms):.1f} ms "
                      f"(empty session: p50 {percentile(empty_ms, 50):.1f} ms; {load_note(figures, 'resume')})"]
    return "\n".join(lines)


def raw_figures(figures) -> dict:
    """The figures as JSON-ready data: rounds summarised, not every latency."""
    out = {}
    for key, value in figures.items():
        if key in ("burst", "paced"):
            out[key] = {k: stream_summary(v) for k, v in value.items() if v}
        elif key == "twoproc":
            out[key] = twoproc_summaries(value)
        elif key == "capacity":
            out[key] = {k: {"sessions": capacity_of(steps),
                            "steps": [{"sessions": s, "passed": p, **stream_summary([r])} for s, r, p in steps]}
                        for k, steps in value.items()}
        else:
            out[key] = value
    return out
