"""The mutation command's parsing and scoring, without running mutmut; and the catalogue of learners' bugs:
its entries against the current code, and its check run on a toy project (a few fast pytest runs)."""

import re
import shutil
import time
from pathlib import Path

import pytest

from gptlab.devtools import catalogue
from gptlab.devtools.catalogue import (BY_OTHERS, CATALOGUE, KILLED, NAMED_MISSING, NOT_FOUND, PREEXISTING, SURVIVED,
                                       TIMEOUT, Baseline, Bug, EntryResult, Measurement, applied, check_catalogue,
                                       check_entry, copy_project, format_table, markdown_table, measure, run_pytest,
                                       select, summary_lines)
from gptlab.devtools.mutation import MutationStats, format_report, main, module_of, parse_results
from gptlab.files import PROJECT_ROOT

STATS = {"killed": 90, "survived": 6, "total": 104, "no_tests": 1, "skipped": 4, "suspicious": 0, "timeout": 3,
         "check_was_interrupted_by_user": 0, "segfault": 0}

RESULTS = """\
    gptlab.config.x_validate__mutmut_43: survived
    gptlab.components.mask.xǁScoreAllPairsǁweights__mutmut_8: timeout
    gptlab.config.x_lr_at__mutmut_1: no tests
    gptlab.data.x_read_text__mutmut_6: skipped
"""


def test_score_is_killed_over_tested():
    stats = MutationStats.from_json(STATS)
    assert (stats.total, stats.killed, stats.survived, stats.timeout, stats.no_tests, stats.skipped) == (
        104, 90, 6, 3, 1, 4)
    assert stats.score == 90 / 100  # timeouts and no-tests count against the score; skipped ones do not


def test_score_of_nothing_tested_is_zero():
    assert MutationStats.from_json({"total": 2, "skipped": 2}).score == 0.0


def test_module_of_functions_and_methods():
    assert module_of("gptlab.config.x_validate__mutmut_3") == "gptlab.config"
    assert module_of("gptlab.components.mask.xǁCausalRowsǁrows__mutmut_17") == "gptlab.components.mask"


def test_results_grouped_by_module_sorted_without_skipped():
    grouped = parse_results(RESULTS + "junk line without a status\n")
    assert grouped == {
        "gptlab.components.mask": [("gptlab.components.mask.xǁScoreAllPairsǁweights__mutmut_8", "timeout")],
        "gptlab.config": [("gptlab.config.x_validate__mutmut_43", "survived"),
                          ("gptlab.config.x_lr_at__mutmut_1", "no tests")],
    }


def test_report_shows_counts_score_time_and_survivors():
    text = format_report(MutationStats.from_json(STATS), parse_results(RESULTS), 61.4)
    lines = text.splitlines()
    assert lines[0] == "total 104, killed 90, survived 6, timeout 3, no_tests 1, skipped 4"
    assert lines[1] == "score 0.900 = killed / (total - skipped)   time 61 s"
    assert lines[2] == "gptlab.components.mask: 1 not killed"
    assert "gptlab.config: 2 not killed" in lines
    assert "    gptlab.config.x_lr_at__mutmut_1: no tests" in lines


def test_min_score_outside_zero_one_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--min-score", "90"])
    assert exc.value.code == 2
    assert "--min-score = 90.0 is not allowed; must be in [0, 1]" in capsys.readouterr().err


@pytest.mark.parametrize("min_score, code", [(0.90, 0), (0.91, 1)])
def test_exit_code_follows_the_threshold(tmp_path, monkeypatch, capsys, min_score, code):
    import json
    import subprocess

    from gptlab.devtools import mutation

    stats_file = tmp_path / "mutmut-cicd-stats.json"
    calls = []

    def fake_mutmut(*args, capture=True):
        calls.append(args)
        if args[0] == "export-cicd-stats":
            stats_file.write_text(json.dumps(STATS))
        return subprocess.CompletedProcess(args, 0, stdout=RESULTS if args[0] == "results" else "")

    monkeypatch.setattr(mutation, "STATS_FILE", stats_file)
    monkeypatch.setattr(mutation, "mutmut", fake_mutmut)
    assert main(["--min-score", str(min_score), "--max-children", "2"]) == code
    assert calls == [("run", "--max-children", "2"), ("export-cicd-stats",), ("results",)]
    out = capsys.readouterr().out
    assert "score 0.900" in out and ("OK" if code == 0 else "FAIL") in out


# -- the catalogue of learners' bugs --------------------------------------------------------------------------


