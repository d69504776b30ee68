"""A grid file (YAML) becomes a checked list of runs: named variants and/or a cartesian product, times seeds,
at one of the file's scales, with the claims the file makes about them.

Every error is one line naming the file, the key path and what is allowed, raised before anything runs.
``grid.json`` (what ``gptlab ablate`` ran) is read back through the same checks.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gptlab.claims import Claim, parse_claims
from gptlab.config import (ARCHS, DEVICES, LR_SCHEDULES, NANOGPT_RECIPE, PRESETS, RunConfig, apply_overrides, preset,
                           set_field, validate)
from gptlab.files import PROJECT_ROOT
from gptlab.sequential import Design
from gptlab.errors import GptlabError, choice_error, key_text, short
from gptlab.learner import file_path, is_model_file, load_plugin, resolve_arch

GRID_KEYS = ["name", "title", "insight", "preset", "set", "grid", "variants", "seeds", "baseline", "metric",
             "claims", "scales", "plugins"]
SCALE_KEYS = ["preset", "set", "grid", "seeds", "claims", "insight", "baseline", "title"]
VARIANT_KEYS = ["name", "preset", "set"]
METRICS = ["val_loss"]
DEFAULT_SEEDS = [1337]
DEFAULT_SCALE = "cpu"
MAX_RUNS = 1000  # a grid expanding to more runs than this is refused unless --max-runs says otherwise
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
CHOICES = {"model.arch": ARCHS, "train.lr_schedule": LR_SCHEDULES, "train.device": DEVICES}
GRID_FOLDER = "ablations"
# Every grid file has this scale; its own `scales.full` section is laid over it: the lecture's full model
# (384 wide, 6 heads, 6 layers, block 256, batch 64, dropout 0.2) on nanoGPT's recipe for 2500 steps, where its
# val loss bottoms out (1.458 at step 1750 on an H100), with 5 seeds.
FULL_SCALE: dict[str, Any] = {
    "preset": "full",
    "set": {**NANOGPT_RECIPE, "train.max_iters": 2500, "train.eval_interval": 250, "train.eval_windows": 512},
    "seeds": [1337, 1338, 1339, 1340, 1341],
}


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
    name: str                # the results folder's name: the file's name, plus "-<scale>" off the default scale
    title: str
    insight: str
    preset: str
    set: dict[str, Any]
    variants: list[Variant]
    seeds: list[int]
    baseline: str
    metric: str = "val_loss"
    source: str = ""
    scale: str = DEFAULT_SCALE
    scales: list[str] = field(default_factory=lambda: [DEFAULT_SCALE])  # every scale the file declares
    claims: list[Claim] = field(default_factory=list)
    plugins: list[str] = field(default_factory=list)  # files that register variants, loaded with the grid
    design: Design | None = None     # the planned looks when seeds are added until the claims settle
    seed_counts: dict[str, int] = field(default_factory=dict)  # variant -> its seeds, where more than ``seeds``

    def seeds_of(self, variant: str) -> list[int]:
        """A variant's seeds: the grid's, then (seeds added until settled) counting on from the largest."""
        return select_seeds(self.seeds, max(len(self.seeds), self.seed_counts.get(variant, 0)))  # pragma: no mutate (0 or 1: a grid has a seed at least)

    @property
    def run_count(self) -> int:
        return sum(len(self.seeds_of(name)) for name in self.variant_names)

    def config(self, variant: Variant, seed: int) -> RunConfig:
        """The variant's preset, then the grid's ``set``, then the variant's own overrides, then the seed."""
        cfg = apply_overrides(preset(variant.preset), {**self.set, **variant.overrides})
        cfg.train.seed = seed
        return cfg

    def runs(self) -> list[RunSpec]:
        specs = []
        for variant in self.variants:
            for seed in self.seeds_of(variant.name):
                cfg = self.config(variant, seed)
                specs.append(RunSpec(self.name, variant.name, seed, cfg, cfg.key()))
        return specs

    @property
    def variant_names(self) -> list[str]:
        return [v.name for v in self.variants]

    def manifest(self) -> dict[str, Any]:
        """The grid.json fields that describe what runs (``runner.write_manifest`` adds provenance)."""
        sequential = {} if self.design is None else {
            "until_settled": {**self.design.to_dict(), "seed_counts": self.seed_counts}}
        return {**sequential,
            "name": self.name, "title": self.title, "insight": self.insight, "preset": self.preset,
            "set": self.set, "seeds": self.seeds, "baseline": self.baseline, "metric": self.metric,
            "source": self.source, "scale": self.scale, "scales": self.scales,
            "variants": [{"name": v.name, "preset": v.preset, "overrides": v.overrides} for v in self.variants],
            "claims": [c.to_dict() for c in self.claims], **({"plugins": self.plugins} if self.plugins else {}),
        }

    @classmethod
    def from_manifest(cls, raw: Any, where: str) -> Grid:
        """Read grid.json back, with the checks of a grid file; errors name ``where``."""
        source = GridSource(where)
        if not isinstance(raw, dict):
            raise source.error("", "must be a JSON object written by `gptlab ablate`")  # pragma: no mutate (None is as falsy as "": no key path)
        lacking = [k for k in ("name", "variants", "seeds", "baseline", "preset") if k not in raw]
        if lacking:
            raise source.error("", f"lacks {', '.join(lacking)}; rerun `gptlab ablate` for this grid")  # pragma: no mutate (None is as falsy as "": no key path)
        variants_raw = raw["variants"]
        if not isinstance(variants_raw, list) or not variants_raw:
            raise source.error("variants", "must be a non-empty list")
        plugins = source.plugins(raw.get("plugins"))
        base_preset = source.preset_name(raw["preset"], "preset")
        variants = source.named([{"name": v.get("name"), "preset": v.get("preset", base_preset),
                                  "set": v.get("overrides")} if isinstance(v, dict) else v for v in variants_raw],
                                base_preset,  # pragma: no mutate (each mapping has its preset already)
                                )
        names = [v.name for v in variants]
        check_unique(names, source)
        baseline = raw["baseline"]
        if baseline not in names:
            raise source.error("baseline", f"{short(baseline)} matches no variant")
        scales = raw.get("scales", [DEFAULT_SCALE])
        if not isinstance(scales, list) or not all(isinstance(s, str) for s in scales):
            raise source.error("scales", f"{short(scales)} is not a list of scale names")
        return cls(
            name=source.folder_name(raw["name"]), title=source.text(raw.get("title", raw["name"]), "title"),
            insight=source.optional_text(raw.get("insight"), "insight"), preset=base_preset,
            set=source.overrides(raw.get("set"), "set"), variants=variants, seeds=source.seeds(raw["seeds"]),
            baseline=baseline, metric=source.metric(raw.get("metric")), source=str(raw.get("source", "")),
            scale=source.text(raw.get("scale", DEFAULT_SCALE), "scale"), scales=scales,
            claims=parse_claims(raw.get("claims"), names, source.error), plugins=plugins,
            **source.until_settled(raw.get("until_settled"), names),
        )


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def format_overrides(overrides: dict[str, Any]) -> str:
    return ", ".join(f"{key}={format_value(value)}" for key, value in overrides.items())


