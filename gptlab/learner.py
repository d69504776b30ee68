"""A learner's own model file, read the safe way: its definitions run, its script does not.

A file written after the lecture (``gpt.py``, ``bigram.py``) is a script: it reads ``input.txt``, trains and
samples at import. gptlab never imports it. It parses the file and executes only these top-level statements,
in order: imports, assignments of constants (literals and arithmetic on earlier constants, e.g.
``n_embd = 384`` or ``head_size = n_embd // n_head``), function and class definitions (their decorators and
class bodies run, as at any definition). Everything else is skipped: calls such as ``torch.manual_seed(1337)``
or ``exit()``, reading or downloading the data, loops, ``with`` blocks, ``if __name__ == "__main__":`` and every
other ``if``, and assignments that call anything (``text = open(...).read()``, ``model = GPT()``). The size
constants (``vocab_size``, ``block_size``, ``n_embd``, ``n_head``, ``n_layer``, ``dropout``, ``device`` and
their common spellings, ``SIZE_NAMES``) are set by gptlab from the run's config, whatever the file assigns.

The model is the ``nn.Module`` whose ``forward`` takes ``(idx, targets)``; it is built with no arguments (the
constants above), with keyword arguments named like the size fields (``vocab_size``, ``context_size``, ...), or
from a config object (a ``*Config`` class of the file, else a namespace holding every size name).

``model.arch = PATH.py`` (or ``PATH.py:CLASS``) trains such a file in ``gptlab train`` and in grids. A plugin
(``--plugin FILE``) is different: it registers variants with gptlab's registries, and is imported like any
module (all of it runs).
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import hashlib
import importlib.util
import inspect
import os
import signal
import sys
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from gptlab.errors import GptlabError, one_line

if TYPE_CHECKING:
    import torch
    from torch import nn

    from gptlab.config import ModelConfig

# gptlab's size field -> the names a learner's file may give it (module constants, constructor or config fields)
SIZE_NAMES: dict[str, tuple[str, ...]] = {
    "vocab_size": ("vocab_size", "n_vocab", "vocab", "num_tokens", "vocabulary_size"),
    "block_size": ("block_size", "context_size", "context_length", "context_len", "ctx_len", "seq_len",
                   "max_seq_len", "sequence_length", "max_len", "n_ctx", "n_positions"),
    "n_embd": ("n_embd", "n_embed", "n_embedding", "n_emb", "d_model", "embed_dim", "emb_dim", "embedding_dim",
               "embed_size", "hidden_size", "dim"),
    "n_head": ("n_head", "n_heads", "num_heads", "num_head", "nhead", "heads"),
    "n_layer": ("n_layer", "n_layers", "num_layers", "num_blocks", "n_blocks", "n_block", "depth"),
    "dropout": ("dropout", "dropout_rate", "dropout_p", "p_dropout", "drop_rate"),
    "device": ("device",),
    "head_size": ("head_size", "head_dim", "d_head"),  # n_embd // n_head
}
CANONICAL = {alias: name for name, aliases in SIZE_NAMES.items() for alias in aliases}
CONFIG_PARAMS = ("config", "cfg", "conf", "args", "hparams", "params", "opt", "options", "hp", "c")
TARGET_PARAMS = ("targets", "target", "y", "labels", "tgt", "ys")


def is_model_file(arch: str) -> bool:
    """``model.arch`` names a learner's file: ``PATH.py`` or ``PATH.py:CLASS``."""
    return arch.endswith(".py") or ".py:" in arch


def split_arch(arch: str) -> tuple[str, str | None]:
    """``"my_gpt.py:GPT"`` -> ``("my_gpt.py", "GPT")``; ``"my_gpt.py"`` -> ``("my_gpt.py", None)``."""
    path, sep, name = arch.rpartition(".py:")
    return (path + ".py", name or None) if sep else (arch, None)


