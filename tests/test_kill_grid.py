"""Grid files and grid.json, exactly: each bad file's or manifest's whole one-line message (file, key path, value,
what is allowed), what a manifest's missing keys default to, how a scale lays its keys over the file, where a
grid file is looked for, and the YAML a grid may use."""

import pytest

from gptlab.claims import Claim
from gptlab.errors import GptlabError
from gptlab.grid import (DEFAULT_SEEDS, FULL_SCALE, Grid, Variant, check_grid, grid_path, load_grid, select_seeds,
                         shipped_grids)

BASE = "name: g\npreset: bigram\n"
ONE = BASE + "grid: {train.lr: [0.1]}\n"
KEYS = "name, title, insight, preset, set, grid, variants, seeds, baseline, metric, claims, scales, plugins"


def write(tmp_path, text, name="g.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def refused_with(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(GptlabError) as exc:
        load_grid(path)
    assert str(exc.value) == f"{path}: {message}"


@pytest.mark.parametrize("text, message", [
    ("- a\n- b\n", f"must be a mapping of grid keys ({KEYS})"),
    (BASE + "grids: {train.lr: [1]}\n", f"grids: unknown grid key; allowed: {KEYS}"),
    (BASE + "grid: {train.lr: [1, 2}\n", "not valid YAML at line 3: expected ',' or ']', but got '}'"),
    (BASE + "grid: {train.lr: [1]}\ngrid: {train.lr: [2]}\n",
     "not valid YAML: duplicate key 'grid' at line 4; each key may appear once"),
    (BASE + "set: &s {a: {b: 1}}\ngrid: *s\n", "not valid YAML: the alias *s refers to a nested mapping or list; "
                                               "aliases may only repeat a scalar, or a list or mapping of scalars"),
    (ONE + "scales: [small]\n", "scales: must be a mapping of scale name -> {preset, set, grid, seeds, claims}"),
    (BASE, "no variants; give a `grid` mapping of lists and/or a `variants` list"),
    (BASE + "variants: {a: 1}\n", "variants: must be a non-empty list of {name, preset, set} mappings"),
    (BASE + "variants: [a]\n", "variants[0]: 'a' is not allowed; expected a mapping with keys name, preset, set"),
    (BASE + "variants: [{name: a, sett: {}}]\n", "variants[0].sett: unknown variant key; allowed: name, preset, set"),
    (BASE + "variants: [{name: a}, {name: a}]\n",
     "variants: duplicate variant name 'a'; every variant needs its own name"),
    (ONE + "seeds: [1, 1]\n", "seeds: [1, 1] repeats a seed; each seed must appear once"),
    (ONE + "seeds: [-1]\n", "seeds: [-1] is not allowed; expected a non-empty list of integers >= 0"),
    (ONE + f"seeds: [{2**63}]\n", f"seeds: [{2**63}] is not allowed; expected a non-empty list of integers >= 0"),
    (BASE + "grid: {train.lr: [0.1, 0.2]}\nbaseline: x\n",
     "baseline: 'x' matches no variant; choose one of: lr=0.1; lr=0.2"),
    (BASE + "grid: {train.lr: [0.1, 0.2]}\nbaseline: {train.lr: 0.3}\n",
     "baseline: train.lr=0.3 matches no variant; it must match exactly one of: lr=0.1; lr=0.2"),
    (BASE + "grid: {train.lr: [0.1, 0.2], model.n_layer: [1, 2]}\nbaseline: {train.lr: 0.1}\n",
     "baseline: train.lr=0.1 matches 2 variants (lr=0.1, n_layer=1; lr=0.1, n_layer=2); it must match exactly one "
     "of: lr=0.1, n_layer=1; lr=0.1, n_layer=2; lr=0.2, n_layer=1; lr=0.2, n_layer=2"),
    ("name: 'a b'\ngrid: {train.lr: [0.1]}\n",
     "name: 'a b' is not allowed; use letters, digits, '_', '-' or '.' (it names a folder)"),
    (ONE + "metric: acc\n", "metric: 'acc' is not allowed; choose one of: val_loss"),
    (ONE + "title: ' '\n", "title: ' ' is not allowed; expected a non-empty string"),
    (ONE + "insight: [1]\n", "insight: [1] is not allowed; expected a non-empty string"),
    (ONE + "set: [1]\n", "set: must be a mapping of dotted config keys to values, got [1]"),
    (BASE + "grid: {train.lr: 0.1}\n", "grid.train.lr: 0.1 is not allowed; expected a non-empty list, e.g. [3, 6]"),
    (BASE + "grid: {}\n", "grid: must be a mapping of dotted config keys to non-empty lists of values"),
    (BASE + "grid: {train.seed: [1, 2]}\n", "grid.train.seed[0]: the seed is set by `seeds`, not as an override"),
    (ONE + "claims: [{variant: nope, is: worse}]\n",
     "claims[0].variant: 'nope' matches no variant; choose one of: lr=0.1"),
])
def test_each_bad_grid_file_has_its_exact_message(tmp_path, text, message):
    refused_with(tmp_path, text, message)


@pytest.mark.parametrize("scales, message", [
    ("{small: {sett: {}}}", "scales.small.sett: unknown key; allowed: preset, set, grid, seeds, claims, insight, "
                            "baseline, title"),
    ("{small: {set: [1]}}", "scales.small.set: must be a mapping"),
    ("{small: {grid: [1]}}", "scales.small.grid: must be a mapping"),
    ("{small: 3}", "scales: must be a mapping of scale name -> {preset, set, grid, seeds, claims}"),
])
def test_each_bad_scale_has_its_exact_message(tmp_path, scales, message):
    path = write(tmp_path, ONE + f"scales: {scales}\n")
    with pytest.raises(GptlabError) as exc:
        load_grid(path, scale="small")
    assert str(exc.value) == f"{path}: {message}"


def test_a_file_grid_that_is_no_mapping_under_a_scale_is_named(tmp_path):
    path = write(tmp_path, BASE + "grid: [1]\nscales: {small: {grid: {train.lr: [0.2]}}}\n")
    with pytest.raises(GptlabError) as exc:
        load_grid(path, scale="small")
    assert str(exc.value) == f"{path}: scales.small.grid: must be a mapping"


def test_too_many_runs_are_counted_in_the_message(tmp_path):
    path = write(tmp_path, BASE + "grid: {train.lr: [0.1, 0.2]}\nvariants: [{name: x}]\n")
    with pytest.raises(GptlabError) as exc:
        load_grid(path, max_runs=2)
    assert str(exc.value) == f"{path}: 3 runs; at most 2 are allowed (--max-runs raises the limit)"
    assert len(load_grid(path, max_runs=3).runs()) == 3  # exactly the limit is allowed
    with pytest.raises(GptlabError) as exc:
        load_grid(path, max_runs=1)
    assert str(exc.value) == (f"{path}: grid: 2 combinations x 1 seeds = 2 runs; at most 1 are allowed "
                              "(--max-runs raises the limit)")
    assert len(load_grid(write(tmp_path, ONE, "one.yaml"), max_runs=1).runs()) == 1


def test_missing_files_and_folders_say_what_is_shipped(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    hint = f"; shipped grids: {', '.join(shipped_grids())}"
    (tmp_path / "afolder").mkdir()
    for name, message in [("missing.yaml", "no such file" + hint), ("maskin", "no such file" + hint),
                          ("afolder", "is a folder, not a grid file" + hint), ("sub/x.yaml", "no such file")]:
        with pytest.raises(GptlabError) as exc:
            load_grid(name)
        assert str(exc.value) == f"{name}: {message}"


def test_where_a_grid_file_is_looked_for(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from pathlib import Path

    assert grid_path("x.yml") == Path("x.yml") and grid_path("x.yaml") == Path("x.yaml")  # a file name, as given
    assert grid_path("ablations/masking") == Path("ablations/masking")  # a path, as given
    shipped = grid_path("masking")
    assert shipped.is_file() and shipped.parent.name == "ablations" and shipped.is_absolute()
    (tmp_path / "ablations").mkdir()
    (tmp_path / "ablations" / "masking.yaml").write_text(ONE)
    assert grid_path("masking") == Path("ablations/masking.yaml")  # here before the project's
    (tmp_path / "masking").write_text(ONE)
    assert grid_path("masking") == Path("masking")  # a file of that name, as given


def test_a_grids_text_and_seeds_at_their_defaults_and_trimmed(tmp_path):
    grid = load_grid(write(tmp_path, ONE))
    assert (grid.title, grid.insight, grid.seeds, grid.metric, grid.source) == ("g", "", DEFAULT_SEEDS, "val_loss",
                                                                               str(tmp_path / "g.yaml"))
    spaced = load_grid(write(tmp_path, ONE + "title: '  A title '\ninsight: '  why  '\n", "s.yaml"))
    assert (spaced.title, spaced.insight) == ("A title", "why")
    blank = load_grid(write(tmp_path, ONE + "insight: '   '\n", "b.yaml"))
    assert blank.insight == ""


def test_seeds_past_the_files_list_count_on_from_its_largest():
    assert select_seeds([5, 3], None) == [5, 3] and select_seeds([5, 3], 1) == [5]
    assert select_seeds([5, 3], 4) == [5, 3, 6, 7] and select_seeds([5, 3], 2) == [5, 3]


def test_a_scale_replaces_seeds_claims_title_and_insight_and_lays_set_and_grid_over(tmp_path):
    path = write(tmp_path, BASE + "title: T\ninsight: I\nset: {train.max_iters: 10, train.lr: 0.5}\n"
                 "grid: {model.n_layer: [1, 2], train.batch_size: [4]}\nseeds: [1]\n"
                 "claims: [{variant: 'n_layer=2, batch_size=4', is: better}]\n"
                 "scales:\n  small:\n    title: S\n    insight: J\n    set: {train.max_iters: 20}\n"
                 "    grid: {model.n_layer: [3]}\n    seeds: [7, 8]\n    claims: []\n")
    small = load_grid(path, scale="small")
    assert (small.name, small.title, small.insight, small.seeds, small.claims) == ("g-small", "S", "J", [7, 8], [])
    assert small.set == {"train.max_iters": 20, "train.lr": 0.5}
    assert [v.overrides for v in small.variants] == [{"model.n_layer": 3, "train.batch_size": 4}]
    assert small.scales == ["cpu", "full", "small"] and small.scale == "small"
    plain = load_grid(path)
    assert (plain.name, plain.title, plain.seeds, plain.scale) == ("g", "T", [1], "cpu")
    assert plain.claims == [Claim("n_layer=2, batch_size=4", kind="better")]
    full = load_grid(path, scale="full")
    assert full.set == {"train.lr": 0.5, **FULL_SCALE["set"]} and full.preset == "full"


# -- grid.json ----------------------------------------------------------------------------------------------

MANIFEST = {"name": "g", "variants": [{"name": "a"}, {"name": "b", "preset": "lecture",
                                                       "overrides": {"model.n_layer": 1}}],
            "seeds": [1], "baseline": "a", "preset": "bigram"}


DESIGN = {"first": 2, "step": 2, "max_seeds": 6}


def test_a_manifests_missing_keys_take_their_defaults():
    assert Grid.from_manifest(MANIFEST, "grid.json") == Grid(
        name="g", title="g", insight="", preset="bigram", set={},
        variants=[Variant("a", "bigram", {}), Variant("b", "lecture", {"model.n_layer": 1})], seeds=[1],
        baseline="a", metric="val_loss", source="", scale="cpu", scales=["cpu"], claims=[])


def test_a_full_manifest_round_trips(tmp_path):
    path = write(tmp_path, BASE + "title: T\ninsight: I\nset: {train.max_iters: 10}\ngrid: {train.lr: [0.1, 0.2]}\n"
                 "seeds: [3, 4]\nbaseline: lr=0.2\nclaims: [{variant: lr=0.1, is: worse, note: n}]\n"
                 "scales: {small: {seeds: [9]}}\n")
    for grid in (load_grid(path), load_grid(path, scale="small")):
        assert Grid.from_manifest(grid.manifest(), "grid.json") == grid


@pytest.mark.parametrize("change, message", [
    ([1], "must be a JSON object written by `gptlab ablate`"),
    ({"name": "g", "seeds": [1]}, "lacks variants, baseline, preset; rerun `gptlab ablate` for this grid"),
    ({"variants": []}, "variants: must be a non-empty list"),
    ({"preset": "huge"}, "preset: 'huge' is not allowed; choose one of: bigram, lecture, cpu, full"),
    ({"variants": ["a"]}, "variants[0]: 'a' is not allowed; expected a mapping with keys name, preset, set"),
    ({"variants": [{"name": "a", "preset": "huge"}]},
     "variants[0].preset: 'huge' is not allowed; choose one of: bigram, lecture, cpu, full"),
    ({"variants": [{"name": "a"}, {"name": "a"}]},
     "variants: duplicate variant name 'a'; every variant needs its own name"),
    ({"baseline": "z"}, "baseline: 'z' matches no variant"),
    ({"scales": "cpu"}, "scales: 'cpu' is not a list of scale names"),
    ({"scales": ["cpu", 1]}, "scales: ['cpu', 1] is not a list of scale names"),
    ({"name": "a b"}, "name: 'a b' is not allowed; use letters, digits, '_', '-' or '.' (it names a folder)"),
    ({"title": ""}, "title: '' is not allowed; expected a non-empty string"),
    ({"insight": 3}, "insight: 3 is not allowed; expected a non-empty string"),
    ({"metric": "acc"}, "metric: 'acc' is not allowed; choose one of: val_loss"),
    ({"scale": ""}, "scale: '' is not allowed; expected a non-empty string"),
    ({"set": [1]}, "set: must be a mapping of dotted config keys to values, got [1]"),
    ({"claims": [{"variant": "zz", "is": "worse"}]}, "claims[0].variant: 'zz' matches no variant; choose one of: a; b"),
    ({"plugins": "p.py"}, "plugins: 'p.py' is not allowed; expected a list of .py files"),
    ({"plugins": [" "]}, "plugins: [' '] is not allowed; expected a list of .py files"),
    ({"plugins": [3]}, "plugins: [3] is not allowed; expected a list of .py files"),
    ({"until_settled": {"first": 2}},
     "until_settled: {'first': 2} is not a design of looks; expected {first, step, max_seeds} integers"),
    ({"until_settled": {"first": 2, "step": 2, "max_seeds": 1}},
     "until_settled: --max-seeds = 1 is not allowed; must be at least the grid's 2 seeds"),
    ({"until_settled": {**DESIGN, "seed_counts": [2]}},
     "until_settled.seed_counts: [2] is not allowed; expected variant -> seeds, at most 6"),
    ({"until_settled": {**DESIGN, "seed_counts": {"a": 7}}},
     "until_settled.seed_counts: {'a': 7} is not allowed; expected variant -> seeds, at most 6"),
    ({"until_settled": {**DESIGN, "seed_counts": {"zz": 4}}},
     "until_settled.seed_counts: {'zz': 4} is not allowed; expected variant -> seeds, at most 6"),
    ({"until_settled": {**DESIGN, "seed_counts": {"a": "4"}}},
     "until_settled.seed_counts: {'a': '4'} is not allowed; expected variant -> seeds, at most 6"),
])
def test_each_bad_manifest_has_its_exact_message(change, message):
    raw = change if not isinstance(change, dict) or "seeds" in change else {**MANIFEST, **change}
    with pytest.raises(GptlabError) as exc:
        Grid.from_manifest(raw, "grid.json")
    assert str(exc.value) == f"grid.json: {message}"


def test_a_grid_whose_variants_collapse_into_one_config_is_refused(tmp_path):
    path = write(tmp_path, BASE + "grid: {train.lr: [0.1, 0.2]}\n")
    with pytest.raises(GptlabError) as exc:
        check_grid(load_grid(path, {"train.lr": "0.3"}))
    assert str(exc.value) == (f"{path}: variant 'lr=0.2': has the same config as 'lr=0.1'; variants must differ "
                              "(check --set against the grid)")
    unnamed = load_grid(path)
    unnamed.source = ""
    unnamed.variants[1] = Variant("lr=0.2", "bigram", {"model.n_layer": 0})
    with pytest.raises(GptlabError) as exc:
        check_grid(unnamed)
    assert str(exc.value) == "g: variant 'lr=0.2': model.n_layer = 0 is not allowed; must be > 0"


@pytest.mark.parametrize("text, message", [
    (BASE + "grid: {train.lr: [0.1, 0.2], model.n_layer: [1, 2]}\nbaseline: {train.lr: 0.3, model.n_layer: 1}\n",
     "baseline: train.lr=0.3, model.n_layer=1 matches no variant; it must match exactly one of: lr=0.1, n_layer=1; "
     "lr=0.1, n_layer=2; lr=0.2, n_layer=1; lr=0.2, n_layer=2"),
    ("? [1, 2]\n: x\nname: g\nname: h\n", "not valid YAML: duplicate key 'name' at line 4; each key may appear once"),
    ("preset: bigram\ngrid: {train.lr: [0.1]}\n", "name: None is not allowed; expected a non-empty string"),
    (ONE + "baseline: {model.nrm: 1}\n",
     "baseline.model.nrm: unknown config key 'model.nrm' (did you mean 'model.norm'?)"),
])
def test_more_bad_grid_files_and_their_exact_messages(tmp_path, text, message):
    refused_with(tmp_path, text, message)


def test_an_alias_of_a_scalar_and_seed_0_are_fine(tmp_path):
    grid = load_grid(write(tmp_path, ONE + "title: &t Demo\ninsight: *t\nseeds: [0]\n"))
    assert (grid.title, grid.insight, grid.seeds) == ("Demo", "Demo", [0])


def test_a_path_or_a_file_name_is_taken_as_given_never_looked_up(tmp_path, monkeypatch):
    from pathlib import Path

    monkeypatch.chdir(tmp_path)
    (tmp_path / "ablations" / "sub").mkdir(parents=True)
    for name in ("q.yml.yaml", "q.yaml.yaml", "sub/m.yaml"):
        (tmp_path / "ablations" / name).write_text(ONE)
    assert grid_path("q.yml") == Path("q.yml") and grid_path("q.yaml") == Path("q.yaml")
    assert grid_path("sub/m") == Path("sub/m")


def test_runs_are_counted_over_seeds(tmp_path):
    path = write(tmp_path, BASE + "variants: [{name: x}, {name: y}, {name: z}]\nseeds: [1, 2]\n")
    with pytest.raises(GptlabError) as exc:
        load_grid(path, max_runs=5)
    assert str(exc.value) == f"{path}: 6 runs; at most 5 are allowed (--max-runs raises the limit)"


def test_a_grid_of_different_configs_passes_the_check(tmp_path):
    assert check_grid(load_grid(write(tmp_path, BASE + "grid: {train.lr: [0.1, 0.2]}\n"))) is None


def test_a_grids_plugins_and_looks_round_trip_through_its_manifest(tmp_path, monkeypatch):
    from gptlab.learner import PLUGINS_ENV
    from gptlab.sequential import Design

    monkeypatch.setattr("gptlab.learner.LOADED", {})
    monkeypatch.delenv(PLUGINS_ENV, raising=False)
    plugin = tmp_path / "registers_nothing.py"
    plugin.write_text("HERE = True\n")
    grid = Grid.from_manifest({**MANIFEST, "plugins": [str(plugin)],
                               "until_settled": {**DESIGN, "seed_counts": {"a": 4}}}, "grid.json")
    assert grid.plugins == [str(plugin)] and grid.design == Design(2, 2, 6) and grid.seed_counts == {"a": 4}
    manifest = grid.manifest()
    assert manifest["plugins"] == [str(plugin)]
    assert manifest["until_settled"] == {**DESIGN, "seed_counts": {"a": 4}}
    assert Grid.from_manifest(manifest, "grid.json") == grid
    assert "plugins" not in Grid.from_manifest(MANIFEST, "grid.json").manifest()
    assert grid.seeds_of("a") == [1, 2, 3, 4] and grid.seeds_of("b") == [1]


def test_a_grid_files_plugins_are_found_beside_it_and_a_missing_one_is_named(tmp_path, monkeypatch):
    from gptlab.learner import PLUGINS_ENV

    monkeypatch.setattr("gptlab.learner.LOADED", {})
    monkeypatch.delenv(PLUGINS_ENV, raising=False)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "mine.py").write_text("HERE = True\n")
    monkeypatch.chdir(tmp_path)
    grid = load_grid(write(tmp_path / "sub", ONE + "plugins: [mine.py]\n"))
    assert grid.plugins == [str(tmp_path / "sub" / "mine.py")]
    refused_with(tmp_path, ONE + "plugins: [mine.py]\n", "plugins[0]: --plugin 'mine.py': no such file")


def test_a_grid_files_model_file_is_found_beside_it_first(tmp_path, monkeypatch):
    from pathlib import Path

    example = (Path(__file__).parent.parent / "examples" / "my_gpt.py").read_text()
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "mine.py").write_text(example)
    monkeypatch.chdir(tmp_path)
    grid = load_grid(write(tmp_path / "sub", BASE + "grid: {model.arch: [gpt, mine.py, 'mine.py:TinyGPT']}\n"))
    assert [v.overrides["model.arch"] for v in grid.variants] == ["gpt", "sub/mine.py", "sub/mine.py:TinyGPT"]
    refused_with(tmp_path, BASE + "grid: {model.arch: [gpt, mine.py]}\n",
                 f"grid.model.arch[1]: model.arch = 'mine.py': no such file (a path is relative to the grid file's "
                 f"folder, else to the working folder: {tmp_path})")
