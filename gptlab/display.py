"""What the terminal shows (rich): progress bars, the live view of a grid, and tables that fit the terminal.

The CLI calls the library and hands its results to these functions; nothing here computes a result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

from rich import box
from rich.console import Console, Group
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.measure import Measurement
from rich.table import Column as ColumnSpec
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from gptlab.results import VariantRow
    from gptlab.runner import RunEvent

console = Console()
err_console = Console(stderr=True)


class RateColumn(ProgressColumn):
    """Iterations per second, from rich's own moving estimate."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        rate = "" if not speed else f"{speed:.2f} it/s" if speed < 10 else f"{speed:,.0f} it/s"
        return Text(rate, style="cyan", no_wrap=True)


def progress_bar(target: Console | None = None) -> Progress:
    """Description (wrapped, never cut), bar, n/total, it/s, ETA and a ``losses`` field for the latest numbers;
    at 80 columns a long description folds onto a second line and the numbers keep their width."""
    fixed = {"no_wrap": True}
    return Progress(
        TextColumn("[bold]{task.description}", table_column=ColumnSpec(ratio=1, overflow="fold")),
        BarColumn(bar_width=10, table_column=ColumnSpec(**fixed)),  # type: ignore[arg-type]
        MofNCompleteColumn(table_column=ColumnSpec(**fixed)),  # type: ignore[arg-type]
        RateColumn(table_column=ColumnSpec(min_width=10, **fixed)),  # type: ignore[arg-type]
        TimeRemainingColumn(table_column=ColumnSpec(**fixed)),  # type: ignore[arg-type]
        TextColumn("{task.fields[losses]}", table_column=ColumnSpec(**fixed)),  # type: ignore[arg-type]
        console=target or console,
    )


class LiveProgress:
    """A grid's live view: runs done / total with ETA, one line per run in flight (step and loss)."""

    def __init__(self, total: int, target: Console | None = None) -> None:
        self.bar = progress_bar(target)
        self.overall = self.bar.add_task("runs", total=total, losses="")
        self.tasks: dict[str, Any] = {}
        self.last_val: dict[str, float] = {}
        self.ended: set[str] = set()
        self.finished = self.failed = 0

    def __enter__(self) -> LiveProgress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.__exit__(*exc)

    def add_runs(self, count: int, note: str) -> None:
        """``count`` more runs to train (a round of seeds until settled), announced by ``note``."""
        total = self.bar.tasks[self.overall].total or 0
        self.bar.update(self.overall, total=total + count)
        self.bar.console.print(note, highlight=False, soft_wrap=True)

    def __call__(self, event: RunEvent) -> None:
        if event.kind in ("finished", "failed"):
            self.end(event)
            return
        if event.key in self.ended:
            return
        if event.key not in self.tasks:
            self.tasks[event.key] = self.bar.add_task(f"  {event.label}", total=event.max_iters or None, losses="")
        if event.val_loss is not None:
            self.last_val[event.key] = event.val_loss
        losses = []
        if event.train_loss is not None:
            losses.append(f"train {event.train_loss:.3f}")
        if event.key in self.last_val:
            losses.append(f"val {self.last_val[event.key]:.3f}")
        self.bar.update(self.tasks[event.key], completed=event.step, losses="  ".join(losses))

    def end(self, event: RunEvent) -> None:
        self.ended.add(event.key)
        if event.kind == "failed":
            self.failed += 1
        else:
            self.finished += 1
        task = self.tasks.pop(event.key, None)
        if task is not None:
            self.bar.remove_task(task)
        parts = [f"{self.finished} finished"] + ([f"{self.failed} failed"] if self.failed else [])
        self.bar.update(self.overall, advance=1, losses=", ".join(parts))


# -- tables that fit -------------------------------------------------------------------------------------


@dataclass
class Column:
    """One column of a fitted table: its header, cells, and how readily it is dropped when space is short
    (higher drops first; 0 never)."""

    header: str
    cells: list[str]
    drop: int = 0
    right: bool = True
    wraps: bool = False  # a name column may wrap onto several lines; numbers never do

    def width(self) -> int:
        return max(len(self.header), *(len(c) for c in self.cells)) if self.cells else len(self.header)


