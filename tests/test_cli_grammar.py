"""One grammar for every command (issue 23): the same option names for the same things, -q/-v after the
subcommand too, an exit status section in every --help, usage errors that show the subcommand's usage, --json
where a script wants the result, hints that repeat the user's options, and status's exit 3 on failed trials."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from runner.cli import SUBCOMMANDS, build_parser, main
from runner.cli.launch import print_summary
from runner.records.store import AttemptRecord, CampaignStore
from runner.records.metric import Metric

PROJECT = Path(__file__).resolve().parents[1]

# Which shared options each command has (commands absent from a list do not deal with that thing).
DATASETS = {"provision", "launch", "status", "report", "compare", "cleanup", "dataset", "schedule add",
            "dataset pack", "dataset verify", "dataset import", "dataset query", "dataset publish", "dataset fetch"}
INVENTORY = {"plan", "provision", "launch", "cleanup", "hosts", "schedule add"}
JSON = {"plan", "status", "hosts", "compare", "report", "fit"}


def all_parsers() -> dict[str, argparse.ArgumentParser]:
    """Every command and action, by its words after `runner`."""
    out: dict[str, argparse.ArgumentParser] = {}

    def walk(prefix: str, parser: argparse.ArgumentParser) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    words = f"{prefix} {name}".strip()
                    out[words] = child
                    walk(words, child)

    walk("", build_parser())
    return out


PARSERS = all_parsers()


def test_every_command_is_walked() -> None:
    assert set(SUBCOMMANDS) <= set(PARSERS)
    assert {"dataset import", "schedule add", "schedule run-now"} <= set(PARSERS)


@pytest.mark.parametrize("words", sorted(PARSERS))
def test_help_has_the_shared_options_and_the_exit_status(words: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*words.split(), "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: runner {words}")
    assert "-q, --quiet" in text and "-v, --verbose" in text
    section = text[text.index("exit status:"):]
    for code in ("0 ", "2 ", "130 "):
        assert f"\n  {code}" in section, section
    assert ("--datasets DIR" in text) == (words in DATASETS), words
    assert ("--inventory" in text) == (words in INVENTORY), words
    assert ("--json" in text) == (words in JSON), words
    if words == "provision":
        assert "--out" not in text  # its old name for --datasets, hidden


def test_exit_codes_of_their_own_are_documented(capsys: pytest.CaptureFixture[str]) -> None:
    texts = {}
    for words in ("status", "compare", "launch", "cleanup"):
        with pytest.raises(SystemExit):
            main([*words.split(), "--help"])
        texts[words] = capsys.readouterr().out
    assert "  3    some trials failed" in texts["status"]
    assert "  3    --fail-on found a worse cell" in texts["compare"]
    assert "  1    some trials failed" in texts["launch"]
    assert "  1    a host could not be cleaned" in texts["cleanup"]


def test_a_usage_error_shows_the_subcommands_usage(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, usage in ((["status", "--bogus"], "usage: runner status "),
                        (["dataset", "import", "x.tar.gz", "--bogus"], "usage: runner dataset import "),
                        (["schedule", "add", "n", "m.yml", "--cron", "* * * * *", "--bogus"], "usage: runner schedule add ")):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith(usage) and "unrecognized arguments: --bogus" in err, err


def write_campaign(datasets: Path, name: str = "c", failed: int = 1) -> Path:
    """A campaign of 3 planned trials: 1 ok, `failed` failed (their last attempt), the rest pending."""
    store = CampaignStore(datasets / name)
    with store:
        store.initialise(campaign=name, workload="command", matrix_text=f"campaign: {name}\n", matrix_sha256="0" * 64,
                         axis_types={"threads": "int"}, trial_count=3, seed=1, provenance={"controller": "ctl"})
        for n in range(1, 2 + failed):
            ok = n == 1
            store.write_attempt(name, "command", {"threads": "int"}, AttemptRecord(
                trial_id=f"{n:016x}", cell_id=f"cell{n}", repetition=1, attempt=1, host="h1", status="ok" if ok else "failed",
                error=None if ok else "exit status 3: boom", started_at=1.0, ended_at=2.0, wall_s=1.0, workload_wall_s=1.0,
                params={"threads": n}, metrics=(Metric("throughput", 100.0 * n, "ops/s"),) if ok else ()))
    return store.root


def test_status_json_and_its_exit_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_campaign(tmp_path / "ds", "c", failed=1)
    write_campaign(tmp_path / "ds", "d", failed=0)
    assert main(["status", "c", "--datasets", str(tmp_path / "ds"), "--json"]) == 3
    doc = json.loads(capsys.readouterr().out)
    assert doc == {"campaign": "c", "planned": 3, "ok": 1, "failed": 1, "pending": 1, "attempts": 2, "running": None,
                   "failed_trials": {f"{2:016x}": "exit status 3: boom"}}
    assert main(["status", "d", "--datasets", str(tmp_path / "ds"), "-v"]) == 0  # -v after the subcommand
    out = capsys.readouterr().out
    assert "1 done" in out and f"--datasets {tmp_path / 'ds'}" in out  # the hint names the datasets given
    assert main(["status", "c", "-q", "--datasets", str(tmp_path / "ds")]) == 3


def test_dataset_actions_take_datasets_after_their_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`runner dataset import ARCHIVE --datasets DIR`, as docs/lab.md shows it."""
    write_campaign(tmp_path / "src", "c", failed=0)
    archive = tmp_path / "c.tar.gz"
    assert main(["dataset", "--datasets", str(tmp_path / "src"), "pack", "c", "--out", str(archive)]) == 0
    assert main(["dataset", "import", str(archive), "--datasets", str(tmp_path / "dst")]) == 0
    assert (tmp_path / "dst" / "c" / "dataset.json").is_file()
    assert main(["dataset", "query", "SELECT count(*) AS n FROM trials", "--datasets", str(tmp_path / "dst")]) == 0
    assert "runner dataset import" in (PROJECT / "docs" / "lab.md").read_text()


