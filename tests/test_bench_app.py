"""The benchmark app (``python -m ablate.bench``) end to end at smoke sizes, its budget and
memory stops, its config validation, and the scaling fit. No timing is asserted."""

from __future__ import annotations

import glob
import importlib.util
import math
import os
import platform
import subprocess
import sys

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import models
from ablate.allocator import TUNABLES, VARIABLE
from ablate.bench import resolve
from ablate.bench.measure import Deadline, OverBudget, _saved_tensor_bytes, is_out_of_memory, io_bytes
from ablate.bench.run import COLUMNS
from ablate.bench.scaling import fit_exponent
from ablate.bench.series import predict_wall
from ablate.bench.settings import Point
from ablate.bench.subjects import point_subjects
from models.peers import s5_peer
from models.timing import Workload

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the columns another engineer's analysis reads, by these exact names
ANALYSIS_COLUMNS = ("name", "peer", "preset", "mode", "batch", "length", "fwd_ms", "fwdbwd_ms", "tokens_per_s",
                    "peak_memory_mb", "status", "device")
REQUIRED = ANALYSIS_COLUMNS + ("d_model", "d_state", "tokens_per_s_fwd", "peak_memory_kind", "param_count",
                               "flops_per_token", "threads", "version_torch", "step_ms", "steps_per_s",
                               "state_bytes", "scaling_exponent", "floor_ms")
SWEEP_VALUES = ("fwd_ms", "fwdbwd_ms", "tokens_per_s", "tokens_per_s_fwd", "peak_memory_mb", "param_count",
                "flops_per_token", "length", "batch", "d_model", "d_state", "floor_ms")
STEP_VALUES = ("step_ms", "steps_per_s", "state_bytes", "param_count")