class GridLoader(yaml.SafeLoader):
    """``yaml.safe_load`` that refuses duplicate keys, and aliases of anything but a scalar or a flat list or
    mapping of scalars (a few hundred bytes of nested aliases can otherwise expand to gigabytes)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            anchored = self.anchors.get(event.anchor)
            if anchored is not None and not is_flat(anchored):
                raise yaml.YAMLError(f"the alias *{event.anchor} refers to a nested mapping or list; "
                                     "aliases may only repeat a scalar, or a list or mapping of scalars")
        return super().compose_node(parent, index)  # pragma: no mutate (parent, index: for path resolvers, none here)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:  # pragma: no mutate (deep: grid files nest no deeper than it reaches)
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    continue
                key = self.construct_object(key_node, deep=True)  # pragma: no mutate (a scalar key: deep or not)
                if key in seen:
                    raise yaml.YAMLError(f"duplicate key {short(key)} at line {key_node.start_mark.line + 1}; "
                                         "each key may appear once")
                seen.add(key)
        return super().construct_mapping(node, deep)  # pragma: no mutate (deep: grid files nest no deeper than it reaches)


def is_flat(node: Any) -> bool:
    if isinstance(node, yaml.ScalarNode):
        return True
    if isinstance(node, yaml.SequenceNode):
        return all(isinstance(item, yaml.ScalarNode) for item in node.value)
    return isinstance(node, yaml.MappingNode) and all(
        isinstance(k, yaml.ScalarNode) and isinstance(v, yaml.ScalarNode) for k, v in node.value)


class GridSource:
    """Checks the parts of a grid description; ``error(key_path, message)`` prefixes where it comes from."""

    def __init__(self, where: str, base: Path | None = None) -> None:
        self.where = where
        self.base = base or Path.cwd()  # a learner's model file (model.arch) is found relative to it first

    def error(self, key_path: str, message: str) -> GptlabError:
        return GptlabError(f"{self.where}: {key_path}: {message}" if key_path else f"{self.where}: {message}")

    def text(self, value: Any, key_path: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.error(key_path, f"{short(value)} is not allowed; expected a non-empty string")
        return value.strip()

    def optional_text(self, value: Any, key_path: str) -> str:
        return "" if value is None else self.text(value, key_path) if str(value).strip() else ""

    def until_settled(self, raw: Any, variants: list[str]) -> dict[str, Any]:
        """grid.json's ``until_settled`` (the looks planned and each extended variant's seeds) as Grid fields."""
        if raw is None:
            return {}
        try:
            design = Design.from_dict(raw)
        except GptlabError as err:
            raise self.error("until_settled", str(err)) from None
        counts = raw.get("seed_counts")
        if not isinstance(counts, dict) or not all(name in variants and type(n) is int and n <= design.max_seeds
                                                   for name, n in counts.items()):
            raise self.error("until_settled.seed_counts", f"{short(counts)} is not allowed; expected variant -> "
                                                          f"seeds, at most {design.max_seeds}")
        return {"design": design, "seed_counts": counts}

    def folder_name(self, value: Any) -> str:
        name = self.text(value, "name")
        if not NAME_PATTERN.match(name):
            raise self.error("name", f"{short(name)} is not allowed; use letters, digits, '_', '-' or '.' "
                                     "(it names a folder)")
        return name

    def preset_name(self, value: Any, key_path: str) -> str:
        if not isinstance(value, str) or value not in PRESETS:
            raise self.error(key_path, f"{short(value)} is not allowed; choose one of: {', '.join(PRESETS)}")
        return value

    def metric(self, value: Any) -> str:
        metric = METRICS[0] if value is None else value
        if metric not in METRICS:
            raise self.error("metric", f"{short(metric)} is not allowed; choose one of: {', '.join(METRICS)}")  # pragma: no mutate (one metric: no separator)
        return str(metric)

    def overrides(self, raw: Any, key_path: str) -> dict[str, Any]:
        """Dotted key -> value, each checked and converted to its field's type (components by name)."""
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            raise self.error(key_path, f"must be a mapping of dotted config keys to values, got {short(raw)}")
        sep = " " if key_path.startswith("--") else "."
        return {str(key): self.value(str(key), value, f"{key_path}{sep}{key}") for key, value in raw.items()}

    def value(self, key: str, value: Any, key_path: str) -> Any:
        from gptlab.components import REGISTRIES

        if key == "train.seed":
            raise self.error(key_path, "the seed is set by `seeds`, not as an override")
        probe = RunConfig()
        try:
            set_field(probe, key, value)
            section, _, name = key.partition(".")  # pragma: no mutate (rpartition: set_field took one dot only)
            typed = getattr(getattr(probe, section), name)
            if section == "model" and name in REGISTRIES:
                REGISTRIES[name].get(typed)
            if key == "model.arch" and is_model_file(typed):
                typed = resolve_arch(typed, self.base)
                file_path(typed)
            elif key in CHOICES and typed not in CHOICES[key]:
                raise choice_error(key, typed, CHOICES[key])
        except GptlabError as err:
            raise self.error(key_path, str(err)) from None
        return typed

    def axes(self, raw: Any, key_path: str) -> dict[str, list[Any]]:
        if not isinstance(raw, dict) or not raw:
            raise self.error(key_path, "must be a mapping of dotted config keys to non-empty lists of values")
        axes: dict[str, list[Any]] = {}
        for key, values in raw.items():
            if not isinstance(values, list) or not values:
                raise self.error(f"{key_path}.{key}",
                                 f"{short(values)} is not allowed; expected a non-empty list, e.g. [3, 6]")
            axes[str(key)] = [self.value(str(key), v, f"{key_path}.{key}[{i}]") for i, v in enumerate(values)]
        return axes

    def product(self, axes: dict[str, list[Any]], base_preset: str, seeds: int, max_runs: int) -> list[Variant]:
        """One variant per combination of the axes' values, named like ``residual=false, n_layer=6``; the
        combinations are counted before they are made."""
        count = math.prod(len(values) for values in axes.values())
        if count * seeds > max_runs:
            raise self.error("grid", f"{count:,} combinations x {seeds} seeds = {count * seeds:,} runs; at most "
                                     f"{max_runs:,} are allowed (--max-runs raises the limit)")
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
                raise self.error(where, f"{short(item)} is not allowed; expected a mapping with keys "
                                        f"{', '.join(VARIANT_KEYS)}")
            unknown = [k for k in item if k not in VARIANT_KEYS]
            if unknown:
                raise self.error(f"{where}.{key_text(unknown[0])}", f"unknown variant key; allowed: {', '.join(VARIANT_KEYS)}")
            name = self.text(item.get("name"), f"{where}.name")
            chosen = self.preset_name(item.get("preset", base_preset), f"{where}.preset")
            variants.append(Variant(name, chosen, self.overrides(item.get("set"), f"{where}.set")))
        return variants

    def plugins(self, raw: Any) -> list[str]:
        """Load each plugin file (relative to the grid file's folder) before the axes name its variants."""
        if raw is None:
            return []
        if not isinstance(raw, list) or not all(isinstance(p, str) and p.strip() for p in raw):
            raise self.error("plugins", f"{short(raw)} is not allowed; expected a list of .py files")
        paths = [str(self.base / p) if (self.base / p).is_file() else p for p in raw]
        for i, plugin in enumerate(paths):
            try:
                load_plugin(plugin)
            except GptlabError as err:
                raise self.error(f"plugins[{i}]", str(err)) from None
        return paths

    def seeds(self, raw: Any, count: int | None = None) -> list[int]:
        seeds = DEFAULT_SEEDS if raw is None else raw
        if not isinstance(seeds, list) or not seeds or not all(type(s) is int and 0 <= s < 2**63 for s in seeds):
            raise self.error("seeds", f"{short(raw)} is not allowed; expected a non-empty list of integers >= 0")
        if len(set(seeds)) != len(seeds):
            raise self.error("seeds", f"{short(seeds)} repeats a seed; each seed must appear once")
        return select_seeds(seeds, count)

    def baseline(self, raw: Any, variants: list[Variant]) -> str:
        """A variant name, or dotted key -> value matching the one variant whose own overrides have those values."""
        names = [v.name for v in variants]
        if raw is None:
            return names[0]
        if isinstance(raw, str):
            if raw not in names:
                raise self.error("baseline", f"{short(raw)} matches no variant; choose one of: {'; '.join(names)}")
            return raw
        wanted = self.overrides(raw, "baseline")
        matches = [v.name for v in variants if all(k in v.overrides and v.overrides[k] == x
                                                   for k, x in wanted.items())]
        if len(matches) != 1:
            found = "no variant" if not matches else f"{len(matches)} variants ({'; '.join(matches)})"
            raise self.error("baseline", f"{format_overrides(wanted)} matches {found}; it must match exactly one "
                                         f"of: {'; '.join(names)}")
        return matches[0]