def file_path(arch: str, field: str = "model.arch") -> Path:
    path = Path(split_arch(arch)[0]).expanduser()
    if path.is_dir() or not path.is_file():
        where = " (a path is relative to the grid file's folder, else to the working folder: {})".format(os.getcwd())
        raise GptlabError(f"{field} = {arch!r}: no such file{where if field == 'model.arch' else ''}")
    return path


def fingerprint(arch: str) -> str:
    """What a run's key holds for a learner's file: the hash of its content and the class chosen, not its path
    (an edited file trains anew, a moved one resumes)."""
    _, name = split_arch(arch)
    digest = hashlib.sha256(file_path(arch).read_bytes()).hexdigest()[:16]
    return f"sha256:{digest}:{name or ''}"


# -- reading the file ---------------------------------------------------------------------------------------

CONSTANT_NODES = (ast.Constant, ast.Name, ast.Load, ast.BinOp, ast.UnaryOp, ast.operator, ast.unaryop,
                  ast.Tuple, ast.List, ast.Set, ast.Dict, ast.BoolOp, ast.boolop, ast.Compare, ast.cmpop)


def is_constant(node: ast.expr) -> bool:
    """A literal, or arithmetic on literals and names: nothing is called, looked up or read."""
    return all(isinstance(child, CONSTANT_NODES) for child in ast.walk(node))


def assigned_names(node: ast.stmt) -> list[str]:
    targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
    return [t.id for t in targets if isinstance(t, ast.Name)]


def kept(node: ast.stmt) -> bool:
    """Whether a top-level statement runs: imports, definitions, constant assignments."""
    if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return True
    if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return all(isinstance(t, ast.Name) for t in targets) and is_constant(node.value)
    return False


@dataclasses.dataclass(frozen=True)
class ModelFile:
    path: Path
    tree: ast.Module

    @classmethod
    def read(cls, path: Path) -> ModelFile:
        try:
            source = path.read_text(encoding="utf-8")  # pragma: no mutate (UTF-8 is utf-8)
            return cls(path, ast.parse(source, filename=str(path)))
        except (UnicodeDecodeError, SyntaxError, ValueError) as err:
            raise GptlabError(f"{path}: cannot be read as Python: {one_line(err)}") from None

    def names_used(self) -> set[str]:
        return {node.id for node in ast.walk(self.tree) if isinstance(node, ast.Name)}

    def instantiated(self) -> list[str]:
        """Classes the script builds at the top level (``model = GPT()``), in order."""
        return [node.value.func.id for node in self.tree.body
                if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
                and isinstance(node.value.func, ast.Name)]

    def execute(self, sizes: dict[str, Any]) -> types.ModuleType:
        """A fresh module holding the file's definitions, with the size constants set from ``sizes``."""
        digest = hashlib.sha256(str(self.path.resolve()).encode()).hexdigest()[:8]
        module = types.ModuleType(f"gptlab_learner_{self.path.stem}_{digest}")
        module.__file__ = str(self.path)
        sys.modules[module.__name__] = module  # dataclasses and typing look their module up there
        used = self.names_used()
        module.__dict__.update({alias: sizes[CANONICAL[alias]] for alias in CANONICAL if alias in used})
        flags = 0
        for node in self.tree.body:
            if isinstance(node, ast.ImportFrom) and node.module == "__future__":
                flags |= sum(getattr(__import__("__future__"), alias.name).compiler_flag for alias in node.names)
        for node in self.tree.body:
            if not kept(node) or any(name in CANONICAL for name in assigned_names(node)):
                continue
            code = compile(ast.Module(body=[node], type_ignores=[]), str(self.path), "exec", flags=flags,
                           dont_inherit=True)
            try:
                exec(code, module.__dict__)  # a definition, an import or a constant: never the script's work
            except (ImportError, NameError) as err:
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    raise GptlabError(f"{self.path}:{node.lineno}: its import fails here: {one_line(err)}") from None
                # a constant built from a skipped value: left undefined, as the script's other work
        return module


