"""A grid file (YAML) becomes a checked list of runs: named variants and/or a cartesian product, times seeds.

Every error is one line naming the file, the key path and what is allowed, raised before anything runs.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gptlab.components import REGISTRIES
from gptlab.config import ARCHS, DEVICES, LR_SCHEDULES, PRESETS, RunConfig, apply_overrides, preset, set_field, validate
from gptlab.device import resolve_device
from gptlab.errors import GptlabError, choice_error

GRID_KEYS = ["name", "title", "insight", "preset", "set", "grid", "variants", "seeds", "baseline", "metric"]
VARIANT_KEYS = ["name", "preset", "set"]
METRICS = ["val_loss"]
DEFAULT_SEEDS = [1337]
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
CHOICES = {"model.arch": ARCHS, "train.lr_schedule": LR_SCHEDULES, "train.device": DEVICES}


@dataclass(frozen=True)
class Variant:
    name: str
    preset: str
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunSpec:
    """One run: a variant at one seed, with its fully resolved config and that config's key."""

    grid: str
    variant: str
    seed: int
    config: RunConfig
    key: str


@dataclass
class Grid:
    name: str
    title: str
    insight: str
    preset: str
    set: dict[str, Any]
    variants: list[Variant]
    seeds: list[int]
    baseline: str
    metric: str = "val_loss"
    source: str = ""

    def config(self, variant: Variant, seed: int) -> RunConfig:
        """The variant's preset, then the grid's ``set``, then the variant's own overrides, then the seed."""
        cfg = apply_overrides(preset(variant.preset), {**self.set, **variant.overrides})
        cfg.train.seed = seed
        return cfg

    def runs(self) -> list[RunSpec]:
        specs = []
        for variant in self.variants:
            for seed in self.seeds:
                cfg = self.config(variant, seed)
                specs.append(RunSpec(self.name, variant.name, seed, cfg, cfg.key()))
        return specs

    def manifest(self) -> dict[str, Any]:
        """The grid.json fields that describe what runs (the runner adds provenance)."""
        return {
            "name": self.name,
            "title": self.title,
            "insight": self.insight,
            "preset": self.preset,
            "set": self.set,
            "seeds": self.seeds,
            "baseline": self.baseline,
            "metric": self.metric,
            "source": self.source,
            "variants": [{"name": v.name, "preset": v.preset, "overrides": v.overrides} for v in self.variants],
        }

    @classmethod
    def from_manifest(cls, raw: dict[str, Any]) -> Grid:
        fields = ("name", "title", "insight", "preset", "set", "seeds", "baseline", "metric", "source")
        variants = [Variant(v["name"], v["preset"], v["overrides"]) for v in raw["variants"]]
        return cls(variants=variants, **{k: raw[k] for k in fields})


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def format_overrides(overrides: dict[str, Any]) -> str:
    return ", ".join(f"{key}={format_value(value)}" for key, value in overrides.items())


