"""Targets and the markdown table of one `python -m bench` run.

Every figure is also shown against the bare brokers measured in the same run, as the share of
the ceiling fleetstate reaches: ceiling time / fleetstate time, or fleetstate rate / ceiling rate
(1.00 = as fast as the broker alone).
"""

from collections.abc import Callable
from typing import Any

Getter = Callable[[dict[str, Any]], Any]

# (scenario, figure, how to read it, unit, and for the bare brokers' columns: "time" or "rate"
# (shown with a ratio), "count" (shown), "" (not measured there))
FIGURES: list[tuple[str, str, Getter, str, str]] = [
    ("connect", "all connected after", lambda r: r["connect"]["all_connected_s"], "s", "time"),
    ("connect", "devices connected", lambda r: r["connect"]["connected"], "", "count"),
    ("connect", "connect rate", lambda r: r["connect"]["rate_per_s"], "/s", "rate"),
    (
        "connect",
        "CONNECT to SUBACK p99",
        lambda r: r["connect"]["handshake"]["p99_s"],
        "s",
        "count",
    ),
    (
        "connect",
        "CONNECT to SUBACK max",
        lambda r: r["connect"]["handshake"]["max_s"],
        "s",
        "count",
    ),
    ("connect", "RSS after connect", lambda r: r["connect"]["rss_mib"], "MiB", "count"),
    ("connect", "RSS per device", lambda r: r["connect"]["rss_per_device_kib"], "KiB", "count"),
    ("rollout", "all ACCEPTED after", lambda r: r["rollout"]["all_accepted_s"], "s", "time"),
    ("rollout", "p50 per device", lambda r: r["rollout"]["p50_s"], "s", "time"),
    ("rollout", "p99 per device", lambda r: r["rollout"]["p99_s"], "s", "time"),
    ("rollout", "binding PUT answered", lambda r: r["rollout"]["binding_put_s"], "s", ""),
    ("rollout", "foreign documents", lambda r: r["rollout"]["foreign_documents"], "", "count"),
    ("commands", "p50 round trip", lambda r: r["commands"]["client"]["p50_s"], "s", ""),
    ("commands", "p99 round trip", lambda r: r["commands"]["client"]["p99_s"], "s", ""),
    ("commands", "p99 (service clock)", lambda r: r["commands"]["server"]["p99_s"], "s", ""),
    ("commands", "all SUCCESS", lambda r: r["commands"]["all_success"], "", ""),
    ("telemetry", "MQTT accepted", lambda r: r["telemetry_mqtt"]["rate_per_s"], "/s", "rate"),
    ("telemetry", "MQTT stored = acked", lambda r: _lossless(r, "telemetry_mqtt"), "", ""),
    ("telemetry", "HTTP accepted", lambda r: r["telemetry_http"]["rate_per_s"], "/s", ""),
    ("telemetry", "HTTP stored = acked", lambda r: _lossless(r, "telemetry_http"), "", ""),
    ("telemetry", "service CPU per MQTT message", lambda r: _cpu_ms(r, "telemetry_mqtt"), "ms", ""),
    ("telemetry", "service CPU per HTTP request", lambda r: _cpu_ms(r, "telemetry_http"), "ms", ""),
    (
        "lean fleet",
        "all connected after",
        lambda r: r["connect_lean"]["all_connected_s"],
        "s",
        "time",
    ),
    (
        "lean fleet",
        "CONNECT to SUBACK p99",
        lambda r: r["connect_lean"]["suback_p99_s"],
        "s",
        "count",
    ),
    (
        "lean fleet",
        "rollout all ACCEPTED after",
        lambda r: r["rollout_lean"]["all_accepted_s"],
        "s",
        "",
    ),
    (
        "lean load",
        "MQTT accepted",
        lambda r: r["telemetry_mqtt_lean"]["rate_per_s"],
        "/s",
        "",
    ),
    ("lean load", "MQTT stored = acked", lambda r: _lossless(r, "telemetry_mqtt_lean"), "", ""),
    ("lean load", "HTTP accepted", lambda r: r["telemetry_http_lean"]["rate_per_s"], "/s", ""),
    ("lean load", "HTTP stored = acked", lambda r: _lossless(r, "telemetry_http_lean"), "", ""),
    (
        "lean load",
        "service CPU per MQTT message",
        lambda r: _cpu_ms(r, "telemetry_mqtt_lean"),
        "ms",
        "",
    ),
    (
        "lean load",
        "service CPU per HTTP request",
        lambda r: _cpu_ms(r, "telemetry_http_lean"),
        "ms",
        "",
    ),
]
LEAN_FLEET_PHASES = ("connect_lean", "rollout_lean")
TELEMETRY_PHASES = (
    "telemetry_mqtt",
    "telemetry_http",
    "telemetry_mqtt_lean",
    "telemetry_http_lean",
)