def model_classes(module: types.ModuleType) -> list[type]:
    """The file's language models: ``nn.Module`` classes defined there whose ``forward`` takes ``(idx, targets)``."""
    from torch import nn

    found = []
    for value in vars(module).values():
        if isinstance(value, type) and issubclass(value, nn.Module) and value.__module__ == module.__name__:
            params = [p for p in inspect.signature(value.forward).parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)][1:]  # less self
            if len(params) >= 2 and params[1].name in TARGET_PARAMS:
                found.append(value)
    return found


def choose_class(model_file: ModelFile, module: types.ModuleType, requested: str | None) -> type:
    classes = model_classes(module)
    names = [c.__name__ for c in classes]
    found = f"found: {', '.join(names)}" if names else "found none"
    if requested is not None:
        if requested not in names:
            other = getattr(module, requested, None)
            why = "its forward does not take (idx, targets)" if isinstance(other, type) else "no such class"
            raise GptlabError(f"--model {requested!r} in {model_file.path}: {why}; language models (an nn.Module "
                              f"with forward(idx, targets)) {found}")
        return classes[names.index(requested)]
    if len(classes) == 1:
        return classes[0]
    built = [name for name in model_file.instantiated() if name in names]
    if classes and len(set(built)) == 1:
        return classes[names.index(built[0])]
    if not classes:
        raise GptlabError(f"{model_file.path}: no language model: gptlab looks for an nn.Module class whose "
                          f"forward takes (idx, targets) and returns (logits, loss); {found}")
    raise GptlabError(f"{model_file.path}: several language models ({', '.join(names)}); pick one with "
                      f"--model NAME (or PATH.py:NAME)")


def config_object(module: types.ModuleType, annotation: Any, sizes: dict[str, Any]) -> Any:
    """A config for a constructor that takes one: the file's ``*Config`` class filled with the sizes its fields
    name, else a namespace holding every size name."""
    values = {alias: sizes[name] for alias, name in CANONICAL.items()}
    named = getattr(module, annotation, None) if isinstance(annotation, str) else annotation
    classes = [named] + [v for k, v in vars(module).items() if isinstance(v, type)
                         and k.lower().endswith(("config", "args")) and v.__module__ == module.__name__]
    for cls in classes:
        if isinstance(cls, type) and dataclasses.is_dataclass(cls):
            fields = {f.name for f in dataclasses.fields(cls)}
            return cls(**{k: v for k, v in values.items() if k in fields})
    return types.SimpleNamespace(**values)


def construct(cls: type, module: types.ModuleType, sizes: dict[str, Any], where: Path) -> Any:
    kwargs: dict[str, Any] = {}
    for name, param in list(inspect.signature(cls).parameters.items()):
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if name in CANONICAL:
            kwargs[name] = sizes[CANONICAL[name]]
        elif name.lower() in CONFIG_PARAMS or (isinstance(param.annotation, (type, str))
                                               and str(getattr(param.annotation, "__name__", param.annotation))
                                               .lower().endswith("config")):
            kwargs[name] = config_object(module, param.annotation, sizes)
        elif param.default is param.empty:
            raise GptlabError(f"{where}: cannot size {cls.__name__}: its constructor needs {name!r}, which is none "
                              f"of the size names gptlab sets ({', '.join(n for n in SIZE_NAMES if n != 'head_size')}"
                              f" and their spellings, or a config object)")
    return cls(**kwargs)