def test_plan_json_is_parsed(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(PROJECT / "matrix.yml"), "--json", "--cpus", "4", "--hosts", "1"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["campaign"] == "lockbench-scaling" and doc["workload"] == "lockbench"
    assert doc["trials"] == len(doc["trials_list"]) and doc["cells"] >= 1 and doc["estimate_s"] > 0
    assert {"trial_id", "cell_id", "repetition", "params"} <= set(doc["trials_list"][0])


def test_provision_out_is_the_old_name_of_datasets() -> None:
    args = build_parser("provision").parse_args(["provision", "--out", "/tmp/x"])
    assert args.out_deprecated == Path("/tmp/x")
    args = build_parser("provision").parse_args(["provision", "--datasets", "/tmp/y"])
    assert args.datasets == Path("/tmp/y") and args.out_deprecated is None


def test_quiet_and_verbose_before_or_after_the_subcommand() -> None:
    for argv in (["-q", "launch", "m.yml"], ["launch", "m.yml", "-q"], ["launch", "m.yml", "--quiet"]):
        assert build_parser("launch").parse_args(argv).quiet is True
    assert build_parser("launch").parse_args(["launch", "m.yml"]).quiet is False
    assert build_parser("status").parse_args(["status", "-v"]).verbose is True
    assert build_parser("status").parse_args(["-v", "status"]).verbose is True


def test_the_launch_hints_repeat_the_datasets(tmp_path: Path) -> None:
    from io import StringIO

    from rich.console import Console

    from runner.execution.campaign import Summary

    s = Summary(campaign="c", dataset=tmp_path / "ds" / "c", planned=2, skipped=0, ok=1, failed=1, attempts=2, elapsed_s=1.0,
                interrupted=False, failures=("t1: boom",), dead_hosts=())
    out = StringIO()
    print_summary(Console(file=out, width=200), s, tmp_path / "ds")
    assert f"next: runner report c --datasets {tmp_path / 'ds'}" in out.getvalue()
    out = StringIO()
    print_summary(Console(file=out, width=200), s, "datasets")
    assert "next: runner report c\n" in out.getvalue()


def test_report_json_is_parsed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.test_compare_honest import write_campaign as write_lock_campaign

    write_lock_campaign(tmp_path / "ds", "base", reps=3)
    out = tmp_path / "report"
    assert main(["report", "base", "--datasets", str(tmp_path / "ds"), "--out", str(out), "--bootstrap", "0", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["campaign"] == "base" and doc["report"] == str(out / "report.html") and (out / "report.html").is_file()
    cells = {(c["metric"], c["lock"], c["threads"]): c for c in doc["cells"]}
    assert len(cells) == 8 and cells[("throughput", "mcs", 2)]["n"] == 3


def test_hosts_json_rows() -> None:
    from runner.cli.hosts import HostState, state_json

    assert state_json(HostState("tb1", None)) == {"host": "tb1", "state": "free"}
    assert state_json(HostState("tb2", None, "connection refused")) == {"host": "tb2", "state": "unreachable", "error": "connection refused"}