def _cpu_ms(result: dict[str, Any], name: str) -> float:
    """The service's CPU (all its threads) per acknowledged message, in ms: unlike the rate,
    it does not depend on how much of the cores the load generator left."""
    t = result[name]
    return round(10 * t["target_cpu_pct"] * t["phase_s"] / t["acked"], 3)


def _lossless(result: dict[str, Any], name: str) -> str:
    t = result[name]
    return f"{t['stored'] == t['acked']} ({t['stored']:,} of {t['acked']:,})"


def targets(result: dict[str, Any]) -> dict[str, str]:
    """The issue's targets: met, missed, or not measured at this size."""
    service, n = result.get("service", {}), result["devices"]

    def judge(needed: int, keys: tuple[str, ...], ok: Callable[[], bool]) -> str:
        if n < needed:
            return f"not measured (needs --devices {needed})"
        if any(k not in service for k in keys):
            return "not measured"
        try:
            return "met" if ok() else "missed"
        except (KeyError, TypeError):
            return "missed"

    c, r, cmd = (service.get(k, {}) for k in ("connect", "rollout", "commands"))
    tm, th = _best(service, "telemetry_mqtt"), _best(service, "telemetry_http")
    return {
        "10,000 connected under 1 GiB RSS": judge(
            10_000, ("connect",), lambda: c["all_connected"] and c["rss_mib"] < 1024
        ),
        "rollout to 10,000 all ACCEPTED in under 30 s": judge(
            10_000, ("rollout",), lambda: r["all_accepted"] and r["all_accepted_s"] < 30
        ),
        "1,000 concurrent commands p99 under 1 s": (
            judge(1_000, ("commands",), lambda: cmd["all_success"] and cmd["client"]["p99_s"] < 1)
            if n == 1_000
            else "not measured (needs --devices 1000)"
        ),
        f"MQTT telemetry >= 5,000/s, zero loss (from {n:,} devices)": judge(
            1, ("telemetry_mqtt",), lambda: tm["rate_per_s"] >= 5000 and _lossless_all(service)
        ),
        f"HTTP telemetry >= 3,000/s, zero loss (from {n:,} devices)": judge(
            1, ("telemetry_http",), lambda: th["rate_per_s"] >= 3000 and _lossless_all(service)
        ),
        **_front_door_targets(service, judge),
    }


def _front_door_targets(service: dict[str, Any], judge: Any) -> dict[str, str]:
    """The own endpoint's targets at 10,000 devices, from the lean fleet and load."""
    cl, rl = service.get("connect_lean", {}), service.get("rollout_lean", {})
    tl, c = service.get("telemetry_mqtt_lean", {}), service.get("connect", {})
    return {
        "10,000 connect in under 20 s (lean fleet)": judge(
            10_000, ("connect_lean",), lambda: cl["all_connected"] and cl["all_connected_s"] < 20
        ),
        "under 10 KiB service RSS per connection": judge(
            10_000, ("connect",), lambda: c["rss_per_device_kib"] < 10
        ),
        "rollout to 10,000 all ACCEPTED in under 10 s (lean fleet)": judge(
            10_000, ("rollout_lean",), lambda: rl["all_accepted"] and rl["all_accepted_s"] < 10
        ),
        "lean MQTT telemetry >= 8,000/s at <= 0.12 ms service CPU, zero loss": judge(
            10_000,
            ("telemetry_mqtt_lean",),
            lambda: (
                tl["rate_per_s"] >= 8000
                and _cpu_ms(service, "telemetry_mqtt_lean") <= 0.12
                and _lossless_all(service)
            ),
        ),
    }