class GridFile:
    """Reads and checks one grid file; ``error(path, message)`` prefixes the file name."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def error(self, key_path: str, message: str) -> GptlabError:
        return GptlabError(f"{self.path}: {key_path}: {message}" if key_path else f"{self.path}: {message}")

    def read(self) -> dict[str, Any]:
        if not self.path.is_file():
            raise self.error("", "no such file")
        try:
            raw = yaml.safe_load(self.path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise self.error("", f"not valid YAML{where}: {problem}") from None
        if not isinstance(raw, dict):
            raise self.error("", f"must be a mapping of grid keys ({', '.join(GRID_KEYS)})")
        unknown = [k for k in raw if k not in GRID_KEYS]
        if unknown:
            raise self.error(str(unknown[0]), f"unknown grid key; allowed: {', '.join(GRID_KEYS)}")
        return raw

    def text(self, value: Any, key_path: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.error(key_path, f"{value!r} is not allowed; expected a non-empty string")
        return value.strip()

    def preset_name(self, value: Any, key_path: str) -> str:
        if value not in PRESETS:
            raise self.error(key_path, f"{value!r} is not allowed; choose one of: {', '.join(PRESETS)}")
        return value

    def overrides(self, raw: Any, key_path: str) -> dict[str, Any]:
        """Dotted key -> value, each checked and converted to its field's type (components by name)."""
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            raise self.error(key_path, f"must be a mapping of dotted config keys to values, got {raw!r}")
        sep = " " if key_path.startswith("--") else "."
        return {str(key): self.value(str(key), value, f"{key_path}{sep}{key}") for key, value in raw.items()}

    def value(self, key: str, value: Any, key_path: str) -> Any:
        if key == "train.seed":
            raise self.error(key_path, "the seed is set by `seeds`, not as an override")
        probe = RunConfig()
        try:
            set_field(probe, key, value)
            section, _, name = key.partition(".")
            typed = getattr(getattr(probe, section), name)
            if section == "model" and name in REGISTRIES:
                REGISTRIES[name].get(typed)
            if key in CHOICES and typed not in CHOICES[key]:
                raise choice_error(key, typed, CHOICES[key])
        except GptlabError as err:
            raise self.error(key_path, str(err)) from None
        return typed

    def product(self, raw: Any, base_preset: str) -> list[Variant]:
        """One variant per combination of the axes' values, named like ``residual=false, n_layer=6``."""
        if raw is None:
            return []
        if not isinstance(raw, dict) or not raw:
            raise self.error("grid", "must be a mapping of dotted config keys to non-empty lists of values")
        axes: dict[str, list[Any]] = {}
        for key, values in raw.items():
            if not isinstance(values, list) or not values:
                raise self.error(f"grid.{key}", f"{values!r} is not allowed; expected a non-empty list, e.g. [3, 6]")
            axes[str(key)] = [self.value(str(key), v, f"grid.{key}[{i}]") for i, v in enumerate(values)]
        labels = axis_labels(list(axes))
        variants = []
        for combo in itertools.product(*axes.values()):
            overrides = dict(zip(axes, combo))
            name = ", ".join(f"{labels[k]}={format_value(v)}" for k, v in overrides.items())
            variants.append(Variant(name, base_preset, overrides))
        return variants

    def named(self, raw: Any, base_preset: str) -> list[Variant]:
        if raw is None:
            return []
        if not isinstance(raw, list) or not raw:
            raise self.error("variants", "must be a non-empty list of {name, preset, set} mappings")
        variants = []
        for i, item in enumerate(raw):
            where = f"variants[{i}]"
            if not isinstance(item, dict):
                raise self.error(where, f"{item!r} is not allowed; expected a mapping with keys {', '.join(VARIANT_KEYS)}")
            unknown = [k for k in item if k not in VARIANT_KEYS]
            if unknown:
                raise self.error(f"{where}.{unknown[0]}", f"unknown variant key; allowed: {', '.join(VARIANT_KEYS)}")
            name = self.text(item.get("name"), f"{where}.name")
            chosen = self.preset_name(item.get("preset", base_preset), f"{where}.preset")
            variants.append(Variant(name, chosen, self.overrides(item.get("set"), f"{where}.set")))
        return variants

    def seeds(self, raw: Any, count: int | None) -> list[int]:
        seeds = DEFAULT_SEEDS if raw is None else raw
        if not isinstance(seeds, list) or not seeds or not all(type(s) is int for s in seeds):
            raise self.error("seeds", f"{raw!r} is not allowed; expected a non-empty list of integers")
        if len(set(seeds)) != len(seeds):
            raise self.error("seeds", f"{seeds} repeats a seed; each seed must appear once")
        return select_seeds(seeds, count)

    def baseline(self, raw: Any, grid: Grid) -> str:
        """A variant name, or dotted key -> value matching the one variant whose own overrides have those values."""
        names = [v.name for v in grid.variants]
        if raw is None:
            return names[0]
        if isinstance(raw, str):
            if raw not in names:
                raise self.error("baseline", f"{raw!r} matches no variant; choose one of: {'; '.join(names)}")
            return raw
        wanted = self.overrides(raw, "baseline")
        matches = [v.name for v in grid.variants if all(k in v.overrides and v.overrides[k] == x
                                                         for k, x in wanted.items())]
        if len(matches) != 1:
            found = "no variant" if not matches else f"{len(matches)} variants ({'; '.join(matches)})"
            raise self.error("baseline", f"{format_overrides(wanted)} matches {found}; it must match exactly one "
                                         f"of: {'; '.join(names)}")
        return matches[0]


