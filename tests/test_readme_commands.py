"""Every ``python -m`` command of README.md runs: a broken one fails here.

The commands are read from the README itself (code blocks and inline code spans, backslash
continuations joined), so a command added to it is tested without editing this file. Each is
run as ``python -m`` runs it (``runpy``), a batch of them in one interpreter to import torch
once, with what it writes redirected into a temporary folder:

- ``python -m ablate``: with ``+plan=true`` (every job of a sweep is composed, validated and
  priced, nothing is trained) and ``results_dir`` in the temporary folder, which the plan must
  leave empty; a sweep's seeds and tuned values are pinned to their first value (they change
  no configuration's validity; every configuration is still planned: :func:`pinned`); a
  command for a cluster launcher (SLURM) is composed with ``--cfg hydra``;
- ``python -m ablate.bench``: with ``--cfg job`` (it has no plan option);
- ``python -m analysis``: on the committed results in results/reference (a results folder that
  only a run would make stands in by :data:`STAND_INS`), ``--out`` in the temporary folder,
  PNG figures only (the PDF ones are tested with the analysis); without an input, ``--help``;
- ``python -m models.bench``: ``--help`` (its ``--quick`` run takes 20 s);
- ``python -m ablate.recount``: ``--dry-run``, on the committed results standing in.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

from ablate.config import register

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
REFERENCE = ROOT / "results" / "reference"
# Results folders that the README's commands create, and the committed results standing in.
STAND_INS = {"mimo_vs_siso_paper": "mimo_vs_siso", "bench": "speed", "state_tracking": "state_tracking_parity_400steps"}
CLUSTER_LAUNCHERS = ("hydra/launcher=slurm",)
# Runs each command of a batch with runpy in one interpreter; after each, '@@@ <exit status>'
# on stdout and stderr. Hydra's global state is cleared between commands, as a new process has it.
DRIVER = """
import json, runpy, sys
from hydra.core.global_hydra import GlobalHydra
for argv in json.loads(sys.argv[1]):
    GlobalHydra.instance().clear()
    sys.argv = argv[2:]
    try:
        runpy.run_module(argv[2], run_name="__main__", alter_sys=True)
        status = 0
    except SystemExit as stop:
        status = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    for stream in (sys.stdout, sys.stderr):
        print(f"@@@ {status}", file=stream, flush=True)