def _best(service: dict[str, Any], name: str) -> dict[str, Any]:
    """The faster of the fleet's and the lean load generator's run of one transport."""
    runs = [service[k] for k in (name, name + "_lean") if k in service]
    return max(runs, key=lambda t: t["rate_per_s"], default={})


def _lossless_all(service: dict[str, Any]) -> bool:
    runs = [service[k] for k in TELEMETRY_PHASES if k in service]
    return all(t["stored"] == t["acked"] for t in runs)


def _value(getter: Getter, result: dict[str, Any]) -> Any:
    try:
        return getter(result)
    except (KeyError, TypeError):
        return None


def _show(value: Any, unit: str) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool | str):
        return str(value).lower() if isinstance(value, bool) else value
    text = f"{value:,.0f}" if unit == "/s" or isinstance(value, int) else f"{value:,.2f}"
    return f"{text} {unit}".strip()


def _ratio(ours: Any, ceiling: Any, kind: str) -> str:
    if kind not in ("time", "rate"):
        return ""
    if not isinstance(ours, int | float) or not isinstance(ceiling, int | float):
        return ""
    if not ours or not ceiling:
        return ""
    return f"{(ceiling / ours if kind == 'time' else ours / ceiling):.2f}"


def markdown(result: dict[str, Any]) -> str:
    service, ceilings = result.get("service", {}), result.get("ceiling", {})
    brokers = list(ceilings)
    head = "| scenario | figure | fleetstate |" + "".join(f" {b} alone | ratio |" for b in brokers)
    lines = [_heading(result), "", head, "|---" * (3 + 2 * len(brokers)) + "|"]
    for scenario, figure, getter, unit, kind in FIGURES:
        ours = _value(getter, service)
        if ours is None and not any(_value(getter, c) is not None for c in ceilings.values()):
            continue
        row = f"| {scenario} | {figure} | {_show(ours, unit)} |"
        for broker in brokers:
            theirs = _value(getter, ceilings[broker])
            row += f" {_show(theirs, unit) if kind else ''} | {_ratio(ours, theirs, kind)} |"
        lines.append(row)
    lines += ["", *_cpu_lines(result), "", "Targets:", ""]
    lines += [f"- {name}: **{verdict}**" for name, verdict in result["targets"].items()]
    return "\n".join(lines) + "\n"


def _heading(result: dict[str, Any]) -> str:
    m, v = result["machine"], result["versions"]
    tools = ", ".join(f"{k} {v[k]}" for k in ("python", "aiomqtt", "mosquitto") if k in v)
    return (
        f"### {result['started_at']}: {result['devices']:,} devices\n\n"
        f"`{result['command']}` · fleetstate {_served(result)} · {m['cores']} cores"
        f" ({m['cpu']}), {m['memory_gib']} GiB{_speed(m)} · {tools} · simulated devices in"
        f" {result['processes']} worker process(es) on the same cores as the service"
    )


def _speed(machine: dict[str, Any]) -> str:
    loop = machine.get("python_loop_s")
    return f", Python loop {loop} s" if loop else ""


def _served(result: dict[str, Any]) -> str:
    src = result.get("serve_src")
    return result["versions"]["fleetstate"] + (f" (service from {src})" if src else "")


def _cpu_lines(result: dict[str, Any]) -> list[str]:
    lines = [
        "CPU over each phase, in % of one core (target / load generator / other processes on the"
        " machine; the last should be near 0):",
        "",
    ]
    runs = [("fleetstate", result.get("service", {}))]
    runs += [(f"{b} alone", c) for b, c in result.get("ceiling", {}).items()]
    for label, run in runs:
        parts = [
            f"{name} {p['target_cpu_pct']:.0f} / {p['clients_cpu_pct']:.0f}"
            f" / {p.get('others_cpu_pct', 0):.0f}"
            for name in ("connect", "rollout", "commands", *TELEMETRY_PHASES, *LEAN_FLEET_PHASES)
            if (p := run.get(name))
        ]
        if parts:
            lines.append(f"- {label}: " + "; ".join(parts))
    return lines
