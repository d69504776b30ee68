"""``gptlab check FILE``: a learner's model checked by property, each failure named by the idea it breaks.

A model file (``gpt.py`` written after the lecture) is read by ``gptlab.learner`` (its definitions run, its script
does not), sized from a preset, and put through ``CHECKS``: the property functions of ``gptlab.properties``
(the same ones the test suite runs on every registered variant), then ``trains``, a short run of gptlab's
training loop on the learner's model and on gptlab's reference of the same size, with the same batches.
A failure lists the catalogued bugs (``gptlab/devtools/catalogue.py``, docs/mutations.md) that show the same
symptom, with the effect on the loss measured for each.

A plugin file (one that registers variants with gptlab's registries) is checked variant by variant: each
variant it registers is built into gptlab's model and put through the same properties.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from torch import nn

from gptlab import properties
from gptlab.config import ModelConfig, RunConfig, apply_overrides, preset
from gptlab.data import Corpus
from gptlab.device import cpu_threads
from gptlab.errors import GptlabError, one_line
from gptlab.learner import (TimeLimit, file_path, load_plugin, registers_variants, time_limit)
from gptlab.properties import Outcome, Subject

DOCS = "docs/mutations.md"
TRAINS_STEPS = 500  # each run of `trains`: this many steps of the preset's recipe, scored on TRAINS_WINDOWS windows
TRAINS_WINDOWS = 1024
TRAINS_TOLERANCE = 0.05  # the learner's mean val loss may exceed the reference's by at most this (nats)
TRAINS_SEEDS = (1337, 1338, 1339, 1340)
BUILD_SECONDS = 30  # pairs are added until the difference's 95% interval is narrower


@dataclass(frozen=True)
class Target:
    """What a check runs on: the model as a Subject, the run it is sized and trained by, and the corpus."""

    subject: Subject
    cfg: RunConfig
    corpus: Corpus | None
    reads_context: bool = True


@dataclass(frozen=True)
class Check:
    name: str
    idea: str
    run: Callable[[Target], Outcome]
    seconds: float  # the time limit


def trains(target: Target) -> Outcome:
    """A short run on Tiny Shakespeare lands within TRAINS_TOLERANCE of gptlab's reference of the same size (GPT,
    or the bigram for a model that reads no context), same steps, same batches; seed pairs are added until the
    95% interval of the mean difference is narrower than the tolerance, up to len(TRAINS_SEEDS) pairs."""
    from gptlab.train import train

    assert target.corpus is not None
    reference = "gpt" if target.reads_context else "bigram"
    steps = TRAINS_STEPS
    short: dict[str, Any] = {"train.max_iters": steps, "train.eval_interval": steps, "train.eval_windows": TRAINS_WINDOWS}
    if not target.reads_context:  # a bigram trains at the bigram preset's learning rate
        short["train.lr"] = preset("bigram").train.lr
    theirs = apply_overrides(target.cfg, short)
    init = initialisation(target.subject.fresh())
    ours = apply_overrides(theirs, {"model.arch": reference, "model.init": init})
    differences: list[float] = []
    means: dict[str, list[float]] = {"theirs": [], "ours": []}
    half_width = math.inf
    for seed in TRAINS_SEEDS:
        for name, cfg in (("theirs", theirs), ("ours", ours)):
            cfg.train.seed = seed
            means[name].append(train(cfg, target.corpus).final_val_loss)
        differences.append(means["theirs"][-1] - means["ours"][-1])
        if not math.isfinite(differences[-1]):
            break  # a loss that is no number (a model that diverged): no interval to narrow
        if len(differences) >= 2:
            half_width = 1.96 * statistics.stdev(differences) / math.sqrt(len(differences))
            if half_width < TRAINS_TOLERANCE:
                break
    gap = statistics.fmean(differences)
    mine, ref = statistics.fmean(means["theirs"]), statistics.fmean(means["ours"])
    where = (f"val loss {mine:.3f} vs gptlab's {reference} (init {init}) {ref:.3f} after {steps} steps "
             f"({len(differences)} seeds each, same batches): difference {gap:+.3f} ± {half_width:.3f}")
    if not math.isfinite(mine) or gap > TRAINS_TOLERANCE:
        return properties.failed(f"{where}; allowed: at most +{TRAINS_TOLERANCE}")
    return properties.passed(where)


def initialisation(model: nn.Module) -> str:
    """How the learner's model is initialised, so that the reference starts alike: ``normal`` (N(0, 0.02), the
    lecture's final gpt.py and nanoGPT) when its embeddings start that small, else ``torch`` (PyTorch's defaults:
    embeddings N(0, 1), as the lecture's earlier files leave them)."""
    stds = [float(m.weight.detach().std()) for m in model.modules() if isinstance(m, nn.Embedding)]
    return "normal" if stds and max(stds) < 0.1 else "torch"


