"""The mutation command's parsing and scoring, without running mutmut."""

import pytest

from gptlab.devtools.mutation import MutationStats, format_report, main, module_of, parse_results

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
