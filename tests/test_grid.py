import pytest

from gptlab.config import preset
from gptlab.errors import GptlabError
from gptlab.grid import FULL_SCALE, Grid, axis_labels, check_grid, format_value, grid_path, load_grid, select_seeds

GRID = """
name: demo
title: Demo grid
insight: Residuals matter.
preset: lecture
set:
  train.max_iters: 300
grid:
  model.residual: [true, false]
  model.n_layer: [3, 6]
variants:
  - name: bigram
    preset: bigram
  - name: one head
    set: {model.n_head: 1, train.max_iters: 100}
seeds: [1337, 1338]
baseline: {model.residual: true, model.n_layer: 3}
"""


def write(tmp_path, text, name="grid.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture
def demo(tmp_path):
    return write(tmp_path, GRID)


def test_product_and_named_variants_times_seeds(demo):
    grid = load_grid(demo)
    names = [v.name for v in grid.variants]
    assert names == ["residual=true, n_layer=3", "residual=true, n_layer=6", "residual=false, n_layer=3",
                     "residual=false, n_layer=6", "bigram", "one head"]
    assert grid.variants[2].overrides == {"model.residual": False, "model.n_layer": 3}
    runs = grid.runs()
    assert [(r.variant, r.seed) for r in runs[:2]] == [(names[0], 1337), (names[0], 1338)]
    assert len(runs) == 12 and len({r.key for r in runs}) == 12
    assert all(r.key == r.config.key() and r.config.train.seed == r.seed for r in runs)


def test_layers_preset_then_set_then_variant(demo):
    grid = load_grid(demo)
    by_name = {r.variant: r.config for r in grid.runs()}
    assert by_name["bigram"].model.arch == "bigram" and by_name["bigram"].train.lr == preset("bigram").train.lr
    assert by_name["bigram"].train.max_iters == 300
    assert by_name["one head"].model.n_head == 1 and by_name["one head"].train.max_iters == 100
    assert by_name["residual=false, n_layer=6"].model.residual is False


def test_command_line_set_overrides_the_file_everywhere(demo):
    grid = load_grid(demo, {"train.max_iters": "50", "model.n_embd": "64"}, device="cpu")
    configs = [r.config for r in grid.runs()]
    assert {c.train.max_iters for c in configs} == {50}
    assert {c.model.n_embd for c in configs} == {64}
    assert {c.train.device for c in configs} == {"cpu"}
    assert grid.set == {"train.max_iters": 50, "model.n_embd": 64, "train.device": "cpu"}
    assert grid.variants[-1].overrides == {"model.n_head": 1}


def test_keys_are_stable_and_follow_the_config(demo):
    keys = [r.key for r in load_grid(demo).runs()]
    assert keys == [r.key for r in load_grid(demo).runs()]
    changed = {r.key for r in load_grid(demo, {"train.lr": "3e-4"}).runs()}
    assert not changed & set(keys)


def test_manifest_round_trip_gives_the_same_runs(demo):
    grid = load_grid(demo)
    again = Grid.from_manifest(grid.manifest(), "grid.json")
    assert [r.key for r in again.runs()] == [r.key for r in grid.runs()]
    assert again == grid
    assert grid.manifest()["variants"][4] == {"name": "bigram", "preset": "bigram", "overrides": {}}


def test_baseline_by_dict_by_name_and_default(tmp_path, demo):
    assert load_grid(demo).baseline == "residual=true, n_layer=3"
    named = write(tmp_path, GRID.replace("baseline: {model.residual: true, model.n_layer: 3}", "baseline: bigram"))
    assert load_grid(named).baseline == "bigram"
    default = write(tmp_path, GRID.replace("baseline: {model.residual: true, model.n_layer: 3}", ""))
    assert load_grid(default).baseline == "residual=true, n_layer=3"


def test_seeds_option_takes_the_first_or_counts_on(demo):
    assert load_grid(demo, seeds=1).seeds == [1337]
    assert load_grid(demo, seeds=4).seeds == [1337, 1338, 1339, 1340]
    assert select_seeds([5, 9], 3) == [5, 9, 10]
    with pytest.raises(GptlabError, match="--seeds = 0"):
        select_seeds([1], 0)


def test_axis_labels_keep_the_section_only_when_ambiguous():
    assert axis_labels(["model.n_layer", "train.lr"]) == {"model.n_layer": "n_layer", "train.lr": "lr"}
    assert axis_labels(["a.x", "b.x", "a.y"]) == {"a.x": "a.x", "b.x": "b.x", "a.y": "y"}
    assert [format_value(v) for v in (True, 0.0003, 6, "none")] == ["true", "0.0003", "6", "none"]


BASE = "name: x\ngrid: {model.n_layer: [1, 2]}\n"


@pytest.mark.parametrize(
    "text, message",
    [
        ("name: x\ngrid: {model.norm: [layernorm, lyernorm]}\n",
         "grid.model.norm[1]: model.norm = 'lyernorm' is not allowed (did you mean 'layernorm'?); choose one of: "
         "layernorm, batchnorm, rmsnorm, none"),
        ("name: x\ngrid: {model.nrom: [a]}\n", "grid.model.nrom[0]: unknown config key 'model.nrom' (did you mean 'model.norm'?)"),
        ("name: x\ngrid: {model.n_layer: 3}\n", "grid.model.n_layer: 3 is not allowed; expected a non-empty list"),
        ("name: x\ngrid: {model.n_layer: []}\n", "grid.model.n_layer: [] is not allowed; expected a non-empty list"),
        ("name: x\ngrid: {}\n", "grid: must be a mapping of dotted config keys to non-empty lists"),
        ("name: x\n", "no variants; give a `grid` mapping of lists and/or a `variants` list"),
        ("name: x\nvariants: [{name: a}, {name: a, set: {model.n_layer: 2}}]\n", "variants: duplicate variant name 'a'"),
        ("name: x\nvariants: [{name: a, sett: {}}]\n", "variants[0].sett: unknown variant key; allowed: name, preset, set"),
        ("name: x\nvariants: [{set: {}}]\n", "variants[0].name: None is not allowed; expected a non-empty string"),
        ("name: x\nvariants: [{name: a, preset: huge}]\n", "variants[0].preset: 'huge' is not allowed; choose one of:"),
        (BASE + "baseline: {model.n_layer: 5}\n", "baseline: model.n_layer=5 matches no variant; it must match exactly"),
        ("name: x\ngrid: {model.n_layer: [1, 2], model.n_head: [1, 2]}\nbaseline: {model.n_layer: 1}\n",
         "baseline: model.n_layer=1 matches 2 variants (n_layer=1, n_head=1; n_layer=1, n_head=2)"),
        (BASE + "baseline: nope\n", "baseline: 'nope' matches no variant; choose one of: n_layer=1; n_layer=2"),
        (BASE + "nmae: y\n", "nmae: unknown grid key; allowed: name, title, insight, preset, set, grid"),
        (BASE + "seeds: 3\n", "seeds: 3 is not allowed; expected a non-empty list of integers"),
        (BASE + "seeds: [1, 1]\n", "seeds: [1, 1] repeats a seed"),
        (BASE + "metric: accuracy\n", "metric: 'accuracy' is not allowed; choose one of: val_loss"),
        (BASE + "preset: huge\n", "preset: 'huge' is not allowed; choose one of: bigram, lecture, cpu, full"),
        (BASE + "set: {train.seed: 3}\n", "set.train.seed: the seed is set by `seeds`"),
        (BASE + "set: [1]\n", "set: must be a mapping of dotted config keys to values"),
        (BASE.replace("name: x", "name: ../up"), "name: '../up' is not allowed; use letters, digits"),
        ("name: x\ngrid: {model.n_layer: [1, 2]\n", "not valid YAML at line 3"),
        ("- just\n- a list\n", "must be a mapping of grid keys"),
    ],
)
def test_each_bad_grid_is_one_line_naming_file_and_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(GptlabError) as err:
        check_grid(load_grid(path))
    assert str(err.value).startswith(f"{path}: ")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_command_line_errors_name_the_option(tmp_path):
    path = write(tmp_path, BASE)
    with pytest.raises(GptlabError, match=r"--set model.nrm: unknown config key"):
        load_grid(path, {"model.nrm": "1"})
    with pytest.raises(GptlabError, match=r"--device: train.device = 'tpu' is not allowed"):
        load_grid(path, device="tpu")
    with pytest.raises(GptlabError, match=r"variant 'n_layer=2': has the same config as 'n_layer=1'"):
        check_grid(load_grid(path, {"model.n_layer": "3"}))
    with pytest.raises(GptlabError, match=r"variant 'n_head=3': model.n_head = 3 must divide model.n_embd = 32"):
        check_grid(load_grid(write(tmp_path, "name: x\ngrid: {model.n_head: [3]}\n")))
    with pytest.raises(GptlabError, match="no such file"):
        load_grid(tmp_path / "missing.yaml")


def test_only_safe_yaml_is_read(tmp_path):
    path = write(tmp_path, "name: !!python/object/apply:os.system ['echo hacked']\ngrid: {model.n_layer: [1]}\n")
    with pytest.raises(GptlabError, match="not valid YAML"):
        load_grid(path)


def test_safe_yaml_refuses_duplicate_keys_and_nested_aliases(tmp_path):
    with pytest.raises(GptlabError, match="duplicate key 'name' at line 2"):
        load_grid(write(tmp_path, "name: x\nname: y\ngrid: {model.n_layer: [1]}\n"))
    bomb = "a: &a [1, 2, 3]\nb: &b [*a, *a, *a]\nc: &c [*b, *b, *b]\n"
    with pytest.raises(GptlabError, match=r"the alias \*b refers to a nested mapping or list"):
        load_grid(write(tmp_path, "name: x\n" + bomb.replace("a: ", "title: ", 1)))
    flat = load_grid(write(tmp_path, "name: x\nseeds: &s [1, 2]\ngrid: {model.n_layer: [1]}\nset: {}\n"))
    assert flat.seeds == [1, 2]  # an anchor on a flat list is fine


def test_a_huge_product_is_refused_before_it_is_expanded(tmp_path):
    axes = ", ".join(f"model.{k}: [{', '.join(str(v) for v in range(1, 11))}]"
                     for k in ("n_layer", "n_head", "block_size", "ffn_mult", "n_embd", "eval_windows"))
    path = write(tmp_path, f"name: x\ngrid: {{{axes.replace('model.eval_windows', 'train.eval_windows')}}}\n")
    with pytest.raises(GptlabError, match="grid: 1,000,000 combinations x 1 seeds = 1,000,000 runs; at most 1,000"):
        load_grid(path)
    with pytest.raises(GptlabError, match="grid: 2 combinations x 6 seeds = 12 runs; at most 10 are allowed"):
        load_grid(write(tmp_path, BASE + "seeds: [1, 2, 3, 4, 5, 6]\n"), max_runs=10)


def test_a_shipped_grid_is_found_by_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert grid_path("masking").name == "masking.yaml" and grid_path("masking").is_file()
    assert load_grid("masking").name == "masking"
    with pytest.raises(GptlabError, match="no such file; shipped grids: heads, lecture, masking"):
        load_grid("maskin")


SCALED = BASE + """
set: {train.max_iters: 100}
seeds: [1, 2]
claims:
  - {variant: "n_layer=2", is: better}
scales:
  full:
    preset: cpu
    set: {train.max_iters: 300}
    grid: {model.n_layer: [4, 8]}
    seeds: [1, 2, 3]
    claims: [{variant: "n_layer=8", is: better, than: "n_layer=4"}]
  broken:
    grid: {model.n_layer: [4, 8]}
"""


def test_a_scale_lays_its_keys_over_the_file(tmp_path):
    path = write(tmp_path, SCALED)
    small, full = load_grid(path), load_grid(path, scale="full")
    assert (small.name, small.scale, small.scales) == ("x", "cpu", ["cpu", "full", "broken"])
    assert (full.name, full.scale, full.preset, full.seeds) == ("x-full", "full", "cpu", [1, 2, 3])
    assert [v.name for v in full.variants] == ["n_layer=4", "n_layer=8"]
    assert full.set == {**FULL_SCALE["set"], "train.max_iters": 300} and full.runs()[0].config.model.n_embd == 128
    default_full = load_grid(write(tmp_path, BASE, "plain.yaml"), scale="full")  # every file has the full scale
    assert (default_full.preset, default_full.seeds, default_full.set) == (
        "full", FULL_SCALE["seeds"], FULL_SCALE["set"])
    assert default_full.runs()[0].config.train.lr == 1e-3 and default_full.runs()[0].config.model.n_embd == 384
    assert [c.than for c in full.claims] == ["n_layer=4"] and [c.variant for c in small.claims] == ["n_layer=2"]
    with pytest.raises(GptlabError, match="claims\\[0\\].variant: 'n_layer=2' matches no variant"):
        load_grid(path, scale="broken")  # the file's claims name variants this scale does not have
    with pytest.raises(GptlabError, match="--scale = 'huge' is not allowed; choose one of: cpu, full, broken"):
        load_grid(path, scale="huge")


def test_a_manifest_with_wrong_types_is_one_line(demo):
    manifest = load_grid(demo).manifest()
    for key, value, message in [("variants", 5, "variants: must be a non-empty list"),
                                ("seeds", ["a"], "seeds: ['a'] is not allowed"),
                                ("baseline", 3, "baseline: 3 matches no variant"),
                                ("set", {"model.n_layer": "x"}, "set.model.n_layer: model.n_layer = 'x'")]:
        with pytest.raises(GptlabError) as err:
            Grid.from_manifest({**manifest, key: value}, "grid.json")
        assert str(err.value).startswith("grid.json: ") and message in str(err.value)
    with pytest.raises(GptlabError, match="grid.json: lacks variants"):
        Grid.from_manifest({k: v for k, v in manifest.items() if k != "variants"}, "grid.json")
