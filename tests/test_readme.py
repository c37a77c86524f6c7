"""The README's command sequences run top to bottom, as a newcomer would type them, on tiny sizes.

A ```bash block opts in with a ``<!-- readme-test: GROUP -->`` line right above it. The blocks of
one group run in document order in one scratch folder (``recipes/`` linked in), so a block may
use what an earlier one of its group wrote; groups are independent tests (xdist runs them side
by side). A group that starts from another group's output names what it needs in
:data:`SETUP`, as the README's prose does ("the tiny model made in Training your own").

Sizes shrink only through options the README and ``--help`` document, applied per sub-command
by :func:`shrink`: ``--n`` of ``data synth``, ``--epochs`` of ``retrieval train``,
``--num-samples`` of ``eval``, and for ``posrft train`` the launcher's ``--accelerate-config
recipes/accelerate/cpu.yaml --num-processes 1`` (one process; the 2-rank DeepSpeed path is
tested in test_train_distributed.py and test_orphans.py) plus recipe fields as ``--field value``
overrides. A command the rules do not know fails the fast test below, so a new block either runs
or says why not. One substitution: the skeleton recipes start from the pretrained folder
(``runs/smol-dino``); here the tiny model stands in for it (:data:`STAND_IN`, the override the
README gives for it), so the group stays a test of the commands and the stage chain, not of
SmolLM2's speed (the pretrained reading is tested in test_skeleton_reader.py and
test_pretrained.py).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
MARKED = re.compile(r"^<!--\s*readme-test:\s*([\w-]+)\s*-->[ \t]*\n```(?:bash|sh|console)?[ \t]*\n(.*?)^```",
                    re.S | re.M)  # fmt: skip
#: commands a group needs first, which the README says come from another section
SETUP = {"skeleton": [["posrft", "model", "init-tiny", "runs/tiny"]]}
#: recipe start folder -> the overrides that put the tiny model in its place (README, SkeletonLLM)
STAND_IN = {"runs/smol-dino": ["--model_name_or_path", "runs/tiny", "--vision_size", "56"]}


def readme_groups(text: str) -> dict[str, list[list[str]]]:
    """``{group: commands}`` of the marked blocks, in order, as argv lists (comments dropped)."""
    groups: dict[str, list[list[str]]] = {}
    for group, block in MARKED.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            if argv:
                groups.setdefault(group, []).append(argv)
    return groups


def _set(argv: list[str], flag: str, value: str) -> list[str]:
    argv = list(argv)
    if flag in argv:
        argv[argv.index(flag) + 1] = value
    else:
        argv += [flag, value]
    return argv


def shrink(argv: list[str], cwd: Path) -> list[str]:
    """The same command on tiny sizes (documented options only); raises for an unknown one."""
    if argv[0] != "posrft" or len(argv) < 2:
        raise ValueError(f"the README test runs posrft commands only: {shlex.join(argv)}")
    sub = argv[1:3]
    if sub == ["model", "init-tiny"]:
        return argv
    if sub == ["data", "synth"]:
        task = argv[argv.index("--task") + 1]
        return _set(argv, "--n", "6" if task == "actions" else "60")  # 6: a subject per split
    if sub == ["retrieval", "train"]:
        return _set(argv, "--epochs", "1")
    if argv[1] == "eval":
        return _set(argv, "--num-samples", "8")
    if argv[1] == "train":
        recipe = yaml.safe_load((cwd / argv[2]).read_text())
        extra = ["--accelerate-config", "recipes/accelerate/cpu.yaml", "--num-processes", "1",
                 "--max_steps", "2", "--save_steps", "0", "--logging_steps", "1"]  # fmt: skip
        if recipe.get("trainer") == "hygrpo":  # in-process sampling: Ray is tested elsewhere
            extra += ["--num_rollout_workers", "0", "--pose_grid_steps", "0"]
        if recipe.get("trainer") == "skeleton":
            extra += ["--clips_per_class", "6", "--clip_frames", "16", "--num_render_frames", "2",
                      "--eval_at_end", "false"]  # fmt: skip
        extra += STAND_IN.get(recipe.get("model_name_or_path"), [])
        return argv + extra
    raise ValueError(f"no shrink rule for {shlex.join(argv)}: add one to tests/test_readme.py")


GROUPS = readme_groups((ROOT / "README.md").read_text())
EXPECTED = {  # what each group must leave behind (a check that the commands did their work)
    "text2pose": ["runs/text2pose/hygrpo/final/pose_head.safetensors", "runs/text2pose/eval.json"],
    "skeleton": ["runs/skeleton/refine/final"],
}


def test_marked_blocks_parse_and_every_command_has_a_shrink_rule(tmp_path):
    assert set(GROUPS) == set(EXPECTED) and sum(map(len, GROUPS.values())) >= 10, GROUPS
    readme = (ROOT / "README.md").read_text()
    assert all(shlex.join(v) in readme for v in STAND_IN.values()), "a stand-in not in the README"
    (tmp_path / "recipes").symlink_to(ROOT / "recipes")
    for commands in GROUPS.values():
        for argv in commands:
            shrink(argv, tmp_path)


def test_readme_blocks_parse_like_a_shell():
    text = ("<!-- readme-test: g -->\n```bash\nposrft a --x 1   # note\nposrft b \\\n  --y 'two words'\n```\n"
            "```bash\nposrft unmarked\n```\n")  # fmt: skip
    assert readme_groups(text) == {"g": [["posrft", "a", "--x", "1"], ["posrft", "b", "--y", "two words"]]}


@pytest.mark.slow
@pytest.mark.parametrize("group", sorted(EXPECTED))
def test_the_readme_runs_top_to_bottom(tmp_path, group):
    (tmp_path / "recipes").symlink_to(ROOT / "recipes")
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    for argv in SETUP.get(group, []) + GROUPS[group]:
        cmd = shrink(argv, tmp_path)
        t0 = time.monotonic()
        res = subprocess.run([sys.executable, "-m", "posrft.cli", *cmd[1:]], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=600)  # fmt: skip
        assert res.returncode == 0, f"{shlex.join(cmd)} failed:\n{(res.stdout + res.stderr)[-3000:]}"
        print(f"{time.monotonic() - t0:6.1f} s  {shlex.join(cmd)}")
    for path in EXPECTED[group]:
        assert (tmp_path / path).exists(), path
