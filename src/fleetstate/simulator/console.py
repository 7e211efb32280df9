"""Live progress of a simulated fleet (rich progress bars) and the summary at the end."""

from rich.console import Console, Group, RenderableType
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from fleetstate.simulator.stats import Totals

TOP_ERRORS = 10


def bars(console: Console | None = None) -> Progress:
    return Progress(
        TextColumn("{task.description:>14}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


class LiveView:
    """Connected, converged and commands done as bars, and a line of counters under them."""

    def __init__(self, devices: int) -> None:
        self.progress = bars()
        self._connected = self.progress.add_task("connected", total=devices)
        self._converged = self.progress.add_task("converged", total=devices)
        self._commands: TaskID = self.progress.add_task("commands done", total=0)
        self._line = Text()

    def update(self, totals: Totals) -> None:
        counters = totals.counters()
        self.progress.update(self._connected, completed=totals.gauge("connected"))
        self.progress.update(self._converged, completed=totals.gauge("converged"))
        self.progress.update(
            self._commands,
            completed=counters["commands_done"],
            total=max(counters["commands_received"], counters["commands_done"]),
        )
        self._line = Text(
            f"telemetry {counters['telemetry_acked']:,} acknowledged · documents"
            f" {counters['documents']:,} · reconnects {counters['reconnects']:,} · errors"
            f" {sum(totals.errors().values()):,}",
            style="dim",
        )

    def __rich__(self) -> RenderableType:
        return Group(self.progress, self._line)


def summary(totals: Totals, devices: int, seconds: float, provisioning_s: float) -> Table:
    counters = totals.counters()
    table = Table(title="fleetstate simulate", show_header=False, title_justify="left")
    table.add_column(justify="right", style="bold")
    table.add_column()
    converged, accepted = totals.gauge("converged"), totals.gauge("accepted")
    rows = [
        ("devices", f"{devices:,} (provisioned in {provisioning_s:.1f} s)"),
        ("ran for", f"{seconds:.1f} s in {len(totals.latest)} worker processes"),
        (
            "connected",
            f"{totals.peak_connected:,} at most at once, {counters['connects']:,} connects",
        ),
        ("converged", f"{converged:,} ({accepted:,} ACCEPTED, {converged - accepted:,} other)"),
        ("documents", f"{counters['documents']:,} received, {counters['reports']:,} answered"),
        (
            "commands",
            f"{counters['commands_received']:,} received, {counters['commands_done']:,} done,"
            f" {counters['commands_failed']:,} of them FAILED",
        ),
        (
            "telemetry",
            f"{counters['telemetry_sent']:,} sent, {counters['telemetry_acked']:,} acknowledged",
        ),
        ("reconnects", f"{counters['reconnects']:,}"),
        ("foreign messages", f"{counters['foreign_messages']:,}"),
        ("client CPU", f"{totals.cpu_s():.1f} s"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    for kind, count in totals.errors().most_common(TOP_ERRORS):
        table.add_row("error", f"{count:,} x {kind}", style="yellow")
    return table