def axis_labels(keys: list[str]) -> dict[str, str]:
    """``model.residual`` -> ``residual`` unless another axis has the same field name."""
    fields = [k.rpartition(".")[2] for k in keys]  # pragma: no mutate (partition: a checked key has one dot)
    return {k: f if fields.count(f) == 1 else k for k, f in zip(keys, fields)}


def select_seeds(seeds: list[int], count: int | None) -> list[int]:
    """The first ``count`` seeds; past the file's list, the next integers after its largest seed."""
    if count is None:
        return list(seeds)
    if count < 1:
        raise GptlabError(f"--seeds = {count} is not allowed; must be >= 1")
    extra = range(max(seeds) + 1, max(seeds) + 1 + count - len(seeds))  # pragma: no mutate (a longer range is cut at count)
    return (list(seeds) + list(extra))[:count]


def grid_path(name_or_path: str | Path) -> Path:
    """A grid file by path, or a shipped grid by name: ``masking`` is ``ablations/masking.yaml`` (here, or in
    the project that ships it)."""
    path = Path(name_or_path)
    if path.exists() or path.suffix in (".yaml", ".yml") or len(path.parts) > 1:
        return path
    for folder in (Path(GRID_FOLDER), PROJECT_ROOT / GRID_FOLDER):
        if (folder / f"{path}.yaml").is_file():
            return folder / f"{path}.yaml"
    return path