def axis_labels(keys: list[str]) -> dict[str, str]:
    """``model.residual`` -> ``residual`` unless another axis has the same field name."""
    fields = [k.rpartition(".")[2] for k in keys]
    return {k: f if fields.count(f) == 1 else k for k, f in zip(keys, fields)}


def select_seeds(seeds: list[int], count: int | None) -> list[int]:
    """The first ``count`` seeds; past the file's list, the next integers after its largest seed."""
    if count is None:
        return list(seeds)
    if count < 1:
        raise GptlabError(f"--seeds = {count} is not allowed; must be >= 1")
    extra = range(max(seeds) + 1, max(seeds) + 1 + count - len(seeds))
    return (list(seeds) + list(extra))[:count]


def load_grid(
    path: str | Path, cli_set: dict[str, Any] | None = None, device: str | None = None, seeds: int | None = None
) -> Grid:
    """Parse and check a grid file; ``cli_set`` (from ``--set``) and ``device`` override it for every run."""
    source = GridFile(Path(path))
    raw = source.read()
    name = source.text(raw.get("name"), "name")
    if not NAME_PATTERN.match(name):
        raise source.error("name", f"{name!r} is not allowed; use letters, digits, '_', '-' or '.' (it names a folder)")
    base_preset = source.preset_name(raw.get("preset", "lecture"), "preset")
    command_line = source.overrides(cli_set, "--set")
    if device is not None:
        command_line["train.device"] = source.value("train.device", device, "--device")
    variants = source.product(raw.get("grid"), base_preset) + source.named(raw.get("variants"), base_preset)
    if not variants:
        raise source.error("", "no variants; give a `grid` mapping of lists and/or a `variants` list")
    check_unique([v.name for v in variants], source)
    metric = raw.get("metric", METRICS[0])
    if metric not in METRICS:
        raise source.error("metric", f"{metric!r} is not allowed; choose one of: {', '.join(METRICS)}")
    grid = Grid(
        name=name,
        title=source.text(raw.get("title", name), "title"),
        insight=str(raw.get("insight") or "").strip(),
        preset=base_preset,
        set={**source.overrides(raw.get("set"), "set"), **command_line},
        variants=[Variant(v.name, v.preset, {k: x for k, x in v.overrides.items() if k not in command_line})
                  for v in variants],
        seeds=source.seeds(raw.get("seeds"), seeds),
        baseline="",
        metric=metric,
        source=str(path),
    )
    check_configs(grid, source)
    grid.baseline = source.baseline(raw.get("baseline"), grid)
    return grid


def check_unique(names: list[str], source: GridFile) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise source.error("variants", f"duplicate variant name {name!r}; every variant needs its own name")
        seen.add(name)


def check_configs(grid: Grid, source: GridFile) -> None:
    """Every variant must build and train, and no two variants may resolve to the same config."""
    owner: dict[str, str] = {}
    for variant in grid.variants:
        cfg = grid.config(variant, grid.seeds[0])
        try:
            validate(cfg)
            resolve_device(cfg.train.device)
        except GptlabError as err:
            raise source.error(f"variant {variant.name!r}", str(err)) from None
        key = cfg.key()
        if key in owner:
            raise source.error(f"variant {variant.name!r}", f"has the same config as {owner[key]!r}; "
                                                            "variants must differ (check --set against the grid)")
        owner[key] = variant.name


def plan_rows(grid: Grid, specs: list[RunSpec]) -> list[dict[str, Any]]:
    """What ``--dry-run`` shows: one row per run."""
    by_name = {v.name: v for v in grid.variants}
    return [
        {"variant": s.variant, "seed": s.seed, "preset": by_name[s.variant].preset,
         "overrides": format_overrides(by_name[s.variant].overrides), "key": s.key}
        for s in specs
    ]
