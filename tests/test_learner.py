"""Reading a learner's file (gptlab/learner.py): which statements run, how the model class is chosen and sized,
where its path is found, what its run key holds, and plugins."""

import ast
import os
import textwrap
from pathlib import Path

import pytest

from gptlab import learner as L
from gptlab.errors import GptlabError
from tests.conftest import ROOT

EXAMPLE = Path(ROOT) / "examples" / "my_gpt.py"


@pytest.mark.parametrize("arch, model_file, split", [
    ("gpt", False, ("gpt", None)),
    ("my.py", True, ("my.py", None)),
    ("dir/my.py:GPT", True, ("dir/my.py", "GPT")),
    ("my.pyc", False, ("my.pyc", None)),
    ("a.py.bak", False, ("a.py.bak", None)),
])
def test_a_file_arch_and_its_class(arch, model_file, split):
    assert L.is_model_file(arch) is model_file
    assert L.split_arch(arch) == split


def statements(source: str) -> list[bool]:
    return [L.kept(node) for node in ast.parse(textwrap.dedent(source)).body]


def test_only_imports_definitions_and_constants_run():
    assert statements("""
        import torch
        from torch import nn
        n_embd = 32
        head = n_embd // 4 + (2 ** 3) - -1
        sizes = (1, [2], {3: 4}, {5})
        flag = n_embd > 3 and not False
        x: int = 3
        y: int
        def f(): pass
        async def g(): pass
        class C: pass
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
        text = open('input.txt').read()
        vocab = len(chars)
        first = chars[0]
        dtype = torch.float32
        model = C()
        a, b = 1, 2
        a.b = 3
        torch.manual_seed(1337)
        exit()
        for i in range(3): pass
        with open('x') as f: pass
        if __name__ == '__main__': pass
        if True: n = 1
        try:
            import x
        except ImportError:
            pass
    """) == [True] * 7 + [False] + [True] * 3 + [False] * 15


def test_assigned_names():
    one, two, ann, call = ast.parse("a = b = 1\nc, d = 1, 2\ne: int = 3\nf()\n").body
    assert L.assigned_names(one) == ["a", "b"] and L.assigned_names(two) == []
    assert L.assigned_names(ann) == ["e"] and L.assigned_names(call) == []