def shipped_grids() -> list[str]:
    return sorted(p.stem for p in (PROJECT_ROOT / GRID_FOLDER).glob("*.yaml"))


def read_yaml(path: Path) -> dict[str, Any]:
    source = GridSource(str(path))
    if not path.is_file():
        shipped = shipped_grids()
        hint = f"; shipped grids: {', '.join(shipped)}" if shipped and len(path.parts) == 1 else ""
        raise source.error("", ("is a folder, not a grid file" if path.is_dir() else "no such file") + hint)  # pragma: no mutate (None is as falsy as "": no key path)
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=GridLoader)  # noqa: S506 (a SafeLoader)  # pragma: no mutate (UTF-8 is utf-8, the locale's)
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise source.error("", f"not valid YAML{where}: {problem}") from None  # pragma: no mutate (None is as falsy as "": no key path)
    if not isinstance(raw, dict):
        raise source.error("", f"must be a mapping of grid keys ({', '.join(GRID_KEYS)})")  # pragma: no mutate (None is as falsy as "": no key path)
    unknown = [k for k in raw if k not in GRID_KEYS]
    if unknown:
        raise source.error(key_text(unknown[0]), f"unknown grid key; allowed: {', '.join(GRID_KEYS)}")
    return raw


def at_scale(raw: dict[str, Any], scale: str | None, source: GridSource) -> tuple[dict[str, Any], str, list[str]]:
    """The grid file's keys at ``scale``: a scale's ``preset``, ``seeds``, ``claims`` and ``insight`` replace the
    file's, its ``set`` is laid over the file's, and each of its ``grid`` axes replaces the file's axis."""
    declared = raw.get("scales") or {}
    if not isinstance(declared, dict) or not all(isinstance(v, dict) for v in declared.values()):
        raise source.error("scales", "must be a mapping of scale name -> {preset, set, grid, seeds, claims}")
    full = declared.get("full", {})
    scales_raw = {"full": {**FULL_SCALE, **full, "set": {**FULL_SCALE["set"], **(full.get("set") or {})}},
                  **{k: v for k, v in declared.items() if k != "full"}}
    names = [DEFAULT_SCALE] + [str(s) for s in scales_raw]
    chosen = DEFAULT_SCALE if scale is None else scale
    if chosen not in names:
        raise choice_error("--scale", chosen, names)
    if chosen == DEFAULT_SCALE:
        return raw, chosen, names
    spec = scales_raw[chosen]
    unknown = [k for k in spec if k not in SCALE_KEYS]
    if unknown:
        raise source.error(f"scales.{chosen}.{key_text(unknown[0])}", f"unknown key; allowed: {', '.join(SCALE_KEYS)}")
    merged = {**raw, **{k: v for k, v in spec.items() if k not in ("set", "grid")}}  # pragma: no mutate (both are set below)
    for key in ("set", "grid"):
        if key in spec:
            if not isinstance(spec[key], dict) or not isinstance(raw.get(key) or {}, dict):
                raise source.error(f"scales.{chosen}.{key}", "must be a mapping")
            merged[key] = {**(raw.get(key) or {}), **spec[key]}
    return merged, chosen, names