def run_bench(tmp_path, *overrides: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m ablate.bench scale=smoke results_dir=<tmp> OVERRIDES`` with one thread."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    command = [sys.executable, "-m", "ablate.bench", "scale=smoke", "device=cpu", f"results_dir={tmp_path}", *overrides]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def only_parquet(tmp_path) -> pd.DataFrame:
    files = glob.glob(os.path.join(str(tmp_path), "bench", "*.parquet"))
    assert len(files) == 1, files
    return pd.read_parquet(files[0])


def test_smoke_benchmark_writes_a_valid_parquet(tmp_path) -> None:
    done = run_bench(tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    frame = only_parquet(tmp_path)
    assert set(REQUIRED) <= set(frame.columns), set(REQUIRED) - set(frame.columns)
    assert list(frame.columns) == list(COLUMNS)
    assert set(frame["status"]) <= {"ok", "over_budget", "oom", "skipped"}

    sweep = frame[(frame["kind"] == "sweep") & (frame["status"] == "ok")]
    ours = sweep[~sweep["peer"]]
    assert {"s5", "s4d", "mamba"} <= set(ours["name"])
    assert {("s4d", "fft"), ("s5", "scan"), ("mamba", "chunked"), ("mamba", "recurrent")} <= set(
        zip(ours["name"], ours["mode"]))
    assert not ((ours["name"] == "mamba") & (ours["mode"] == "fft")).any()  # fft is not valid for selective dt
    assert not sweep[list(SWEEP_VALUES)].isna().any().any(), sweep[list(SWEEP_VALUES)].isna().sum()
    assert (sweep["fwdbwd_ms"] > 0).all() and (sweep["tokens_per_s"] > 0).all()
    assert set(sweep["peak_memory_kind"]) == {"cpu_allocator_profiler"}
    assert set(sweep["device"]) == {"cpu"} and (frame["threads"] == 1).all()
    # the job restarted under glibc's malloc settings, unless the caller had its own
    tuned = TUNABLES if sys.platform == "linux" and platform.libc_ver()[0] == "glibc" else ""
    assert set(frame["glibc_tunables"]) == {os.environ.get(VARIABLE, tuned)}

    # the peers installed (`make test` installs both) ran, labelled, with ratios against ours
    expected = {}
    if importlib.util.find_spec("mamba_ssm"):
        expected.update({"mamba-ssm Mamba": "mamba", "mamba-ssm selective_scan_ref": "selective scan (ours)"})
    if importlib.util.find_spec("s5"):
        expected["s5-pytorch S5"] = "s5"
    peers = sweep[sweep["peer"]]
    assert dict(zip(peers["name"], peers["compare_to"])) == expected
    assert not ours["name"].str.contains("mamba-ssm|s5-pytorch").any()
    assert peers["ours_over_peer"].notna().all() and (peers["ours_over_peer"] > 0).all()
    if "s5-pytorch S5" in expected:  # its complex Λ and C̃ count as two real numbers each, as ours do
        s5_rows = frame[(frame["name"] == "s5-pytorch S5") & (frame["status"] == "ok")]
        H, P = int(s5_rows["d_model"].iloc[0]), int(s5_rows["d_state"].iloc[0])
        same_work = models.param_count(models.preset("s5", d_model=H, d_state=P, conj_sym=False, gate="none"))
        complex_count = sum(p.numel() for p in s5_peer()(H, P).parameters())
        assert set(s5_rows["param_count"]) == {same_work} and same_work > complex_count
    missing = frame[frame["peer"] & (frame["status"] == "skipped")]
    assert missing["note"].str.contains("not installed|on a GPU only").all()

    # one fitted exponent per series, the same on each of its rows
    assert sweep["scaling_exponent"].notna().all()
    assert (sweep.groupby("series_id")["scaling_exponent"].nunique() == 1).all()

    steps = frame[(frame["kind"] == "step") & (frame["status"] == "ok")]
    assert {"s5", "s4d", "mamba"} | {n for n in expected if "scan" not in n} == set(steps["name"])
    assert not steps[list(STEP_VALUES)].isna().any().any()
    assert (steps["state_bytes"] > 0).all() and steps["length"].isna().all()
    assert "ours (fastest mode) / peer" in done.stdout and "recurrent inference" in done.stdout


def test_series_over_its_time_budget_is_recorded_not_crashed(tmp_path) -> None:
    done = run_bench(tmp_path, "scale.budget_s=1e-6", "peers=false", "points=presets", "modes=[scan,fft]")
    assert done.returncode == 0, done.stderr[-3000:]
    frame = only_parquet(tmp_path)
    sweep = frame[frame["kind"] == "sweep"]
    stopped = sweep[sweep["status"] == "over_budget"]
    # each series stops at its first length: s5 and s4d in scan and fft, mamba in scan
    assert sorted(zip(stopped["name"], stopped["mode"])) == [
        ("mamba", "scan"), ("s4d", "fft"), ("s4d", "scan"), ("s5", "fft"), ("s5", "scan")]
    assert (stopped["length"] == 32).all() and stopped["note"].str.contains("budget").all()
    assert stopped["fwdbwd_ms"].isna().all() and stopped["scaling_exponent"].isna().all()
    # fft asked for by name but not valid for mamba (selective dt): one 'skipped' row saying why
    skipped = sweep[sweep["status"] == "skipped"]
    assert list(zip(skipped["name"], skipped["mode"])) == [("mamba", "fft")]
    assert skipped["note"].str.contains("time-invariant").all()
    assert "over_budget" in done.stdout or ">budget" in done.stdout
    steps = frame[frame["kind"] == "step"]
    assert len(steps) > 0 and (steps["status"] == "over_budget").all()


@pytest.mark.parametrize("override, message", [
    ("scale.repeats=0", "error: scale.repeats=0 is not valid; expected an integer >= 1"),
    ("points=nosuch", "error: points='nosuch' is not valid; expected one of ['ablations', 'frontier', 'presets']"),
    ("scale.lenghts=[64]", "error: scale.lenghts is not a config key; expected one of ['bandwidth_mb', 'batch', "),
    # only GPU modes on a CPU: nothing of ours could be timed (the peers alone would run)
    ("modes=[cuda]", "error: modes=['cuda'] is not valid on device 'cpu'"),
    ("modes=[triton,cuda]", "error: modes=['triton', 'cuda'] is not valid on device 'cpu'"),
])
def test_bad_config_is_a_one_line_error_and_exit_status_2(tmp_path, override: str, message: str) -> None:
    """A bad value, an unknown option or an unknown key: one line, exit 2, nothing written."""
    done = run_bench(tmp_path, override)
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), done.stderr
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("where", ["a_file", "a_file/below"])
def test_results_dir_that_cannot_be_written_is_a_one_line_error(tmp_path, where: str) -> None:
    """Hydra creates its output folder under results_dir before the job starts: a results_dir
    that is (or is below) a file must be refused in one line first, not end in a traceback."""
    (tmp_path / "a_file").write_text("keep me")
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-m", "ablate.bench", "scale=smoke", "device=cpu",
                           f"results_dir={tmp_path / where}"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, (done.returncode, done.stderr[-2000:])
    assert lines[0].startswith("error: results_dir=") and "is not valid" in lines[0], lines
    assert (tmp_path / "a_file").read_text() == "keep me" and os.listdir(tmp_path) == ["a_file"]


def compose_bench(tmp_path, *overrides: str) -> dict:
    """The composed bench config as a plain dict (what the CLI passes to ``resolve``)."""
    with initialize_config_dir(config_dir=os.path.join(ROOT, "conf", "bench"), version_base="1.3"):
        cfg = compose("config", overrides=["scale=smoke", f"results_dir={tmp_path}", *overrides])
    return OmegaConf.to_container(cfg, resolve=True)


@pytest.mark.parametrize("override, names", [
    ("scale.lengths=[64,abc]", "scale.lengths"),
    ("scale.budget_s=0", "scale.budget_s"),
    ("+scale.lenghts=[64]", "scale.lenghts"),
    ("device=tpu", "device"),
    ("modes=[warp]", "modes"),
    ("peers=maybe", "peers"),
    ("threads=0", "threads"),
    ("+points.bad={preset:s4d,overrides:{gate:sparkly}}", "points.bad.overrides"),
    ("+points.bad={preset:s4d,overrides:{colour:red}}", "points.bad.overrides"),
    ("+points.other={preset:s6}", "points.other.preset"),
])
def test_bad_config_values_are_named(tmp_path, override: str, names: str) -> None:
    with pytest.raises(ValueError) as err:
        resolve(compose_bench(tmp_path, override))
    message = str(err.value)
    assert names in message and "\n" not in message, message


@pytest.mark.parametrize("points, names", [("presets", {"s5", "s4d", "mamba"}), ("ablations", {"s5", "s4d", "mamba"}),
                                           ("frontier", {"mamba", "mamba2", "mamba3", "mamba3_mimo"})])
def test_shipped_point_sets_resolve(tmp_path, points: str, names: set) -> None:
    settings = resolve(compose_bench(tmp_path, f"points={points}"))
    assert names <= {p.name for p in settings.points}
    assert settings.device in ("cpu", "cuda") and settings.scale.repeats == 1


@pytest.mark.parametrize("scale", sorted(os.path.basename(p)[:-5]
                                          for p in glob.glob(os.path.join(ROOT, "conf", "bench", "scale", "*.yaml"))))
def test_shipped_scales_resolve(tmp_path, scale: str) -> None:
    settings = resolve(compose_bench(tmp_path, f"scale={scale}", "points=ablations", "modes=[scan,triton,cuda]"))
    assert settings.scale.lengths and settings.modes == ("scan", "triton", "cuda")


def test_a_job_never_overwrites_the_parquet_of_another_with_the_same_id(tmp_path) -> None:
    """Two jobs of one configuration started in the same second get the same job id: the
    second must write beside the first, not over it."""
    from ablate.bench import run_bench as run_job

    settings = resolve(compose_bench(tmp_path, "device=cpu", "peers=false", "step=false", "modes=[scan]",
                                     "points=presets", "scale.lengths=[8]"))
    first, first_path = run_job(settings, "same-id")
    before = open(first_path, "rb").read()
    second, second_path = run_job(settings, "same-id")
    assert second_path != first_path and os.path.exists(second_path)
    assert open(first_path, "rb").read() == before  # the first job's results are untouched
    assert set(pd.read_parquet(second_path)["job_id"]) == {os.path.basename(second_path)[:-8]}
    assert len(glob.glob(os.path.join(str(tmp_path), "bench", "*.parquet"))) == 2
    assert sorted(os.listdir(tmp_path / "bench")) == ["same-id.parquet", "same-id_2.parquet"], "claims removed"


def test_a_job_running_under_an_id_keeps_it_and_an_interrupted_one_leaves_nothing(tmp_path) -> None:
    """While a job runs it holds its id by a hidden claim file (it has no parquet until its first
    series): a second job of that id takes the next one. A job that stops before writing leaves
    neither a claim nor an empty parquet."""
    from ablate.bench import run_bench as run_job
    from ablate.bench.run import claim_job_id

    settings = resolve(compose_bench(tmp_path, "device=cpu", "peers=false", "step=false", "modes=[scan]",
                                     "points=presets", "scale.lengths=[8]"))
    assert claim_job_id(str(tmp_path), "busy") == "busy"  # a running job's claim, no parquet yet
    _, path = run_job(settings, "busy")
    assert os.path.basename(path) == "busy_2.parquet"

    def interrupt(row) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_job(settings, "cut", on_row=interrupt)
    assert sorted(os.listdir(tmp_path / "bench")) == [".busy.claim", "busy_2.parquet"]


# ---------------------------------------------------------------------------- units
def test_fit_exponent_recovers_power_laws() -> None:
    lengths = [256, 512, 1024, 2048]
    assert fit_exponent(lengths, [3e-3 * L for L in lengths]) == pytest.approx(1.0)
    assert fit_exponent(lengths, [1e-6 * L**2 for L in lengths]) == pytest.approx(2.0)
    assert 1.0 < fit_exponent(lengths, [L * math.log(L) for L in lengths]) < 1.2
    assert math.isnan(fit_exponent([256], [1.0]))
    assert math.isnan(fit_exponent([256, 512], [1.0, float("nan")]))


def test_predicted_time_grows_at_least_linearly() -> None:
    assert predict_wall([], 1024) == 0.0
    assert predict_wall([(256, 1.0, None)], 1024) == pytest.approx(4.0)
    assert predict_wall([(256, 1.0, None), (512, 1.1, None)], 1024) == pytest.approx(2.2)  # slope < 1 -> 1
    assert predict_wall([(256, 1.0, None), (512, 4.0, None)], 1024) == pytest.approx(16.0)  # quadratic


def test_deadline_raises_only_with_calls_to_come() -> None:
    deadline = Deadline(start=0.0, budget_s=1e-9)
    deadline.plan(2)
    deadline.tick(more_to_come=False)  # the last call may end past the deadline
    with pytest.raises(OverBudget, match="2 of 2|budget"):
        deadline.tick(more_to_come=True)


def test_out_of_memory_detection_and_io_bytes() -> None:
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 GB"))
    assert is_out_of_memory(MemoryError())
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert io_bytes(input_bytes=10, output_bytes=10, param_bytes=1) == (21, 21 + 10 + 20 + 2)


def test_frontier_points_are_timed_and_mamba2_peer_is_named(tmp_path) -> None:
    """Every Mamba-2/3 point runs in scan mode; triton is refused for them with a reason;
    mamba-ssm's Mamba2 (GPU only) is a labelled peer row, skipped on a CPU."""
    done = run_bench(tmp_path, "points=frontier", "modes=[scan,triton]", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    frame = only_parquet(tmp_path)
    sweep = frame[(frame["kind"] == "sweep") & ~frame["peer"]]
    ok = sweep[sweep["status"] == "ok"]
    assert {"mamba2", "mamba3", "mamba3_mimo", "mamba_trapezoidal", "mamba_signed"} <= set(ok[ok["mode"] == "scan"]["name"])
    refused = sweep[(sweep["mode"] == "triton") & (sweep["name"] == "mamba3")]
    assert len(refused) > 0 and (refused["status"] == "skipped").all() and refused["note"].str.contains("Mamba-1 axes").all()
    if importlib.util.find_spec("mamba_ssm"):
        peer = frame[frame["name"] == "mamba-ssm Mamba2"]
        assert set(peer["compare_to"]) == {"mamba2"}
        assert (peer["status"] == "skipped").all() or frame["device"].eq("cuda").all()


def test_our_selective_scan_on_the_peers_layout_computes_what_it_computes_on_ours() -> None:
    # the (B, D, L) series reads mamba-ssm's inputs in place (channels_first): same outputs
    import torch

    from ablate.bench.subjects import SelectiveScanOurs, _scan_inputs
    from models import triton_scan

    if not triton_scan.runs_on("cpu"):
        pytest.skip("the Triton kernels need TRITON_INTERPRET=1 on a CPU")
    D, N = 6, 4
    torch.manual_seed(0)
    peer_layout = _scan_inputs(True, D, N)(2, 12, torch.device("cpu"))  # u, δ: (B, D, L); B, C: (B, N, L)
    in_place = SelectiveScanOurs(D, N, "triton", channels_first=True)
    ours = SelectiveScanOurs(D, N, "triton")
    out = in_place(*peer_layout)
    assert out.shape == (2, D, 12)
    torch.testing.assert_close(out, ours(*(x.transpose(1, 2) for x in peer_layout)).transpose(1, 2))


def test_where_mamba_ssms_kernel_runs_its_reference_loop_is_skipped_not_timed(monkeypatch) -> None:
    import torch

    from ablate.bench import subjects

    monkeypatch.setattr(subjects, "selective_scan_kernel", lambda: (lambda *args, **kwargs: None))
    monkeypatch.setattr(subjects, "mamba_reference", lambda: (None, lambda *args, **kwargs: None))
    peers = [s for s in subjects.selective_scan_subjects(4, 2, torch.device("cuda"), ["triton"]) if s.peer]
    assert [(s.name, s.skip_reason is None) for s in peers] == [
        ("mamba-ssm selective_scan_fn", True), ("mamba-ssm selective_scan_ref", False)]
    assert "selective_scan_fn" in peers[1].skip_reason
    on_a_cpu = [s for s in subjects.selective_scan_subjects(4, 2, torch.device("cpu"), ["scan"]) if s.peer]
    assert [(s.name, s.skip_reason) for s in on_a_cpu] == [("mamba-ssm selective_scan_ref", None)]


def test_flops_of_a_row_are_those_of_the_mode_it_ran_in(monkeypatch) -> None:
    """auto is counted in the mode it resolves to on the device: S4D's FFT convolution where auto
    picks fft, the recurrence where it picks another mode (as the Triton kernels on a GPU)."""
    cfg = models.preset("s4d", d_model=16, d_state=8)
    point = Point(name="s4d", preset="s4d", overrides={}, cfg=cfg)
    counted = lambda mode: models.flops_per_token(cfg.with_(mode=mode), length=256)  # noqa: E731
    assert counted("fft") != counted("scan")
    [auto] = point_subjects(point, torch.device("cpu"), ["auto"])
    assert auto.flops(256) == counted("fft")  # auto on a CPU: the FFT convolution
    monkeypatch.setattr(models.SSMLayer, "resolve_mode", lambda self, device: "scan")
    [auto] = point_subjects(point, torch.device("cpu"), ["auto"])
    assert auto.flops(256) == counted("scan")


def test_saved_tensor_fallback_of_the_no_grad_forward_is_its_output() -> None:
    """Where the profiler is missing, memory falls back to saved tensors: the no_grad forward
    saves none (its output alone), the forward for backward saves its activations."""
    layer = models.SSMLayer(models.preset("s4d", d_model=8, d_state=4, mode="scan"))
    workload = Workload(layer, (torch.randn(2, 16, 8),))
    forward, for_backward = (_saved_tensor_bytes(workload, grad) for grad in (False, True))
    assert forward == workload.output_bytes == 2 * 16 * 8 * 4
    assert for_backward > 4 * forward


def test_rows_of_an_interrupted_job_do_not_claim_it_finished(tmp_path) -> None:
    """The parquet is rewritten after each series so that an interrupted job keeps what it
    measured: those rows must not carry a finished_at (the job never finished)."""
    from ablate.bench import run_bench as run_job

    settings = resolve(compose_bench(tmp_path, "device=cpu", "peers=false", "step=false", "modes=[scan]",
                                     "points=presets", "scale.lengths=[8]"))

    def interrupt(row) -> None:
        if row["name"] == "s4d":  # Ctrl-C during the second series
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_job(settings, "interrupted", on_row=interrupt)
    kept = pd.read_parquet(os.path.join(str(tmp_path), "bench", "interrupted.parquet"))
    assert list(kept["name"]) == ["s5"] and kept["finished_at"].isna().all()
    frame, _ = run_job(settings, "whole")
    assert frame["finished_at"].notna().all() and (frame["finished_at"] >= frame["started_at"]).all()
