"""Checkpoints under bad conditions: a crafted pickle is refused without running, a full disk or
a file-size limit leaves no partial checkpoint, a truncated trainer state falls back to the
previous checkpoint, a killed save's temporary folder is cleaned up. (Exact resume itself is
covered in test_train.py and, for 2 DeepSpeed ranks, in test_train_distributed.py.)"""

from __future__ import annotations

import errno
import json
import resource
import signal
import shutil

import pytest
import torch

from posrft.train.checkpoint import (CheckpointError, CheckpointWriteError, list_checkpoints,
                                     resolve_checkpoint)  # fmt: skip
from posrft.train.config import SFTConfig
from posrft.train.safe_load import UnsafeCheckpointError, scan_file, weights_only_loads


def _learner(tmp_path, width=8, **kw):
    from posrft.train.accelerator import make_accelerator
    from posrft.train.loop import Learner

    torch.manual_seed(0)
    cfg = SFTConfig(output_dir=str(tmp_path), report_to=["none"], max_steps=10, save_steps=1, **kw)
    model = torch.nn.Linear(width, width)
    return Learner(cfg, make_accelerator(cfg), model, run_name="t", total_steps=cfg.max_steps)


def _step(learner):
    with learner.accumulate():
        learner.backward(learner.model(torch.ones(1, learner.model.in_features)).pow(2).sum())
    learner.optimizer_step()


class _Sampler:
    def __init__(self):
        self.state = {}

    def load_state_dict(self, state):
        self.state = state


class _RunsCode:
    """What a malicious checkpoint holds: unpickling it calls ``Path.touch`` on a marker."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_a_crafted_pickle_in_a_checkpoint_is_refused_and_never_runs(tmp_path):
    learner = _learner(tmp_path / "run")
    _step(learner)
    ckpt = learner.checkpoint(1, {"seen": 1})
    marker = tmp_path / "pwned"
    optim = next(p for p in ckpt.iterdir() if p.name.startswith("optimizer"))
    torch.save({"state": {}, "param_groups": [], "x": _RunsCode(marker)}, optim)
    fresh = _learner(tmp_path / "run", resume_from_checkpoint="latest")
    with pytest.raises(UnsafeCheckpointError, match=rf"{optim.name}' holds a pickled reference to "
                                                    r"builtins.getattr, pathlib.*could run code"):
        fresh.resume(_Sampler())
    assert not marker.exists()
    # Even a path around the static scan cannot unpickle it: torch.load is weights-only inside.
    with weights_only_loads(), pytest.raises(UnsafeCheckpointError, match="weights-only load does not allow"):
        torch.load(optim, weights_only=False)
    assert not marker.exists()
    assert torch.load is not None and scan_file(optim)  # the patch is gone after the block


def test_a_raw_pickle_is_refused_unread(tmp_path):
    import pickle

    path = tmp_path / "optimizer.bin"
    path.write_bytes(pickle.dumps(_RunsCode(tmp_path / "pwned")))
    with pytest.raises(UnsafeCheckpointError, match="not a readable torch.save archive"):
        scan_file(path)
    assert not (tmp_path / "pwned").exists()


def test_an_honest_checkpoint_resumes_weights_only(tmp_path):
    learner = _learner(tmp_path / "run")
    _step(learner)
    learner.checkpoint(1, {"seen": 7})
    weights = {k: v.clone() for k, v in learner.model.state_dict().items()}
    exp_avg = [learner.optimizer.state[p]["exp_avg"].clone() for p in learner.model.parameters()]
    fresh = _learner(tmp_path / "run", resume_from_checkpoint="latest")
    sampler = _Sampler()
    step, state = fresh.resume(sampler)
    assert step == 1 and sampler.state == {"seen": 7} and fresh.optimizer_steps == 1
    assert all(torch.equal(weights[k], v) for k, v in fresh.model.state_dict().items())
    assert all(torch.equal(a, fresh.optimizer.state[p]["exp_avg"])
               for a, p in zip(exp_avg, fresh.model.parameters()))  # fmt: skip


def test_a_file_size_limit_mid_save_leaves_no_partial_checkpoint(tmp_path):
    """A real failed write: RLIMIT_FSIZE makes the kernel refuse writes past 64 KiB (EFBIG), as
    a full disk refuses them with ENOSPC; the optimizer file (2 x 1 MiB of Adam state) fails."""
    learner = _learner(tmp_path / "run", width=512)
    _step(learner)
    first = learner.checkpoint(1, {})
    _step(learner)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, hard))
    try:
        with pytest.raises(CheckpointWriteError, match=r"could not write checkpoint-2 under .*: .*"
                                                       r"The partial checkpoint was removed"):
            learner.checkpoint(2, {})
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old)
    names = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert "checkpoint-2" not in names and not any(n.startswith(".checkpoint") for n in names)
    assert list_checkpoints(tmp_path / "run") == [first]  # the previous one is intact


def test_a_full_disk_is_reported_as_such(tmp_path, monkeypatch):
    learner = _learner(tmp_path / "run")
    _step(learner)

    def save_then_fill_up(output_dir, **kw):  # part of the files land, then the disk is full
        from pathlib import Path

        Path(output_dir).mkdir(parents=True, exist_ok=True)
        (Path(output_dir) / "model.safetensors").write_bytes(b"\0" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(learner.acc, "save_state", save_then_fill_up)
    with pytest.raises(CheckpointWriteError, match=r"checkpoint-1 .*: the disk is full; \d+ MiB free") as info:
        learner.checkpoint(1, {})
    assert info.value.errno == errno.ENOSPC
    assert not any(p.name.startswith((".checkpoint", "checkpoint")) for p in (tmp_path / "run").iterdir())


def test_latest_skips_a_truncated_trainer_state(tmp_path, caplog):
    learner = _learner(tmp_path / "run")
    _step(learner)
    good = learner.checkpoint(1, {"seen": 1})
    _step(learner)
    bad = learner.checkpoint(2, {"seen": 2})
    text = (bad / "trainer_state.json").read_text()
    (bad / "trainer_state.json").write_text(text[: len(text) // 2])
    with caplog.at_level("WARNING"):
        assert resolve_checkpoint("latest", str(tmp_path / "run")) == good
    assert "skipping checkpoint-2" in caplog.text and "not valid JSON" in caplog.text
    with pytest.raises(CheckpointError, match=r"checkpoint-2/trainer_state.json' is not valid JSON"):
        resolve_checkpoint(str(bad), str(tmp_path / "run"))
    fresh = _learner(tmp_path / "run", resume_from_checkpoint="latest")
    sampler = _Sampler()
    assert fresh.resume(sampler)[0] == 1 and sampler.state == {"seen": 1}
    (good / "trainer_state.json").write_text("[]")
    with pytest.raises(CheckpointError, match="none of the 2 checkpoints .* has a readable trainer_state.json"):
        resolve_checkpoint("latest", str(tmp_path / "run"))


def test_a_killed_saves_temporary_folder_is_removed_at_start(tmp_path):
    learner = _learner(tmp_path / "run")
    _step(learner)
    ckpt = learner.checkpoint(1, {})
    shutil.copytree(ckpt, tmp_path / "run" / ".checkpoint-2.tmp")  # as if killed mid-save
    fresh = _learner(tmp_path / "run", resume_from_checkpoint="latest")
    assert fresh.resume(_Sampler())[0] == 1
    assert not (tmp_path / "run" / ".checkpoint-2.tmp").exists()
    assert json.loads((ckpt / "trainer_state.json").read_text())["step"] == 1
