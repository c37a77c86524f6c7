"""The README's command sequences run top to bottom, as a newcomer would type them, on tiny sizes.

A ```bash block opts in with an ``<!-- readme-test -->`` line right above it; blocks run in
document order in one scratch folder (``recipes/`` linked in), so a block may use what an earlier
one wrote. Sizes shrink only through options the README and ``--help`` document, applied per
sub-command by :func:`shrink`: ``--n`` of ``data synth``, ``--epochs`` of ``retrieval train``,
``--num-samples`` of ``eval``, and for ``posrft train`` the launcher's ``--num-processes 1`` plus
recipe fields as ``--field value`` overrides. A command the rules do not know fails the fast test
below, so a new block either runs or says why not.
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
MARKED = re.compile(r"^<!--\s*readme-test\s*-->[ \t]*\n```(?:bash|sh|console)?[ \t]*\n(.*?)^```", re.S | re.M)


def readme_commands(text: str) -> list[list[str]]:
    """The commands of the marked blocks, in order, as argv lists (comments dropped)."""
    commands = []
    for block in MARKED.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            if argv:
                commands.append(argv)
    return commands


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
        return _set(argv, "--n", "6" if task == "actions" else "60")  # 6: one per val/test split
    if sub == ["retrieval", "train"]:
        return _set(argv, "--epochs", "1")
    if argv[1] == "eval":
        return _set(argv, "--num-samples", "8")
    if argv[1] == "train":
        recipe = yaml.safe_load((cwd / argv[2]).read_text())
        extra = ["--num-processes", "1", "--max_steps", "2", "--save_steps", "0", "--logging_steps", "1"]
        if recipe.get("trainer") == "hygrpo":  # in-process sampling: Ray is tested elsewhere
            extra += ["--num_rollout_workers", "0", "--pose_grid_steps", "0"]
        if recipe.get("trainer") == "skeleton":
            extra += ["--clips_per_class", "6", "--eval_at_end", "false"]  # 6: a subject per split
        return argv + extra
    raise ValueError(f"no shrink rule for {shlex.join(argv)}: add one to tests/test_readme.py")


def test_marked_blocks_parse_and_every_command_has_a_shrink_rule(tmp_path):
    commands = readme_commands((ROOT / "README.md").read_text())
    assert len(commands) >= 8, commands
    (tmp_path / "recipes").symlink_to(ROOT / "recipes")
    for argv in commands:
        shrink(argv, tmp_path)


def test_readme_commands_parse_like_a_shell():
    text = "<!-- readme-test -->\n```bash\nposrft a --x 1   # note\nposrft b \\\n  --y 'two words'\n```\n"
    assert readme_commands(text) == [["posrft", "a", "--x", "1"], ["posrft", "b", "--y", "two words"]]
    assert readme_commands("```bash\nposrft unmarked\n```\n") == []


@pytest.mark.slow
def test_the_readme_runs_top_to_bottom(tmp_path):
    (tmp_path / "recipes").symlink_to(ROOT / "recipes")
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    for argv in readme_commands((ROOT / "README.md").read_text()):
        cmd = shrink(argv, tmp_path)
        t0 = time.monotonic()
        res = subprocess.run([sys.executable, "-m", "posrft.cli", *cmd[1:]], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=600)  # fmt: skip
        assert res.returncode == 0, f"{shlex.join(cmd)} failed:\n{(res.stdout + res.stderr)[-3000:]}"
        print(f"{time.monotonic() - t0:6.1f} s  {shlex.join(cmd)}")
    assert (tmp_path / "runs" / "text2pose" / "hygrpo" / "final" / "pose_head.safetensors").is_file()
    assert (tmp_path / "runs" / "text2pose" / "eval.json").is_file()
    assert (tmp_path / "runs" / "skeleton" / "refine" / "final").is_dir()