def sizes_of(cfg: ModelConfig, device: str = "cpu") -> dict[str, Any]:
    return {"vocab_size": cfg.vocab_size, "block_size": cfg.block_size, "n_embd": cfg.n_embd,
            "n_head": cfg.n_head, "n_layer": cfg.n_layer, "dropout": cfg.dropout, "device": device,
            "head_size": cfg.n_embd // cfg.n_head}


def build_module(cfg: ModelConfig, device: str = "cpu") -> nn.Module:
    """The learner's model of ``cfg.model.arch``, sized by ``cfg``, its script body not run."""
    path = file_path(cfg.arch)
    model_file = ModelFile.read(path)
    sizes = sizes_of(cfg, device)
    module = model_file.execute(sizes)
    cls = choose_class(model_file, module, split_arch(cfg.arch)[1])
    try:
        return construct(cls, module, sizes, path)
    except GptlabError:
        raise
    except Exception as err:  # the learner's constructor failed: one line, naming the class
        raise GptlabError(f"{path}: {cls.__name__}(...) fails at these sizes (n_embd {cfg.n_embd}, n_head "
                          f"{cfg.n_head}, n_layer {cfg.n_layer}, block_size {cfg.block_size}): {one_line(err)}") from err


def resolve_arch(arch: str, base: Path) -> str:
    """A learner file's path as a run records it: found relative to ``base`` (the grid file's folder) first,
    else to the working folder; written relative to the working folder where it can be."""
    path, name = split_arch(arch)
    candidate = Path(path).expanduser()
    if not candidate.is_absolute() and (base / candidate).is_file():
        candidate = base / candidate
    if not candidate.is_file():
        return arch  # validation names the missing file
    resolved = Path(os.path.relpath(candidate.resolve())) if not Path(path).is_absolute() else candidate
    return f"{resolved}:{name}" if name else str(resolved)


# -- plugins -------------------------------------------------------------------------------------------------

PLUGINS_ENV = "GPTLAB_PLUGINS"  # the plugins loaded in this process, for the worker processes it starts
LOADED: dict[str, list[tuple[str, str]]] = {}  # plugin file -> the (field, name) of each variant it registered


def load_plugin(path: str | Path) -> list[tuple[str, str]]:
    """Import a plugin file (all of it runs, like any import); returns the (field, name) of each variant it
    registers. A file loaded already is not run again: the same variants come back."""
    from gptlab.components import REGISTRIES

    file = Path(path).expanduser().resolve()
    if file.is_dir() or not file.is_file():
        raise GptlabError(f"--plugin {str(path)!r}: no such file")
    if str(file) in LOADED:
        return LOADED[str(file)]
    name = f"gptlab_plugin_{hashlib.sha256(str(file).encode()).hexdigest()[:8]}"
    before = {field: set(r.names()) for field, r in REGISTRIES.items()}
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise GptlabError(f"--plugin {str(path)!r}: not a Python file (a plugin is imported: PATH.py)")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        del sys.modules[name]
        raise GptlabError(f"--plugin {str(path)!r}: importing it fails: {one_line(err)}") from err
    loaded = [p for p in os.environ.get(PLUGINS_ENV, "").split(os.pathsep) if p]
    os.environ[PLUGINS_ENV] = os.pathsep.join([*loaded, str(file)])
    LOADED[str(file)] = [(field, n) for field, r in REGISTRIES.items() for n in r.names() if n not in before[field]]
    return LOADED[str(file)]


def load_plugins_from_env() -> None:
    """In a worker process: the plugins its parent loaded."""
    for path in [p for p in os.environ.get(PLUGINS_ENV, "").split(os.pathsep) if p]:
        load_plugin(path)


def registers_variants(path: Path) -> bool:
    """Whether a file is a plugin: it calls ``.register(...)`` on one of gptlab's registries."""
    from gptlab.components import __all__ as registry_names

    tree = ModelFile.read(path).tree
    return any(isinstance(node, ast.Attribute) and node.attr == "register" and isinstance(node.value, ast.Name)
               and node.value.id in registry_names for node in ast.walk(tree))


# -- a time limit per check ------------------------------------------------------------------------------------


class TimeLimit(Exception):
    """A check ran past its time limit."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise ``TimeLimit`` in this (main) thread after ``seconds``; a no-op off the main thread or without
    SIGALRM (Windows). Python code is interrupted at once, a running torch kernel when it returns."""
    import threading

    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise TimeLimit(f"ran past its time limit of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)

