"""The ``gptlab`` command line (Typer): parses arguments, calls the library, prints with rich."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Callable, Optional

import torch
import typer
from rich.table import Table

from gptlab import checkpoint
from gptlab.components import REGISTRIES
from gptlab.config import PRESET_INFO, PRESETS, RunConfig, apply_overrides, parse_set_args, preset, validate
from gptlab.data import Corpus
from gptlab.device import resolve_device
from gptlab.display import console, err_console, progress_bar
from gptlab.errors import GptlabError
from gptlab.flops import flops_per_token, matmul_peak_flops
from gptlab.model import build_model
from gptlab.sampling import generate_text
from gptlab.train import Progress, train as run_training

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)

SetOption = typer.Option(None, "--set", help="Override a config field, e.g. --set model.n_layer=4 (repeatable).")
DeviceOption = typer.Option(None, "--device", help="auto (CUDA when present), cpu or cuda.")


def fail(err: GptlabError) -> None:
    err_console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def build_config(preset_name: str, sets: list[str] | None, device: str | None) -> RunConfig:
    overrides = parse_set_args(sets or [])
    if device is not None:
        overrides["train.device"] = device
    return validate(apply_overrides(preset(preset_name), overrides))


def loss_text(p: Progress, last_val: list[float]) -> str:
    if p.val_loss is not None:
        last_val[0] = p.val_loss
    parts = []
    if p.train_loss is not None:
        parts.append(f"train {p.train_loss:.3f}")
    if last_val[0] == last_val[0]:
        parts.append(f"val {last_val[0]:.3f}")
    return "  ".join(parts)


def warn_if_slow(cfg: RunConfig, preset_name: str) -> None:
    """On CPU, estimate a long run's time from its FLOPs and this machine's measured matmul peak."""
    if resolve_device(cfg.train.device).type != "cpu" or preset_name != "full":
        return
    n_params = build_model(cfg.model).num_params()
    tokens = cfg.train.max_iters * cfg.train.batch_size * cfg.model.block_size
    utilisation = 0.3
    hours = flops_per_token(cfg.model, n_params) * tokens / (utilisation * matmul_peak_flops()) / 3600
    err_console.print(
        f"[yellow]warning:[/] preset '{preset_name}' on CPU: about {hours:.1f} hours "
        f"(estimated at {utilisation:.0%} of this CPU's measured matmul peak); use a GPU or --set train.max_iters=..."
    )


def guarded(fn: Callable[[], None]) -> None:
    try:
        fn()
    except GptlabError as err:
        fail(err)


@app.command()
def train(
    preset_name: str = typer.Option("lecture", "--preset", help=f"One of: {', '.join(PRESETS)}."),
    sets: Optional[list[str]] = SetOption,
    device: Optional[str] = DeviceOption,
    data: Optional[Path] = typer.Option(None, "--data", help="Any UTF-8 text file (default: tiny Shakespeare)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: out/<preset>)."),
    sample_tokens: int = typer.Option(300, "--sample-tokens", help="Characters to sample at the end (0: none)."),
) -> None:
    """Train a preset; writes a checkpoint and the loss curve, prints a sample."""

    def run() -> None:
        extra = list(sets or []) + ([f"data.path={data}"] if data else [])
        cfg = build_config(preset_name, extra, device)
        corpus = Corpus.from_file(cfg.data.path, cfg.data.train_fraction)
        corpus.check_block_size(cfg.model.block_size)
        warn_if_slow(cfg, preset_name)
        out_dir = out or Path("out") / preset_name
        out_dir.mkdir(parents=True, exist_ok=True)
        last_val = [float("nan")]
        with progress_bar() as bar:
            task = bar.add_task(f"train {preset_name}", total=cfg.train.max_iters, losses="")

            def on_progress(p: Progress) -> None:
                bar.update(task, completed=p.step, losses=loss_text(p, last_val))

            result = run_training(cfg, corpus, on_progress)
        cfg.model.vocab_size = corpus.tokenizer.vocab_size
        checkpoint.save(out_dir / "ckpt.pt", result.model, cfg, corpus.tokenizer)
        write_history(out_dir, result.history)
        summary = {
            "preset": preset_name,
            "final_val_loss": result.final_val_loss,
            "final_train_loss": result.final_train_loss,
            "best_val_loss": result.best_val_loss,
            "diverged_at": result.diverged_at,
            "wall_time_s": round(result.wall_time, 2),
            "tokens_per_sec": round(result.tokens_per_sec),
            "params": result.model.num_params(),
            "device": result.device,
            "config": cfg.to_dict(),
        }
        (out_dir / "result.json").write_text(json.dumps(summary, indent=2))
        if result.diverged_at is not None:
            console.print(f"[red]diverged[/] (non-finite loss) at step {result.diverged_at}")
        console.print(
            f"val loss [bold]{result.final_val_loss:.4f}[/]  train loss {result.final_train_loss:.4f}  "
            f"{result.wall_time:.1f} s  {result.tokens_per_sec:,.0f} tokens/s  {summary['params']:,} params  "
            f"on {result.device}"
        )
        console.print(f"wrote {out_dir / 'ckpt.pt'}, {out_dir / 'history.csv'}, {out_dir / 'result.json'}")
        if sample_tokens:
            console.rule("sample")
            console.print(generate_text(result.model, corpus.tokenizer, "\n", sample_tokens, cfg.train.seed),
                          highlight=False, markup=False)

    guarded(run)


def write_history(out_dir: Path, history: list[dict[str, float]]) -> None:
    with open(out_dir / "history.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


@app.command()
def sample(
    ckpt: Path = typer.Argument(..., help="A checkpoint written by `gptlab train` (ckpt.pt)."),
    tokens: int = typer.Option(500, "--tokens", help="How many characters to generate."),
    prompt: str = typer.Option("\n", "--prompt", help="Text to continue (characters of the training corpus)."),
    seed: int = typer.Option(1337, "--seed", help="Sampling seed."),
) -> None:
    """Generate text from a checkpoint."""

    def run() -> None:
        if tokens < 1:
            raise GptlabError(f"--tokens = {tokens} is not allowed; must be >= 1")
        if not prompt:
            raise GptlabError("--prompt = '' is not allowed; give at least one character")
        model, _, tokenizer = checkpoint.load(ckpt)
        console.print(generate_text(model, tokenizer, prompt, tokens, seed), highlight=False, markup=False)

    guarded(run)


@app.command("list")
def list_components() -> None:
    """Presets and every component registry with its choices and insight."""
    presets = Table(title="presets (gptlab train --preset NAME)")
    presets.add_column("preset", style="bold")
    presets.add_column("what")
    for name in PRESETS:
        presets.add_row(name, PRESET_INFO[name])
    console.print(presets)
    components = Table(title="components (--set model.FIELD=CHOICE, or model.FIELD in a grid)")
    for column in ("field", "choice", "insight"):
        components.add_column(column, style="bold" if column == "field" else None)
    for field, registry in REGISTRIES.items():
        components.add_row(f"model.{field}", "", registry.insight, style="dim")
        for entry in registry.entries():
            components.add_row("", entry.name, entry.insight)
    components.add_row("model.n_head", "1..n_embd", "multi-head: several smaller heads vs one big one (must divide n_embd)")
    console.print(components)


if __name__ == "__main__":
    app()