def fitted_table(columns: list[Column], width: int, title: str | None = None) -> Table:
    """A table of ``columns`` within ``width`` characters: the most droppable columns go first, measured by rich
    (a wrapping column counts at up to 16 characters; no cell is cut)."""
    kept = list(columns)
    table = build_table(kept, title)
    for column in sorted((c for c in columns if c.drop), key=lambda c: -c.drop):
        if table_width(table) <= width:
            break
        kept.remove(column)
        table = build_table(kept, title)
    return table


def build_table(columns: list[Column], title: str | None) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", show_edge=False, collapse_padding=True)
    for column in columns:
        table.add_column(column.header, justify="right" if column.right else "left", no_wrap=not column.wraps,
                         overflow="fold", min_width=min(column.width(), 16) if column.wraps else column.width())
    for i in range(len(columns[0].cells) if columns else 0):
        table.add_row(*[c.cells[i] for c in columns])
    return table


def table_width(table: Table) -> int:
    """The narrowest width ``table`` renders in without cutting a cell."""
    probe = Console(width=1000)
    return Measurement.get(probe, probe.options, table).minimum


def number(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def signed(value: float | None) -> str:
    return "-" if value is None else format(value, "+.4f")


VERDICT_LEGEND = ("Δ = mean − baseline mean; verdict: Welch's t-test over seeds against the baseline, p Holm-adjusted "
                  "over the variants; n.s. = not significant")


def results_table(title: str, rows: Sequence[VariantRow], axes: dict[str, dict[str, str]] | None,
                  width: int, failed: Sequence[str] = ()) -> Group:
    """Variants ranked by mean val loss. With ``axes`` (variant -> axis -> value, for a product grid) each
    varied axis gets its own column instead of the variant's name; ``failed`` lines follow the table."""
    columns = [Column("#", [str(i) for i in range(1, len(rows) + 1)], drop=4)]
    if axes:
        for axis in next(iter(axes.values())):
            columns.append(Column(axis, [axes[r.variant][axis] for r in rows], right=False))
        columns.append(Column("", [mark(r) for r in rows], right=False))
    else:
        columns.append(Column("variant", [r.variant + mark(r, " ") for r in rows], right=False, wraps=True))
    columns += [
        Column("val loss", [number(r.mean, ".4f") if r.runs else ("diverged" if r.diverged else "-") for r in rows]),
        Column("±std", [number(r.std, ".4f") for r in rows], drop=3),
        Column("Δ", ["" if r.is_baseline else signed(r.delta) for r in rows]),
        Column("verdict", [r.verdict for r in rows], right=False),
        Column("seeds", [f"{r.runs}/{r.seeds}" + (f" ({r.diverged} div)" if r.diverged else "") for r in rows], drop=2),
        Column("train", [number(r.train_loss, ".3f") for r in rows], drop=5),
        Column("tok/s", [number(None if r.tokens_per_sec is None else r.tokens_per_sec / 1000, ",.0f") + "k"
                         if r.tokens_per_sec else "-" for r in rows], drop=6),
    ]
    notes = [VERDICT_LEGEND]
    if any(r.leaks_future for r in rows):
        notes.append("⚠ = leaks the future (no causal mask): its low loss is not a real result")
    notes += [f"failed: {line}" for line in failed]
    return Group(fitted_table(columns, width, title=title), Text("\n".join(notes)))


def mark(row: VariantRow, before: str = "") -> str:
    return before + "(baseline)" if row.is_baseline else before + "⚠" if row.leaks_future else ""


def rows_table(title: str, headers: list[str], rows: list[list[str]], width: int,
               drops: dict[str, int] | None = None, wraps: Callable[[str], bool] = lambda h: False) -> Table:
    """A plain table of text rows, fitted to ``width``."""
    columns = [Column(h, [r[i] for r in rows], drop=(drops or {}).get(h, 0), right=False, wraps=wraps(h))
               for i, h in enumerate(headers)]
    return fitted_table(columns, width, title=title)


def check_rows(title: str, rows: list[Any], width: int) -> Table:
    """``gptlab check``'s table: one row per check (per variant, for a plugin), its result, time and evidence."""
    with_variant = any(row.variant for row in rows)
    headers = (["variant"] if with_variant else []) + ["check", "result", "time", "evidence"]
    body = [([row.variant] if with_variant else []) + [row.check, row.status, f"{row.seconds:.1f} s", row.evidence]
            for row in rows]
    return rows_table(title, headers, body, width, wraps=lambda h: h == "evidence")
