"""What a newcomer sees in an 80-column terminal: nothing cut, every variant told apart, no wrapped units."""

import pytest
from rich.console import Console
from typer.testing import CliRunner

from gptlab.cli import app, variant_axes
from gptlab.display import LiveProgress, results_table
from gptlab.grid import load_grid
from gptlab.results import RunNumbers, variant_rows
from gptlab.runner import RunEvent

WIDTH = 80


def rendered(renderable) -> str:
    console = Console(width=WIDTH, record=True, file=open("/dev/null", "w"), force_terminal=True)
    console.print(renderable)
    return console.export_text()


def rows(names, baseline, leaking=()):
    runs = {name: [RunNumbers("done", 2.0 + i / 100 + s / 1000, 1.9, 50_000.0, 42_369, None) for s in range(5)]
            for i, name in enumerate(names)}
    return variant_rows(runs, baseline, dict.fromkeys(runs, 5), set(leaking))


def fits(text: str) -> None:
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= WIDTH and "…" not in text


@pytest.mark.parametrize("grid", ["norms", "residuals", "masking", "lecture", "scaling", "heads"])
def test_each_shipped_grids_table_fits_80_columns_and_tells_variants_apart(grid):
    g = load_grid(grid)
    axes = variant_axes(g)
    table = rows(g.variant_names, g.baseline, [n for n in g.variant_names if "none" in n and "mask" in n])
    text = rendered(results_table(g.title, table, axes, WIDTH))
    fits(text)
    words = text.split()
    for name in g.variant_names:
        cells = axes[name].values() if axes else name.split()
        assert all(cell in words or any(cell in w for w in words) for cell in cells), name
    if axes:  # one column per varied axis: the combinations are told apart by their cells
        for axis in next(iter(axes.values())):
            assert axis in words
    if grid == "masking":
        assert "⚠" in text and "leaks the future" in text  # the same mark as the report


def test_the_live_view_folds_long_names_and_keeps_numbers_whole():
    live = LiveProgress(4)
    label = "residual=false, n_layer=6, init=normal · seed 1338"
    live(RunEvent("start", "k", label, max_iters=5000))
    live(RunEvent("progress", "k", label, step=1200, max_iters=5000, train_loss=2.3456, val_loss=2.4))
    last = rendered(live.bar.make_tasks_table(live.bar.tasks))  # the table the live display redraws
    fits(last)
    assert "1200/5000" in last and "train 2.346  val 2.400" in last
    assert all(part in last for part in ("residual=false,", "n_layer=6,", "init=normal", "seed 1338"))


def test_list_and_dry_run_fit_80_columns():
    runner = CliRunner()
    for args in (["list"], ["ablate", "norms", "--dry-run"]):
        result = runner.invoke(app, args, env={"COLUMNS": str(WIDTH)})
        assert result.exit_code == 0, result.output
        fits(result.output)


@pytest.mark.parametrize(("speed", "shown"), [(0.4, "0.40 it/s"), (9.5, "9.50 it/s"), (1234.4, "1,234 it/s"),
                                              (None, "")])
def test_a_slow_rate_keeps_its_decimals(speed, shown):
    from types import SimpleNamespace

    from gptlab.display import RateColumn

    task = SimpleNamespace(finished_speed=None, speed=speed)
    assert RateColumn().render(task).plain == shown  # type: ignore[arg-type]