def test_every_entry_applies_once_to_the_current_code_and_names_an_existing_test():
    assert len(CATALOGUE) >= 30 and check_catalogue(CATALOGUE) == []
    for bug in CATALOGUE:
        assert catalogue.patch_problem(bug, PROJECT_ROOT) is None, bug.id
        path, _, name = bug.test.partition("::")
        source = (PROJECT_ROOT / path).read_text(encoding="utf-8")
        assert re.search(rf"^def {re.escape(name.partition('[')[0])}\(", source, re.M), f"{bug.id}: {bug.test}"
    areas = {bug.area for bug in CATALOGUE}
    assert {"data", "mask", "softmax", "scale", "heads", "values", "q/k", "norm", "residual", "projections", "ffn",
            "model", "training", "harness", "statistics", "reading"} <= areas


def test_catalogue_problems_name_duplicates_and_malformed_tests():
    bug = Bug("a", "data", "x", "f.py", "o", "r", "tests/test_x.py::test_y")
    assert check_catalogue([bug, bug, Bug("b", "data", "x", "f.py", "o", "r", "test_x.py::y")]) == [
        "a: duplicate id", "b: test 'test_x.py::y' is not tests/FILE.py::test_NAME"]
    assert select(None, [bug]) == [bug] and select(["a"], [bug]) == [bug]
    with pytest.raises(ValueError, match="unknown catalogue id nope; known: a"):
        select(["nope"], [bug])


TOY = '''\
def add(a, b):
    return a + b


def mul(a, b):
    return a * b
'''

TOY_TESTS = '''\
from gptlab.toy import add, mul


def test_add():
    assert add(2, 3) == 5


def test_mul():
    assert mul(2, 3) == 6
'''

TOY_CLI = '''\
import json, sys
from pathlib import Path

args = sys.argv[1:]
out = Path(args[args.index("--out") + 1])
seed = [a for a in args if a.startswith("train.seed=")][0]
loss = {"train.seed=1": 2.5, "train.seed=2": float("nan")}[seed]
out.joinpath("result.json").write_text(json.dumps({"final_val_loss": loss,
                                                   "diverged_at": None if loss == loss else 7, "args": args}))
'''


@pytest.fixture
def toy(tmp_path):
    """A project of one module and two tests, laid out like this one (its own gptlab package, with this tool as
    the pytest plugin), copied the way the catalogue copies a project."""
    source = tmp_path / "source"
    (source / "gptlab" / "devtools").mkdir(parents=True)
    (source / "gptlab" / "__init__.py").write_text("")
    (source / "gptlab" / "devtools" / "__init__.py").write_text("")
    shutil.copy(catalogue.__file__, source / "gptlab" / "devtools" / "catalogue.py")
    (source / "gptlab" / "toy.py").write_text(TOY)
    (source / "gptlab" / "cli.py").write_text(TOY_CLI)
    (source / "tests").mkdir()
    (source / "tests" / "test_toy.py").write_text(TOY_TESTS)
    (source / "gptlab" / "__pycache__").mkdir()
    (source / "pyproject.toml").write_text('[tool.pytest.ini_options]\ntestpaths = ["tests"]\n')
    return copy_project(source, tmp_path / "copy")


def toy_bug(original="return a + b", replacement="return a - b", test="tests/test_toy.py::test_add"):
    return Bug("toy", "toy", "a toy bug", "gptlab/toy.py", original, replacement, test)


def test_the_copy_holds_the_project_without_caches(toy):
    assert sorted(p.name for p in toy.iterdir()) == ["gptlab", "pyproject.toml", "tests"]
    assert not list(toy.rglob("__pycache__"))


def test_a_bug_killed_by_its_named_test_runs_on_the_copy_and_is_reverted(toy):
    result = check_entry(toy_bug(), toy)
    assert (result.status, result.named_failed, result.ok) == (KILLED, True, True)
    assert result.failing == ["tests/test_toy.py::test_add"] and result.error == "AssertionError"
    assert result.ran == "the named test"
    assert (toy / "gptlab" / "toy.py").read_text() == TOY  # reverted
    run = run_pytest(toy, ["tests/test_toy.py"], 60)
    assert Path(run.imported_from).is_relative_to(toy.resolve())  # the copy's package, not the installed one
    assert run.failures == [] and run.outcome.returncode == 0


def test_full_mode_runs_the_suite_first(toy):
    result = check_entry(toy_bug(), toy, full=True)
    assert result.ok and result.ran == "the suite (-x)" and result.first_failing == "tests/test_toy.py::test_add"