def load_grid(path: str | Path, cli_set: dict[str, Any] | None = None, device: str | None = None,
              seeds: int | None = None, scale: str | None = None, max_runs: int = MAX_RUNS) -> Grid:
    """Parse and check a grid file (or a shipped grid's name) at a scale; ``cli_set`` (from ``--set``) and
    ``device`` override it for every run. Checks names and values only: ``check_grid`` builds every variant."""
    path = grid_path(path)
    source = GridSource(str(path), path.parent)
    raw, scale_name, scale_names = at_scale(read_yaml(path), scale, source)
    plugins = source.plugins(raw.get("plugins"))
    name = source.folder_name(raw.get("name"))
    base_preset = source.preset_name(raw.get("preset", "lecture"), "preset")
    command_line = source.overrides(cli_set, "--set")
    if device is not None:
        command_line["train.device"] = source.value("train.device", device, "--device")
    chosen_seeds = source.seeds(raw.get("seeds"), seeds)
    axes = source.axes(raw["grid"], "grid") if raw.get("grid") is not None else {}
    variants = ((source.product(axes, base_preset, len(chosen_seeds), max_runs) if axes else [])
                + source.named(raw.get("variants"), base_preset))
    if not variants:
        raise source.error("", "no variants; give a `grid` mapping of lists and/or a `variants` list")  # pragma: no mutate (None is as falsy as "": no key path)
    if len(variants) * len(chosen_seeds) > max_runs:
        raise source.error("", f"{len(variants) * len(chosen_seeds):,} runs; at most {max_runs:,} are allowed "  # pragma: no mutate (None is as falsy as "": no key path)
                               "(--max-runs raises the limit)")
    names = [v.name for v in variants]
    check_unique(names, source)
    folder = name if scale_name == DEFAULT_SCALE else f"{name}-{scale_name}"
    return Grid(
        name=folder,
        title=source.text(raw.get("title", name), "title"),
        insight=source.optional_text(raw.get("insight"), "insight"),
        preset=base_preset,
        set={**source.overrides(raw.get("set"), "set"), **command_line},
        variants=[Variant(v.name, v.preset, {k: x for k, x in v.overrides.items() if k not in command_line})
                  for v in variants],
        seeds=chosen_seeds,
        baseline=source.baseline(raw.get("baseline"), variants),
        metric=source.metric(raw.get("metric")),
        source=str(path),
        scale=scale_name,
        scales=scale_names,
        claims=parse_claims(raw.get("claims"), names, source.error),
        plugins=plugins,
    )