CHECKS: tuple[Check, ...] = (
    Check("shapes", "a model maps a (B, T) batch of token ids to (B, T, V) logits and a scalar loss, for any T up "
                    "to block_size", lambda t: properties.shapes(t.subject), 30),
    Check("init-loss", "an untrained model knows nothing: its loss starts near ln V, a uniform guess",
          lambda t: properties.init_loss(t.subject), 30),
    Check("causal", "a position predicts the next token from itself and earlier tokens only: the future is masked",
          lambda t: properties.causal(t.subject), 30),
    Check("batch-independent", "the sequences of a batch are separate examples: none reads another",
          lambda t: properties.batch_independent(t.subject), 30),
    Check("positions", "attention is a weighted bag of tokens: only a position embedding makes order visible",
          lambda t: properties.positions(t.subject), 30),
    Check("eval-deterministic", "eval() turns dropout off, so evaluation gives one answer",
          lambda t: properties.eval_deterministic(t.subject), 30),
    Check("gradients", "every parameter takes part in the loss, so every parameter learns",
          lambda t: properties.gradients(t.subject), 30),
    Check("learns", "a model that can learn can memorise one fixed batch", lambda t: properties.learns(t.subject), 60),
    Check("trains", "the model trains as well as gptlab's reference of the same size on the same batches",
          trains, 300),
    Check("generate", "generation crops the context to block_size and appends tokens from the vocabulary",
          lambda t: properties.generate(t.subject), 30),
)
CHECK_NAMES = [c.name for c in CHECKS]


@dataclass
class Row:
    check: str
    status: str
    seconds: float
    evidence: str
    idea: str = ""
    bugs: list[dict[str, str]] = field(default_factory=list)  # catalogued bugs with the same symptom
    variant: str = ""  # a plugin's variant, e.g. "model.norm=scalenorm"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def same_symptom(check: str) -> list[dict[str, str]]:
    """The catalogued bugs that this check catches, with their measured effect on the loss."""
    from gptlab.devtools.catalogue import CATALOGUE, PROPERTY_OF

    return [{"id": bug.id, "bug": bug.bug, "val_loss": PROPERTY_OF[bug.id][1], "docs": f"{DOCS}#{bug.id}"}
            for bug in CATALOGUE if bug.id in PROPERTY_OF and PROPERTY_OF[bug.id][0] == check]


def run_check(check: Check, target: Target, variant: str = "") -> Row:
    start = time.perf_counter()
    try:
        with time_limit(check.seconds), cpu_threads(1):  # models of a preset's size gain nothing from more
            outcome = check.run(target)
    except TimeLimit as err:
        outcome = properties.failed(f"{err} (an endless loop, or a model far bigger than the preset?)")
    except GptlabError as err:
        outcome = properties.failed(str(err))
    except Exception as err:  # the learner's code raised: that is this check's finding
        outcome = properties.failed(f"raised {one_line(err)}")
    row = Row(check.name, outcome.status, time.perf_counter() - start, outcome.evidence, check.idea, variant=variant)
    if outcome.status == "fail":
        row.bugs = same_symptom(check.name)
    return row


def select(only: list[str] | None) -> list[Check]:
    if not only:
        return list(CHECKS)
    unknown = [name for name in only if name not in CHECK_NAMES]
    if unknown:
        raise GptlabError(f"--only {unknown[0]!r} is not a check; choose from: {', '.join(CHECK_NAMES)}")
    return [c for c in CHECKS if c.name in only]


