"""Stops as schedulers deliver them: SIGTERM or SIGINT to the whole process group (DataLoader workers included),
GNU `timeout`, torchrun, the `--time` budget; `--resume` (also `--resume auto`) then continues exactly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import assert_same_weights, epochs_in, train_args, weights_of
from typer.testing import CliRunner

from fcos_cli import checkpoint
from fcos_cli.cli import app
from fcos_cli.config import preset
from fcos_cli.data import open_split
from fcos_cli.data.synthetic import write_demo_data
from fcos_cli.engine import stop as stop_module
from fcos_cli.engine import train as train_module
from fcos_cli.engine.common import loader
from fcos_cli.engine.stop import TIME_LIMIT, TimeBudget, TrainingInterrupted, start_workers, stop_on_signals
from fcos_cli.engine.train import train

WORKERS = ["--workers", "2"]  # appended: Click keeps an option's last value
STOPPED = re.compile(r"stopped at step (\d+) \(epoch (\d+)\)")


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """16 images, batch 2: 8 steps per epoch."""
    return write_demo_data(tmp_path_factory.mktemp("demo"), num_train=16, num_val=1, max_side=96, seed=4)


@pytest.fixture(scope="module")
def reference(demo: Path, tmp_path_factory) -> Path:
    """last.safetensors of 2 uninterrupted epochs."""
    project = tmp_path_factory.mktemp("reference")
    result = CliRunner().invoke(app, [*train_args(demo, project, epochs=2), *WORKERS])
    assert result.exit_code == 0, result.output
    return project / "run" / "last.safetensors"


def _descendants(pid: int) -> list[int]:
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):  # gone meanwhile
            continue
    found, todo = [], [pid]
    while todo:
        pid = todo.pop()
        children = [child for child, parent in parents.items() if parent == pid]
        found += children
        todo += children
    return found


def _start_and_wait_for_workers(command: list[str], processes: int) -> subprocess.Popen:
    """Start COMMAND in its own session (its own process group, as a batch job) and return once it has
    `processes` descendants: the trainer's DataLoader workers are up, an epoch is under way."""
    process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    deadline = time.monotonic() + 45
    while len(_descendants(process.pid)) < processes:
        assert process.poll() is None, f"ended before its data workers started: {process.communicate()}"
        assert time.monotonic() < deadline, "the data workers did not start"
        time.sleep(0.05)
    return process


def _check_saved_at_the_step_reached(err: str, last: Path) -> None:
    assert "Traceback" not in err and "DataLoader worker" not in err, err
    assert f"continue with: fcos train --resume {last}" in err, err
    step, epoch = map(int, STOPPED.search(err).groups())
    info = checkpoint.read_info(last)
    assert info.step == step and step < 16  # the step reached, before the end
    assert info.epoch in (epoch - 1, epoch)  # inside epoch `epoch`, or at its end