def test_the_scripts_classes_it_builds_in_order(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("model = GPT()\nm = model.to(device)\nother = Bigram(65)\nx = 3\nopt = torch.optim.AdamW()\n")
    assert L.ModelFile.read(path).instantiated() == ["GPT", "Bigram"]


def test_execute_sets_the_sizes_and_skips_what_assigns_them(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("n_embed = 999\nother = 5\nderived = n_embed * 2\nunused_name = 1\ndevice = 'cuda'\n")
    module = L.ModelFile.read(path).execute(L.sizes_of(L_cfg(), "cpu"))
    assert (module.n_embed, module.other, module.derived, module.device) == (32, 5, 64, "cpu")
    assert not hasattr(module, "n_embd")  # only the spellings the file uses are set
    assert module.__file__ == str(path) and module.__name__.startswith("gptlab_learner_m_")


def L_cfg():
    from gptlab.config import preset

    return preset("lecture").model


def test_future_annotations_apply_to_the_files_definitions(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("from __future__ import annotations\ndef f(x: Undefined) -> Missing:\n    return x\n")
    module = L.ModelFile.read(path).execute(L.sizes_of(L_cfg()))
    assert module.f.__annotations__ == {"x": "Undefined", "return": "Missing"}


def test_a_constant_from_a_skipped_value_stays_undefined(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("chars = sorted(set(text))\nhalf = undefined_name // 2\nkept = 3\n")
    module = L.ModelFile.read(path).execute(L.sizes_of(L_cfg()))
    assert not hasattr(module, "half") and module.kept == 3


def test_sizes_of_a_model_config():
    cfg = L_cfg()
    assert L.sizes_of(cfg, "cuda") == {"vocab_size": 65, "block_size": 8, "n_embd": 32, "n_head": 4, "n_layer": 3,
                                       "dropout": 0.0, "device": "cuda", "head_size": 8}
    assert set(L.SIZE_NAMES) == set(L.sizes_of(cfg))
    assert all(L.CANONICAL[alias] == name for name, aliases in L.SIZE_NAMES.items() for alias in aliases)


def test_the_key_holds_the_content_hash_and_class(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("x = 1\n")
    plain, named = L.fingerprint(str(path)), L.fingerprint(f"{path}:GPT")
    assert plain.startswith("sha256:") and plain.endswith(":") and named.endswith(":GPT")
    assert plain.split(":")[1] == named.split(":")[1] and len(plain.split(":")[1]) == 16


def test_resolve_arch_finds_the_file_beside_the_grid_first(tmp_path, monkeypatch):
    (tmp_path / "grids").mkdir()
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "m.py").write_text("x = 1\n")
    (tmp_path / "m.py").write_text("x = 2\n")
    monkeypatch.chdir(tmp_path)
    assert L.resolve_arch("../models/m.py", tmp_path / "grids") == os.path.join("models", "m.py")
    assert L.resolve_arch("../models/m.py:GPT", tmp_path / "grids") == os.path.join("models", "m.py") + ":GPT"
    assert L.resolve_arch("m.py", tmp_path / "grids") == "m.py"  # not beside the grid: the working folder
    assert L.resolve_arch("none.py", tmp_path / "grids") == "none.py"  # missing: left for validation to name
    absolute = str(tmp_path / "models" / "m.py")
    assert L.resolve_arch(absolute, tmp_path / "grids") == absolute


def test_file_path_names_the_field_and_where_paths_are_found(tmp_path):
    with pytest.raises(GptlabError, match=r"model.arch = 'x.py': no such file \(a path is relative to the grid"):
        L.file_path("x.py")
    with pytest.raises(GptlabError, match=r"^FILE = 'x.py': no such file$"):
        L.file_path("x.py", "FILE")
    with pytest.raises(GptlabError, match="no such file"):
        L.file_path(str(tmp_path))  # a folder
    assert L.file_path(f"{EXAMPLE}:TinyGPT") == EXAMPLE


def test_registers_variants_tells_a_plugin_from_a_model_file():
    assert L.registers_variants(Path(ROOT) / "examples" / "scalenorm_plugin.py")
    assert not L.registers_variants(EXAMPLE)


def test_a_plugin_that_fails_to_import_is_one_line_and_registers_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(L, "LOADED", {})
    monkeypatch.delenv(L.PLUGINS_ENV, raising=False)
    path = tmp_path / "bad.py"
    path.write_text("raise ValueError('broken plugin')\n")
    with pytest.raises(GptlabError, match="importing it fails: ValueError: broken plugin"):
        L.load_plugin(path)
    assert L.PLUGINS_ENV not in os.environ and str(path) not in L.LOADED


def test_plugins_loaded_are_passed_to_worker_processes(tmp_path, monkeypatch):
    from gptlab.components import REGISTRIES

    monkeypatch.setattr(L, "LOADED", {})
    saved = dict(REGISTRIES["norm"]._entries)
    first, second = tmp_path / "a.py", tmp_path / "b.py"
    for path, name in ((first, "norm_a"), (second, "norm_b")):
        path.write_text(textwrap.dedent(f"""
            from torch import nn
            from gptlab.components import NORM

            @NORM.register("{name}", "a test norm")
            def build(cfg):
                return nn.Identity()
        """))
    monkeypatch.setenv(L.PLUGINS_ENV, "")
    try:
        assert L.load_plugin(first) == [("norm", "norm_a")]
        assert L.load_plugin(first) == [("norm", "norm_a")]  # once only: the same variants come back
        monkeypatch.setenv(L.PLUGINS_ENV, os.pathsep.join([os.environ[L.PLUGINS_ENV], str(second)]))
        L.load_plugins_from_env()
        assert {"norm_a", "norm_b"} <= set(REGISTRIES["norm"].names())
        assert os.environ[L.PLUGINS_ENV].split(os.pathsep)[:2] == [str(first.resolve()), str(second)]
    finally:
        REGISTRIES["norm"]._entries = saved