def sized_config(arch: str, preset_name: str, corpus: Corpus) -> RunConfig:
    cfg = preset(preset_name)
    cfg.model.arch = arch
    cfg.model.vocab_size = corpus.tokenizer.vocab_size
    cfg.train.device = "cpu"
    return cfg


def check_model_file(path: str, model: str | None = None, preset_name: str = "lecture",
                     only: list[str] | None = None, corpus: Corpus | None = None) -> list[Row]:
    """Every check (or ``only`` these) on the model of a learner's file, sized by ``preset_name``."""
    from gptlab.model import build_model

    checks = select(only)
    file_path(path, "FILE")
    arch = f"{path}:{model}" if model else path
    corpus = corpus or Corpus.from_file(preset(preset_name).data.path)
    cfg = sized_config(arch, preset_name, corpus)
    subject = Subject(functools.partial(learner_net, cfg.model), cfg.model.vocab_size, cfg.model.block_size,
                      cfg.model.dropout)
    try:
        with time_limit(BUILD_SECONDS):  # a file that cannot be read, sized or built, or never returns: exit 2
            reads = properties.reads_context(subject)
    except TimeLimit:
        raise GptlabError(f"{path}: building the model and two forward passes ran past {BUILD_SECONDS} s "
                          f"(an endless loop?)") from None
    except GptlabError:
        raise
    except Exception:  # the learner's forward raises: each check reports it as its failure
        reads = True
    target = Target(subject, cfg, corpus, reads)
    return [run_check(check, target) for check in checks]


def learner_net(cfg: ModelConfig, dropout: float) -> nn.Module:
    """The learner's own module, as their file builds it (the properties see its raw outputs)."""
    from gptlab.model import LearnerModel

    return LearnerModel(dataclasses.replace(cfg, dropout=dropout)).net


def gptlab_model(cfg: ModelConfig, dropout: float) -> nn.Module:
    from gptlab.model import GPT

    return GPT(dataclasses.replace(cfg, dropout=dropout))


PLUGIN_CHECKS = ("shapes", "causal", "batch-independent", "eval-deterministic", "gradients", "learns")


def check_plugin_file(path: str, preset_name: str = "lecture") -> list[Row]:
    """The registry contract on each variant a plugin file registers: built into gptlab's model, through the
    properties (a variant registered as leaking the future must fail `causal`; one that mixes the batch,
    `batch-independent`)."""
    from gptlab.components import REGISTRIES
    from gptlab.model import check_model

    registered = load_plugin(path)
    if not registered:
        raise GptlabError(f"{path}: registers no variant (a plugin calls REGISTRY.register(...) at import)")
    rows = []
    for field_name, name in registered:
        cfg = preset(preset_name).model
        setattr(cfg, field_name, name)  # a variant of a true/false field too: the registry looks names up as given
        label = f"model.{field_name}={name}"
        entry = REGISTRIES[field_name].get(name)
        try:
            check_model(cfg)
        except GptlabError as err:
            rows.append(Row("builds", "fail", 0.0, str(err), "a builder takes the model's config and returns a "
                                                             "module (gptlab/registry.py)", variant=label))
            continue
        subject = Subject(functools.partial(gptlab_model, cfg), cfg.vocab_size, cfg.block_size, cfg.dropout)
        target = Target(subject, RunConfig(model=cfg), None)  # pragma: no mutate (only trains reads the run config, and a plugin's variants are not trained)
        for check in (c for c in CHECKS if c.name in PLUGIN_CHECKS):
            row = run_check(check, target, label)
            if check.name == "causal" and entry.leaks_future:
                row.status = "pass" if row.status == "fail" else "fail"  # registered as leaking: the leak is seen
                row.evidence = f"registered with leaks_future, and {row.evidence}"
            rows.append(row)
    return rows


def check_file(path: str, model: str | None = None, preset_name: str = "lecture",
               only: list[str] | None = None) -> tuple[str, list[Row]]:
    """("model" or "plugin", rows) for a learner's file."""
    file = file_path(path, "FILE")
    if registers_variants(Path(file)):
        return "plugin", check_plugin_file(path, preset_name)
    return "model", check_model_file(path, model, preset_name, only)


def exit_code(rows: list[Row]) -> int:
    return 1 if any(row.status == "fail" for row in rows) else 0