@pytest.mark.parametrize("how, code", [("sigterm-to-group", 143), ("sigint-to-group", 130), ("timeout", 124)])
def test_a_stop_sent_to_the_process_group_saves_and_resume_is_exact(how: str, code: int, demo: Path, tmp_path: Path,
                                                                    reference: Path) -> None:
    command = [sys.executable, "-m", "fcos_cli", *train_args(demo, tmp_path, epochs=2), *WORKERS]
    if how == "timeout":  # SIGALRM is how GNU timeout's time runs out: it sends SIGTERM to the job and its group
        process = _start_and_wait_for_workers(["timeout", "-s", "TERM", "300", *command], processes=3)
        os.kill(process.pid, signal.SIGALRM)
    else:
        process = _start_and_wait_for_workers(command, processes=2)
        os.killpg(process.pid, signal.SIGTERM if how == "sigterm-to-group" else signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == code, err
    last = tmp_path / "run" / "last.safetensors"
    _check_saved_at_the_step_reached(err, last)

    resumed = CliRunner().invoke(app, ["train", "--resume", str(last), *WORKERS])
    assert resumed.exit_code == 0, resumed.output
    assert epochs_in(tmp_path / "run") == [1, 2]
    assert_same_weights(weights_of(last), weights_of(reference))


def test_torchrun_stopped_by_sigterm_to_its_group_resumes_exactly(tmp_path: Path) -> None:
    demo = write_demo_data(tmp_path / "demo", num_train=12, num_val=1, max_side=96, seed=5)  # 3 steps per rank

    def torchrun(project: Path, *args: str) -> list[str]:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "fcos_cli",
                *(args or train_args(demo, project, epochs=2)), "--workers", "1"]

    reference = subprocess.Popen(torchrun(tmp_path / "reference"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True)  # meanwhile: the machine has two cores
    process = _start_and_wait_for_workers(torchrun(tmp_path / "cut"), processes=4)  # 2 ranks, a worker each
    os.killpg(process.pid, signal.SIGTERM)  # torchrun passes it on to each rank's process group
    _, err = process.communicate(timeout=40)
    last = tmp_path / "cut" / "run" / "last.safetensors"
    # torchrun itself ends with its own SignalException traceback; the ranks stop cleanly.
    assert "/fcos_cli/" not in err and "DataLoader worker" not in err, err
    assert "continue with: fcos train --resume" in err, err
    step = int(STOPPED.search(err).group(1))
    assert checkpoint.read_info(last).step == step < 6
    assert reference.wait(timeout=40) == 0, reference.communicate()[1][-3000:]

    resumed = subprocess.run(torchrun(tmp_path, "train", "--resume", str(last)), capture_output=True, text=True,
                             timeout=40)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    parameters = [name for name, _ in checkpoint.load(last)[0].named_parameters()]
    ours, theirs = weights_of(last), weights_of(tmp_path / "reference" / "run" / "last.safetensors")
    assert_same_weights({k: ours[k] for k in parameters}, {k: theirs[k] for k in parameters})


def test_time_budget_stops_before_it_runs_out_saved_and_resumable(demo: Path, tmp_path: Path, reference: Path,
                                                                  monkeypatch) -> None:
    index, val = open_split(demo / "train.json"), open_split(demo / "val.json")
    cfg = checkpoint.read_info(reference).config  # the reference run's own config, with a budget
    cfg.train.time_limit = 3.0
    original = train_module._step

    def slow_step(*args, **kwargs):  # 16 steps of at least 0.4 s: the run cannot fit in 3 s
        time.sleep(0.4)
        return original(*args, **kwargs)

    monkeypatch.setattr(train_module, "_step", slow_step)
    with pytest.raises(TrainingInterrupted) as stop:
        train(cfg, index, val, tmp_path, torch.device("cpu"))
    # No wall-clock assertion (a loaded machine only stops it sooner): the steps it ran fit in the budget.
    assert stop.value.cause == TIME_LIMIT and 1 <= stop.value.step and stop.value.step * 0.4 <= 3.0
    assert checkpoint.read_info(stop.value.last).step == stop.value.step

    monkeypatch.setattr(train_module, "_step", original)
    resumed = CliRunner().invoke(app, ["train", "--resume", str(stop.value.last)])  # no --time: no budget
    assert resumed.exit_code == 0, resumed.output
    assert_same_weights(weights_of(stop.value.last), weights_of(reference))


def test_time_option_stops_the_command_before_its_budget_with_exit_124(demo: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, [*train_args(demo, tmp_path, epochs=50), "--time", "3s"])
    assert result.exit_code == 124, result.output  # 50 epochs do not fit in 3 s: the budget stopped it
    assert "time limit reached: stopped at step" in result.output and "fcos train --resume" in result.output


def test_budget_reserves_the_slowest_step_and_what_follows() -> None:
    budget = TimeBudget(10.0, start=time.perf_counter() - 5.0, val_batches=3)  # 5 s gone
    assert not TimeBudget(None, start=0.0).exhausted(epoch_ends=True)
    budget.slowest["step"] = 1.0
    assert not budget.exhausted(epoch_ends=False)  # 5 + a step + a save (a step's worth) < 10
    assert budget.exhausted(epoch_ends=True)  # 5 + a step + 3 validation batches, plots, 2 saves > 10
    budget.slowest["end"] = 2.0  # measured: cheaper than guessed
    assert not budget.exhausted(epoch_ends=True)
    budget.saved(4.0)  # a slow disk
    assert budget.exhausted(epoch_ends=False)


def test_a_second_stop_signal_acts_at_once_but_one_delivered_twice_counts_once(monkeypatch) -> None:
    # Python's own Ctrl-C handler, however pytest was started (a background job of a script starts with SIGINT ignored)
    launched = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with stop_on_signals() as signalled:
            assert signalled() == 0
            signal.raise_signal(signal.SIGTERM)
            signal.raise_signal(signal.SIGTERM)  # e.g. GNU timeout: to the process, then to its group
            assert signalled() == signal.SIGTERM
            monkeypatch.setattr(stop_module, "SAME_STOP_S", 0.0)
            with pytest.raises(KeyboardInterrupt):  # Python's own Ctrl-C, as without us
                signal.raise_signal(signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, launched)


def test_resume_auto_starts_fresh_then_continues(demo: Path, tmp_path: Path, reference: Path) -> None:
    args = [*train_args(demo, tmp_path, epochs=2), *WORKERS, "--resume", "auto"]
    first = CliRunner().invoke(app, [*args, "--time", "0.01s"])  # one step, then out of time
    assert first.exit_code == 124, first.output
    assert "time limit reached: stopped at step 1 " in first.output
    again = CliRunner().invoke(app, args)  # the same command (a requeued job), without the tiny budget
    assert again.exit_code == 0, again.output
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # the same folder, not run2
    assert epochs_in(tmp_path / "run") == [1, 2]
    assert_same_weights(weights_of(tmp_path / "run" / "last.safetensors"), weights_of(reference))


def test_resume_auto_refuses_other_options(demo: Path, tmp_path: Path) -> None:
    first = CliRunner().invoke(app, [*train_args(demo, tmp_path, epochs=1), "--resume", "auto"])
    assert first.exit_code == 0, first.output
    changed = CliRunner().invoke(app, [*train_args(demo, tmp_path, epochs=3), "--lr", "0.01", "--resume", "auto"])
    assert changed.exit_code == 2
    assert "--resume auto" in changed.output and "train.epochs 3 (the run's: 1)" in changed.output
    assert "train.lr 0.01 (the run's: 0.003)" in changed.output and "Traceback" not in changed.output


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"  # not ended (a zombie)
    except OSError:
        return False


def test_data_workers_ignore_a_stop_sent_by_others_but_end_when_their_parent_terminates_them(demo: Path) -> None:
    cfg = preset("improved")
    cfg.data.img_size, cfg.train.batch_size = 64, 2
    batches = start_workers(loader(open_split(demo / "train.json"), cfg, (0.5, 0.5, 0.5), train=True, workers=1))
    next(batches)
    (worker,) = _descendants(os.getpid())
    for name in ("TERM", "INT"):  # from another process, as a scheduler signals the whole group
        subprocess.run(["kill", f"-{name}", str(worker)], check=True)
    next(batches)  # the worker goes on
    assert _running(worker)
    os.kill(worker, signal.SIGTERM)  # from its parent: multiprocessing's terminate(), e.g. at exit
    deadline = time.monotonic() + 10
    while _running(worker):
        assert time.monotonic() < deadline, "the worker did not end"
        time.sleep(0.05)
    del batches