def test_killed_by_another_test_only_is_not_ok(toy):
    result = check_entry(toy_bug("return a * b", "return a ** b"), toy)
    assert (result.status, result.ok) == (BY_OTHERS, False)
    assert result.failing == ["tests/test_toy.py::test_mul"]
    assert result.ran == "the named test, then the suite (-x)"


def test_a_bug_no_test_sees_survives(toy):
    result = check_entry(toy_bug("return a + b", "return b + a"), toy)
    assert (result.status, result.ok, result.failing) == (SURVIVED, False, [])


def test_other_tests_that_fail_without_the_bug_leave_the_entry_undetermined(toy):
    (toy / "tests" / "test_broken.py").write_text("def test_broken():\n    assert False\n")
    result = check_entry(toy_bug("return a + b", "return b + a"), toy)
    assert (result.status, result.ok) == (PREEXISTING, False)
    assert result.message == "failing without the bug too: tests/test_broken.py::test_broken"
    assert result.preexisting == ["tests/test_broken.py::test_broken"] and result.failing == []
    killed = check_entry(toy_bug(), toy, full=True)  # the suite stops at the broken test, then the named one runs
    assert killed.ok and killed.failing == ["tests/test_toy.py::test_add"]
    assert killed.preexisting == ["tests/test_broken.py::test_broken"]
    assert "failing without any bug (not counted against an entry): tests/test_broken.py::test_broken" in (
        summary_lines([killed], 1.0, 1, full=True))


@pytest.mark.parametrize("original, count", [("return a / b", 0), ("return a", 2)])
def test_an_original_not_found_exactly_once_is_reported_and_nothing_changes(toy, original, count):
    result = check_entry(toy_bug(original, "return 0"), toy)
    assert result.status == NOT_FOUND and not result.ok
    assert result.message == f"gptlab/toy.py: the original text occurs {count} times (must be exactly once)"
    assert (toy / "gptlab" / "toy.py").read_text() == TOY
    with pytest.raises(catalogue.PatchError):
        with applied(toy_bug(original, "return 0"), toy):
            pass


def test_a_named_test_that_does_not_exist_is_reported(toy):
    result = check_entry(toy_bug(test="tests/test_toy.py::test_nope"), toy)
    assert result.status == NAMED_MISSING and not result.ok


def test_the_fork_server_runs_each_pytest_in_a_fresh_child_that_imports_the_patched_copy(toy):
    server = catalogue.ForkServer(toy, preload=("json",))
    try:
        killed = check_entry(toy_bug(), toy, server=server)
        assert killed.ok and killed.failing == ["tests/test_toy.py::test_add"] and killed.error == "AssertionError"
        survived = check_entry(toy_bug("return a + b", "return b + a"), toy, server=server)
        assert survived.status == SURVIVED  # the first patch is gone: each run imports the copy afresh
        clean = run_pytest(toy, ["tests/test_toy.py"], 60, server)
        assert clean.outcome.returncode == 0 and clean.failures == []
        assert Path(clean.imported_from).is_relative_to(toy.resolve())
        assert "2 passed" in clean.outcome.output
    finally:
        server.close()
    assert server.process.returncode == 0


def test_a_fork_server_that_imports_gptlab_is_refused(toy):
    with pytest.raises(RuntimeError, match="the fork server in .* ended"):
        catalogue.ForkServer(toy, preload=("gptlab",))


@pytest.mark.parametrize("preload", [True, False])
def test_a_named_test_past_its_timeout_is_stopped_and_reported(toy, preload):
    (toy / "tests" / "test_sleep.py").write_text("import time\n\n\ndef test_sleep():\n    time.sleep(30)\n")
    server = catalogue.ForkServer(toy, preload=("json",)) if preload else None
    try:
        start = time.perf_counter()
        result = check_entry(toy_bug(test="tests/test_sleep.py::test_sleep"), toy, named_timeout=1.5, server=server)
        assert result.status == TIMEOUT and not result.ok and time.perf_counter() - start < 15
        if server is not None:  # the server goes on after its child was killed
            assert run_pytest(toy, ["tests/test_toy.py"], 60, server).outcome.returncode == 0
    finally:
        if server is not None:
            server.close()