def check_unique(names: list[str], source: GridSource) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise source.error("variants", f"duplicate variant name {short(name)}; every variant needs its own name")
        seen.add(name)


def check_grid(grid: Grid) -> None:
    """Before anything trains: every variant's data reads and fits its window, its memory fits the device, it
    validates and builds (on the meta device: instant), and no two variants resolve to the same config."""
    from gptlab.data import Corpus
    from gptlab.device import check_fits, resolve_device
    from gptlab.model import check_model

    source = GridSource(grid.source or grid.name)
    owner: dict[str, str] = {}
    corpora: dict[tuple[str, float], Corpus] = {}
    for variant in grid.variants:
        cfg = grid.config(variant, grid.seeds[0])
        try:
            validate(cfg)
            resolve_device(cfg.train.device)
            data = (cfg.data.path, cfg.data.train_fraction)
            if data not in corpora:
                corpora[data] = Corpus.from_file(*data)
            corpora[data].check_block_size(cfg.model.block_size)
            cfg.model.vocab_size = corpora[data].tokenizer.vocab_size
            check_fits(cfg)
            check_model(cfg.model)
        except GptlabError as err:
            raise source.error(f"variant {variant.name!r}", str(err)) from None
        key = cfg.key()
        if key in owner:
            raise source.error(f"variant {variant.name!r}", f"has the same config as {owner[key]!r}; "
                                                            "variants must differ (check --set against the grid)")
        owner[key] = variant.name