"""


def _code_spans(text: str) -> list[str]:
    """Inline code spans (which may wrap over lines) outside fenced blocks."""
    outside = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.findall(r"`([^`]+)`", outside)


def _code_lines(text: str) -> list[str]:
    """The lines of fenced and indented (4 spaces) code blocks, backslash continuations joined."""
    lines, fenced, joined = [], False, ""
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        if not (fenced or line.startswith("    ")) and not joined:
            continue
        joined += line.strip()
        if joined.endswith("\\"):
            joined = joined[:-1] + " "
            continue
        lines.append(joined)
        joined = ""
    return lines


def readme_commands(text: str) -> list[list[str]]:
    """Every ``python -m`` command of a README as an argv (comments dropped), in order, once."""
    commands: list[list[str]] = []
    for snippet in _code_lines(text) + _code_spans(text):
        snippet = " ".join(snippet.split())
        if snippet.startswith("python -m "):
            argv = shlex.split(snippet, comments=True)
            if argv not in commands:
                commands.append(argv)
    return commands


def _set_option(args: list[str], key: str, value: str) -> list[str]:
    """``args`` with every ``key=...`` override removed and ``key=value`` put first (Hydra takes
    no override after ``-m``)."""
    return [f"{key}={value}", *(a for a in args if not a.startswith(f"{key}="))]


def pinned(args: list[str], collapse: bool = True) -> list[str]:
    """Overrides that run a joblib launcher's jobs in the planning process (``n_jobs=1``: no
    worker processes to start; tests/test_plan.py plans with workers) and, with ``collapse``,
    pin a sweep's seeds and tuned values (``tuned``) to their first value unless the command
    sets them (every configuration of the sweep is still planned, once). Nothing for a command
    that is no sweep or does not compose (then the command line says why)."""
    if "-m" not in args and "--multirun" not in args:
        return []
    register()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("config", [a for a in args if not a.startswith("-")], return_hydra_config=True)
    except HydraException:
        return []
    params = dict(cfg.hydra.sweeper.params or {})
    keys = [k for k in ("seed", *cfg.get("tuned", [])) if collapse and k in params
            and not any(a.startswith(f"{k}=") for a in args)]
    parser = OverridesParser.create()
    pins = [f"{k}={next(iter(parser.parse_override(f'{k}={params[k]}').sweep_string_iterator()))}" for k in keys]
    return pins + (["hydra.launcher.n_jobs=1"] if "joblib" in cfg.hydra.launcher._target_ else [])


def ablate_argv(args: list[str], results_dir: Path, collapse: bool = True) -> list[str]:
    """A ``python -m ablate`` command made safe to run: its results in ``results_dir``, and a
    plan instead of training (a cluster launcher's command: its config only), with the
    overrides of :func:`pinned`."""
    args = _set_option(args, "results_dir", str(results_dir))
    if any(a.startswith(("--cfg", "--help", "-h", "--info")) for a in args):
        return args
    if any(a.startswith(CLUSTER_LAUNCHERS) for a in args):
        return [a for a in args if a != "-m"] + ["--cfg", "hydra"]
    args = args if "+plan=true" in args else ["+plan=true", *args]
    if "-m" not in args:
        return args
    at = args.index("-m")  # the pins go last, before -m, so they win
    return [*args[:at], *pinned(args, collapse), *args[at:]]


def analysis_inputs(args: list[str]) -> list[str]:
    """``args`` with each results folder that does not exist replaced by its stand-in in
    results/reference (a folder only a run would make); fails naming one with no stand-in."""
    out = []
    for arg in args:
        path = Path(arg)
        if arg.startswith("-") or path.exists() or "/" not in arg:
            out.append(arg)
            continue
        name = STAND_INS.get(path.name, path.name)
        assert (REFERENCE / name).is_dir(), f"README command input {arg} is missing: add a stand-in to STAND_INS"
        out.append(str((REFERENCE / name).relative_to(ROOT)))
    return out


def without_out(args: list[str]) -> list[str]:
    """``args`` without an ``--out DIR`` option."""
    if "--out" not in args:
        return args
    at = args.index("--out")
    return args[:at] + args[at + 2:]


def expand_placeholder(argv: list[str]) -> list[str]:
    """``results/reference/NAME`` (the README's placeholder) -> the first committed results folder."""
    first = sorted(p.parent.name for p in REFERENCE.glob("*/runs"))[0]
    return [a.replace("/NAME", f"/{first}") for a in argv]


def runnable(argv: list[str], scratch: Path) -> list[str]:
    """``[module, *args]`` of a README command made safe to run, redirected into ``scratch``."""
    module, args = argv[2], argv[3:]
    if module == "ablate":
        return [module, *ablate_argv(args, scratch / "results")]
    if module == "ablate.bench":
        return [module, *_set_option(args, "results_dir", str(scratch / "results")), "--cfg", "job"]
    if module == "analysis":
        args = analysis_inputs(expand_placeholder(without_out(args)))
        inputs = [a for a in args if not a.startswith("-")]
        return [module, *args, "--out", str(scratch / "report"), "--formats", "png"] if inputs else [module, "--help"]
    if module == "models.bench":
        return [module, "--help"]
    if module == "ablate.recount":
        return [module, *analysis_inputs(args), *([] if "--dry-run" in args else ["--dry-run"])]
    raise AssertionError(f"README command for an unknown module: {' '.join(argv)}")


def run_argvs(batch: list[list[str]]) -> list[tuple[str, int, str]]:
    """Run ``python -m`` argv lists in one interpreter: (command, exit status, stdout and stderr) each."""
    result = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(batch)], cwd=ROOT, capture_output=True,
                            text=True, timeout=600)
    marker = re.compile(r"^@@@ (-?\d+)\n", flags=re.M)
    stdout, stderr = marker.split(result.stdout), marker.split(result.stderr)
    statuses = [int(s) for s in stdout[1::2]]
    assert len(statuses) == len(batch), f"the batch stopped early:\n{result.stderr[-4000:]}"
    return [(" ".join(argv), status, out + err)
            for argv, status, out, err in zip(batch, statuses, stdout[0::2], stderr[0::2])]


def run_readme(commands: list[list[str]], tmp_path: Path) -> list[tuple[str, int, str]]:
    """Run README commands, each redirected into its own folder ``tmp_path/<index>``; commands
    that are the same once redirected (e.g. the same report with another ``--out``) run once."""
    batch, seen = [], set()
    for argv in commands:
        key = tuple(runnable(argv, Path("SCRATCH")))
        if key not in seen:
            seen.add(key)
            batch.append(["python", "-m", *runnable(argv, tmp_path / str(len(batch)))])
    return run_argvs(batch)