def test_measure_runs_the_training_command_on_the_copy_and_reads_its_val_loss(toy):
    ok = measure(toy, ("model.dropout=0.2",), seed=1)
    assert (ok.val_loss, ok.note) == (2.5, "")
    diverged = measure(toy, (), seed=2)
    assert (diverged.val_loss, diverged.note) == (None, "diverged at step 7")
    crashed = measure(toy, (), seed=3)
    assert crashed.val_loss is None and crashed.note.startswith("crashed: KeyError")


def results():
    bugs = [Bug("one", "data", "first bug", "f.py", "o", "r", "tests/test_a.py::test_a"),
            Bug("two", "norm", "second bug", "g.py", "o", "r", "tests/test_b.py::test_b", ("model.norm=rmsnorm",))]
    return [EntryResult(bugs[0], KILLED, True, ["tests/test_a.py::test_a"], "AssertionError", "the named test",
                        val_loss=2.1),
            EntryResult(bugs[1], SURVIVED, False, [], ran="the named test, then the suite (-x)",
                        measure_note="crashed: x")]


def test_table_summary_and_markdown_of_results():
    table = format_table(results(), with_loss=True).splitlines()
    assert table[0].split() == ["id", "area", "bug", "named", "test", "result", "first", "failing", "test", "val",
                                "loss"]
    assert "killed (AssertionError)" in table[2] and "(the named test)" in table[2] and "2.1000" in table[2]
    assert "survived" in table[3] and "crashed: x" in table[3]
    summary = summary_lines(results(), 61.2, 2, full=False)
    assert summary[0] == "2 entries: 1 killed by its named test, 1 survived"
    assert summary[1].endswith("2 at once; total time 61 s") and summary[2] == "NOT OK two: survived"
    baselines = [Baseline((), 1337, Measurement(2.1, "", 5.0)),
                 Baseline(("model.norm=rmsnorm",), 1337, Measurement(2.3, "", 5.0))]
    md = markdown_table(results(), baselines).splitlines()
    assert md[0] == "| # | the bug | file | killed by | val loss | baseline | difference |"
    assert md[2] == "| 1 | `one` (data): first bug | `f.py` | `test_a.py::test_a` | 2.100 | 2.100 | identical |"
    assert md[3] == ("| 2 | `two` (norm): second bug | `g.py` | `test_b.py::test_b` **survived** | crashed: x | "
                     "2.300 (model.norm=rmsnorm) | - |")
    assert markdown_table([EntryResult(results()[0].bug, KILLED, True, val_loss=2.0)], baselines).endswith(
        "| 2.000 | 2.100 | -0.100 |")


@pytest.mark.parametrize("args, message", [
    (["--full"], "--full goes with --catalogue"),
    (["--only", "mask-off-by-one"], "--only goes with --catalogue"),
    (["--no-preload"], "--no-preload goes with --catalogue"),
    (["--catalogue", "--markdown"], "--markdown goes with --measure"),
    (["--catalogue", "--jobs", "0"], "--jobs = 0 is not allowed; must be >= 1"),
    (["--catalogue", "--only", "mask-off-by-one,nope"], "unknown catalogue id nope; known: split-val-from-start, "),
])
def test_catalogue_options_are_checked(capsys, args, message):
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("args, expected", [
    (["--catalogue"], (None, 2, False, False, False, True)),
    (["--measure", "--markdown", "--jobs", "1"], (None, 1, False, True, True, True)),
    (["--catalogue", "--full", "--no-preload", "--only", "mask-off-by-one, q-k-swapped"],
     (["mask-off-by-one", "q-k-swapped"], 2, True, False, False, False)),
])
def test_catalogue_options_reach_the_catalogue(monkeypatch, args, expected):
    calls = []

    def fake_main(ids, jobs, full, do_measure, markdown, preload):
        calls.append((ids, jobs, full, do_measure, markdown, preload))
        return 1

    monkeypatch.setattr(catalogue, "main", fake_main)
    monkeypatch.setattr("gptlab.devtools.mutation.mutmut", lambda *a, **k: pytest.fail("mutmut must not run"))
    assert main(args) == 1 and calls == [expected]


def test_catalogue_exit_code_follows_the_results(monkeypatch, capsys):
    monkeypatch.setattr(catalogue, "run_all", lambda *args, **kwargs: (results()[:1], []))
    assert catalogue.main() == 0
    monkeypatch.setattr(catalogue, "run_all", lambda *args, **kwargs: (results(), []))
    assert catalogue.main() == 1
    out = capsys.readouterr().out
    assert "1 killed by its named test, 1 survived" in out and "NOT OK two: survived" in out
