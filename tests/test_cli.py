"""The command line of ``python -m ablate``: a bad command line is one line on stderr with exit
status 2 before anything is written; ``--help`` is quick and lists what a user picks from;
Hydra's output folders are kept only for runs that train, and nothing lands outside results_dir."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from ablate.__main__ import CONF
from ablate.command_line import check_command_line, job_overrides
from ablate.config import register

ROOT = Path(__file__).resolve().parents[1]
MODELS = sorted(path.stem for path in (ROOT / "conf" / "model").glob("*.yaml"))
HELP_IMPORTS_TORCH = """
import runpy, sys
sys.argv = ["ablate", "--help"]
try:
    runpy.run_module("ablate", run_name="__main__")
finally:
    print("torch imported:", "torch" in sys.modules)
"""


def run_ablate(cwd, *args: str, drop_env: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """``python -m ablate ARGS`` started in ``cwd`` (not the repository root)."""
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", *drop_env)}
    return subprocess.run([sys.executable, "-m", "ablate", *args], cwd=cwd, env=env | {"OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=300)


def files_under(path) -> list[str]:
    """Every file below ``path`` (relative), sorted; folders alone do not count."""
    return sorted(os.path.relpath(os.path.join(d, f), path) for d, _, fs in os.walk(path) for f in fs)


@pytest.mark.parametrize("overrides, multirun, pattern", [
    (["+experiment=nosuch"], False, r"experiment='nosuch' is not valid; expected one of \[.*'mimo_vs_siso', .*'smoke'"),
    (["model=s6"], False, re.escape(f"model='s6' is not valid; expected one of {MODELS}") + "$"),
    (["task=nosuchtask"], False, r"task='nosuchtask' is not valid; expected one of \[.*'mqar', .*'sdigits'"),
    (["hydra/launcher=nosuch"], False, r"hydra/launcher='nosuch' is not valid; expected one of \[.*'joblib'"),
    (["+experiment=smoke", "model=s4d,s6", "seed=0,1,2"], True, r"model='s6' is not valid"),  # every value
    (["trainer.nosuchkey=1"], False, r"trainer.nosuchkey is not a config key; expected one of \[.*'lr', "),
    (["model.ssm.nosuch=1"], False, r"model.ssm.nosuch is not a config key; expected one of \[.*'d_state', "),
    (["model.ssm.d_state=abc"], False, r"Error merging override model.ssm.d_state=abc; Value 'abc'"),
    (["seed=0,1"], False, r"Ambiguous value for argument 'seed=0,1'.*--multirun"),
])
def test_bad_command_line_is_refused_in_one_line(tmp_path, capsys, overrides, multirun, pattern) -> None:
    register()
    with pytest.raises(SystemExit) as stop:
        check_command_line(CONF, [*overrides, f"results_dir={tmp_path / 'out'}"], multirun, hydra_config=True)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert re.match("error: " + pattern, err) and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_good_command_line_passes_and_every_swept_value_is_composed(tmp_path) -> None:
    register()
    check_command_line(CONF, ["+experiment=smoke", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "model=s4d,s5",
                              f"results_dir={tmp_path}"], multirun=True, hydra_config=True)
    assert job_overrides(["a=1,2,3", "b=x", "+c=4,5"], multirun=True) == [
        ["a=1", "b=x", "+c=4"], ["a=2", "b=x", "+c=5"], ["a=3", "b=x", "+c=4"]]
    assert job_overrides(["a=1,2"], multirun=False) == [["a=1,2"]]


def test_help_lists_what_a_user_picks_without_importing_torch(tmp_path) -> None:
    result = subprocess.run([sys.executable, "-c", HELP_IMPORTS_TORCH], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "torch imported: False" in result.stdout
    groups = result.stdout.split("== Config groups ==")[1].split("== Config ==")[0]
    listed = [line.split(":")[0] for line in groups.splitlines() if ":" in line and "(" not in line]
    assert listed == ["model", "task", "trainer", "experiment", "hydra/launcher"]
    assert f"model: {', '.join(MODELS)}\n" in groups and "smoke" in groups and "joblib" in groups
    assert "+plan=true" in result.stdout and "--cfg job --resolve" in result.stdout
    assert files_under(tmp_path) == []


@pytest.mark.parametrize("overrides, message", [
    (["trainer.nosuchkey=1"], "error: trainer.nosuchkey is not a config key"),  # refused before Hydra
    (["model=mamba", "model.ssm.mode=cuda", "trainer.device=cpu"], "error: model.ssm.mode='cuda' needs"),  # by the job
    (["model.ssm.mode=triton", "trainer.device=cpu"], "error: model.ssm.mode='triton' needs"),
    pytest.param(["trainer.device=cuda"], "error: trainer.device='cuda' is not valid: no CUDA device",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")),
])
def test_refusal_is_one_line_exit_2_and_writes_nothing(tmp_path, overrides, message) -> None:
    result = run_ablate(tmp_path, *overrides, "results_dir=out", drop_env=("TRITON_INTERPRET",))
    assert result.returncode == 2
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1, result.stderr
    assert files_under(tmp_path) == []


def test_unreadable_data_are_refused_before_training(tmp_path) -> None:
    """A malformed row in LRA's test file is found when the run loads its splits, before it
    trains: one line, exit 2, nothing written (not a failed row after a whole training)."""
    data = tmp_path / "data" / "listops-1000"
    data.mkdir(parents=True)
    for split in ("train", "val", "test"):
        rows = "( [MAX 2 ) ]\t2\n" if split != "test" else "( [MAX 2 ) ]\tnine\n"
        (data / f"basic_{split}.tsv").write_text("Source\tTarget\n" + rows)
    result = run_ablate(tmp_path, "task=lra", f"task.data_dir={data}", "task.max_length=8", "model.n_layers=1",
                        "model.ssm.d_model=8", "model.ssm.d_state=4", "trainer.max_steps=2", "results_dir=out")
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "basic_test.tsv: line 2 is not a ListOps row" in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert files_under(tmp_path / "out") == []


def test_hydra_output_only_for_runs_that_train(tmp_path) -> None:
    """A plan sweep and a refused sweep leave no hydra/ folder; a run that trains keeps its
    config; nothing is written outside results_dir (the command runs in an empty folder)."""
    plan = run_ablate(tmp_path, "+experiment=smoke", "+plan=true", "results_dir=out", "-m")
    assert plan.returncode == 0, plan.stderr
    assert len(re.findall(r"^plan [0-9a-f]{16} ", plan.stdout, flags=re.MULTILINE)) == 4
    refused = run_ablate(tmp_path, "+experiment=smoke", "trainer.lr=-1", "results_dir=out", "-m")
    assert refused.returncode == 2 and refused.stderr.startswith("error: trainer.lr=-1.0 is not valid")
    assert files_under(tmp_path) == []
    tiny = ["model.n_layers=1", "model.ssm.d_model=8", "model.ssm.d_state=4", "trainer.max_steps=2",
            "trainer.eval_every=2", "trainer.progress=false", "results_dir=out"]
    trained = run_ablate(tmp_path, *tiny)
    assert trained.returncode == 0, trained.stderr
    written = files_under(tmp_path)
    assert all(path.startswith("out" + os.sep) for path in written)
    configs = [path for path in written if path.startswith(os.path.join("out", "hydra"))]
    assert sorted(os.path.basename(path) for path in configs) == [
        "ablate.log", "config.yaml", "hydra.yaml", "overrides.yaml"]


def test_readme_config_example_prints_the_resolved_config(tmp_path) -> None:
    line = next(line for line in (ROOT / "README.md").read_text().splitlines() if "--cfg job" in line)
    args = shlex.split(line.split("#")[0])[3:]  # after "python -m ablate"
    result = run_ablate(tmp_path, *args)
    assert result.returncode == 0, result.stderr
    assert "results_dir: results/smoke" in result.stdout and "${" not in result.stdout
    assert files_under(tmp_path) == []


def test_bench_help_names_every_scale() -> None:
    footer = OmegaConf.load(ROOT / "conf" / "bench" / "config.yaml").hydra.help.footer
    listed = re.search(r"scale=([\w|]+)", footer).group(1).split("|")
    assert sorted(listed) == sorted(path.stem for path in (ROOT / "conf" / "bench" / "scale").glob("*.yaml"))


def test_bench_help_names_every_point_set() -> None:
    footer = OmegaConf.load(ROOT / "conf" / "bench" / "config.yaml").hydra.help.footer
    listed = re.search(r"points=([\w|]+)", footer).group(1).split("|")
    assert sorted(listed) == sorted(path.stem for path in (ROOT / "conf" / "bench" / "points").glob("*.yaml"))


def test_non_editable_install_carries_the_configs(tmp_path) -> None:
    """A wheel (``pip install .``) runs both apps from outside the checkout: conf/ travels in it."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("models", "ablate", "analysis", "conf"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "-w", str(tmp_path / "wheel"), str(source)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    site = tmp_path / "site"
    with zipfile.ZipFile(next((tmp_path / "wheel").glob("*.whl"))) as wheel:
        wheel.extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"} | {"PYTHONPATH": str(site)}
    for app, args, expected in (("ablate", ["+experiment=smoke", "--cfg", "job"], "experiment: smoke"),
                                ("ablate.bench", ["scale=smoke", "--cfg", "job"], "results_dir: results/bench")):
        result = subprocess.run([sys.executable, "-c", f"import runpy, sys, ablate; print(ablate.__file__); "
                                 f"sys.argv = ['{app}', *sys.argv[1:]]; runpy.run_module('{app}', run_name='__main__')",
                                 *args], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(str(site)) and expected in result.stdout


def test_the_wheel_lists_every_package() -> None:
    """pyproject.toml names its packages one by one (conf/ is mapped into the wheel as
    ablate._conf): a new subpackage must be added there, or a non-editable install lacks it."""
    line = re.search(r"^packages = \[(.*)\]$", (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    listed = {name.strip(' "') for name in line.split(",")}
    found = {str(path.parent.relative_to(ROOT)).replace(os.sep, ".")
             for top in ("models", "ablate", "analysis") for path in (ROOT / top).rglob("__init__.py")}
    assert found <= listed and listed - found == {"ablate._conf"}