def commands_of(*modules: str) -> list[list[str]]:
    """The README's commands of these modules (``python -m MODULE ...``)."""
    return [argv for argv in readme_commands(README.read_text()) if argv[2] in modules]


def test_readme_commands_are_found() -> None:
    """The parser sees code blocks, inline spans and continuation lines (a regression guard:
    a parser that finds nothing would make every test below pass)."""
    commands = [" ".join(argv) for argv in readme_commands(README.read_text())]
    assert "python -m ablate" in commands and any(c.startswith("python -m ablate.bench") for c in commands)
    assert any(c.startswith("python -m ablate +experiment=mimo_vs_siso_paper hydra/launcher=slurm_gpu "
                            "hydra.launcher.partition=gpu") and c.endswith(" -m") for c in commands)
    assert any("task=pathfinder" in c for c in commands)  # an inline span over three lines
    assert {argv[2] for argv in readme_commands(README.read_text())} == {"ablate", "ablate.bench", "ablate.recount",
                                                                         "analysis", "models.bench"}


def _failures(results: list[tuple[str, int, str]]) -> str:
    """The commands that exited with a nonzero status, with the end of their output."""
    return "\n\n".join(f"{command}\n-> exit {status}\n{out[-2000:]}" for command, status, out in results if status)


PLAN_SHARDS = 3  # the README's ablate commands, planned in this many tests that pytest-xdist spreads over workers


@pytest.mark.parametrize("shard", range(PLAN_SHARDS))
def test_ablate_commands_plan(tmp_path, shard: int) -> None:
    """Every ``python -m ablate`` command of the README composes, validates and plans each of
    its jobs; the plan writes nothing; a sweep's plan ends with its totals. Shard ``shard``
    takes every PLAN_SHARDS-th command."""
    commands = commands_of("ablate")[shard::PLAN_SHARDS]
    results = run_readme(commands, tmp_path)
    assert not _failures(results), _failures(results)
    for i, (command, _, out) in enumerate(results):
        written = [p for p in (tmp_path / str(i)).rglob("*") if p.is_file()]
        assert not written, f"{command} wrote {written[:5]}"
        if "+plan=true" in command and command.endswith(" -m"):
            assert "plan totals: " in out, f"{command} printed no totals:\n{out[-2000:]}"


def test_bench_and_analysis_commands_run(tmp_path) -> None:
    """Every ``python -m ablate.bench``, ``analysis`` and ``models.bench`` command of the README
    runs (see the module docstring for how)."""
    results = run_readme(commands_of("ablate.bench", "models.bench", "analysis"), tmp_path)
    assert not _failures(results), _failures(results)


def test_pathfinder_command_plans_the_recorded_runs(tmp_path) -> None:
    """The README's Pathfinder command plans the runs of results/reference/mimo_vs_siso_pathfinder
    (same task, lr, models and seeds): its S5 runs by the same id, already finished; its S4D
    reference once per seed (recorded twice, under both match modes, before the reference
    was trained once)."""
    command = next(argv for argv in commands_of("ablate") if "task=pathfinder" in " ".join(argv))
    recorded = pd.concat([pd.read_parquet(p) for p in (REFERENCE / "mimo_vs_siso_pathfinder" / "runs").glob("*")])
    results = tmp_path / "results"
    (results / "runs").mkdir(parents=True)
    for path in (REFERENCE / "mimo_vs_siso_pathfinder" / "runs").glob("*"):
        (results / "runs" / path.name).write_bytes(path.read_bytes())
    before = sorted(results.rglob("*"))
    ((_, status, out),) = run_argvs([["python", "-m", "ablate", *ablate_argv(command[3:], results, collapse=False)]])
    assert status == 0, out[-3000:]
    # the plan lines (stdout), wherever a log line (stderr, same pipe) lands beside one
    lines = re.findall(r"plan [0-9a-f]{16} \[.*", out)
    assert len(lines) == len(recorded) == 12, out[-3000:]
    s5 = recorded[recorded["preset"] == "s5"]
    for rid in s5["run_id"]:
        assert any(line.startswith(f"plan {rid} [done (skip)]") for line in lines), rid
    assert set(recorded["trainer.lr"]) == {0.003} and set(recorded["task"]) == {"pathfinder"}
    assert all(" on pathfinder " in line and "trainer.lr=0.003" in line for line in lines)
    assert "plan totals: 12 jobs, 9 runs, 6 done (skip), 3 to train" in out
    assert sorted(results.rglob("*")) == before

