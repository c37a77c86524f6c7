"""``posrft train``'s pre-flight: everything a run needs, checked once, before any rank starts.

Without it every mistake surfaced inside each rank after accelerate, torch.distributed,
DeepSpeed and the model had loaded (12–57 s), printed once per rank inside torchrun's traceback.
:func:`preflight` runs in the launcher's own process and checks, without loading a model:

* the recipe and the overrides (unknown keys with "did you mean", types, ranges: the config
  classes' own checks) and the accelerate config;
* the model folder (``config.json`` parses, every ``*.safetensors`` header and length);
* the dataset folder (split present, not empty, the columns the trainer and the rewards need);
* every reward entry (found, importable, ``kwargs`` accepted, paths in ``kwargs`` exist);
* the Ray address (reachable) or the local cluster's size against this machine;
* the body-model folder and file; the output folder (writable); the checkpoint to resume
  (readable state, no pickled code).

It collects the problems and raises one :class:`PreflightError` listing them (reward code is
imported, which takes seconds, only once everything else passed); notes (the stand-in body
model, DeepSpeed's first-run op build) come back in :class:`Plan` for the launcher to print.
"""

from __future__ import annotations

import importlib.util
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from posrft.filecheck import FileCheckError, check_json, check_safetensors
from posrft.train.recipe import RecipeError, parse_recipe, pick_config, read_recipe

DEFAULT_ACCELERATE = Path("recipes/accelerate/zero2.yaml")
SKELETON_TRAINERS = ("skeleton",)
#: columns each learner reads from its training split
TRAINER_COLUMNS = {"sft": ["prompt", "completion", "gt_pose_6d"], "hygrpo": ["prompt"]}


class PreflightError(ValueError):
    """Everything wrong with a run, one problem per line."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__(self.problems[0] if len(self.problems) == 1 else
                         f"{len(self.problems)} problems:\n" + "\n".join(f"  - {p}" for p in self.problems))  # fmt: skip


@dataclass
class Plan:
    """What the launcher needs after a successful pre-flight."""

    recipe: Path
    module: str  # the ``-m`` module accelerate launches
    cfg: Any
    overrides: list[str]
    accelerate_config: Path | None
    accelerate: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    dataset_columns: list[str] | None = None

    @property
    def num_processes(self) -> int:
        return int(self.accelerate.get("num_processes", 1) or 1)

    @property
    def num_machines(self) -> int:
        return int(self.accelerate.get("num_machines", 1) or 1)


#: trainer name -> its config class, imported only for the recipe at hand (the skeleton one
#: pulls in the renderer and the action data: seconds of imports a text recipe does not need)
CONFIG_CLASSES = {"sft": "posrft.train.config:SFTConfig", "hygrpo": "posrft.train.config:HyGRPOConfig",
                  "skeleton": "posrft.skeleton.config:SkeletonConfig"}  # fmt: skip


class _LazyClasses(dict):
    def __getitem__(self, kind: str) -> type:
        module, _, name = CONFIG_CLASSES[kind].partition(":")
        return getattr(importlib.import_module(module), name)

    def __contains__(self, kind: object) -> bool:
        return kind in CONFIG_CLASSES

    def __iter__(self):
        return iter(CONFIG_CLASSES)

    def __len__(self) -> int:
        return len(CONFIG_CLASSES)


def config_classes() -> dict[str, type]:
    """``{trainer: config class}``, each class imported when it is looked up."""
    return _LazyClasses()


def learner_module(kind: str) -> str:
    return "posrft.skeleton" if kind in SKELETON_TRAINERS else "posrft.train"


def preflight(recipe: str | os.PathLike, overrides: Sequence[str] = (), accelerate_config: str | None = None,
              num_processes: int | None = None, deep: bool = True) -> Plan:  # fmt: skip
    """Check a run; return its :class:`Plan` or raise :class:`PreflightError`.

    ``deep=False`` stops after the recipe and the accelerate config (no file or network checks).
    """
    recipe = Path(recipe)
    overrides = list(overrides)
    try:
        read_recipe(recipe)
        argv = ["--config", str(recipe), *overrides]
        classes = config_classes()
        cls = pick_config(classes, argv)
        cfg = parse_recipe(cls, argv)
    except (RecipeError, ValueError, TypeError) as err:
        raise PreflightError([str(err)]) from None
    kind = cls.KIND
    problems: list[str] = []
    plan = Plan(recipe, learner_module(kind), cfg, overrides, None)
    _accelerate(plan, accelerate_config, num_processes, problems)
    if deep and not problems:
        # Files, folders and the network first: cheap. Reward code is imported only when they
        # pass (the built-in rewards pull in the body model, roma and datasets: seconds).
        tiers = [[_model, _dataset, _output, _resume, _body, _trackers]]
        if kind == "hygrpo":
            tiers[0].append(_ray)
            tiers.append([_rewards])
        if kind == "skeleton":
            tiers[0].append(_teacher)
        for checks in tiers:
            for check in checks:
                try:
                    check(plan, problems)
                except (FileCheckError, RecipeError, ValueError, TypeError, OSError, KeyError) as err:
                    problems.append(str(err).strip("'\""))
            if problems:
                break
        _deepspeed_note(plan)
    if problems:
        raise PreflightError(problems)
    return plan


# ---------------------------------------------------------------------------- accelerate
def _accelerate(plan: Plan, flag: str | None, num_processes: int | None, problems: list[str]) -> None:
    import yaml

    path = flag or getattr(plan.cfg, "accelerate_config", None)
    source = "--accelerate-config" if flag else "the recipe's accelerate_config"
    if path is None and DEFAULT_ACCELERATE.is_file():
        path, source = str(DEFAULT_ACCELERATE), "the default"
    if path is None:
        return
    p = Path(path)
    if not p.is_file():
        problems.append(f"accelerate config {str(path)!r} (from {source}) does not exist")
        return
    try:
        spec = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        problems.append(f"accelerate config {str(path)!r} is not valid YAML: {err}")
        return
    if not isinstance(spec, dict):
        problems.append(f"accelerate config {str(path)!r} must be a YAML mapping")
        return
    plan.accelerate_config, plan.accelerate = p, spec
    if num_processes is not None:
        if num_processes < 1:
            problems.append(f"--num-processes must be >= 1, got {num_processes}")
        spec["num_processes"] = num_processes
    n = spec.get("num_processes", 1)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        problems.append(f"accelerate config {str(path)!r}: num_processes must be an integer >= 1, got {n!r}")


# ---------------------------------------------------------------------------- model
def check_model_folder(path: str, what: str = "model_name_or_path") -> list[str]:
    """Problems with a policy folder: exists, ``config.json`` parses, safetensors sound."""
    if not path:
        return [f"{what} is empty: give a model folder (e.g. from `posrft model init-tiny`)"]
    folder = Path(path)
    if not folder.is_dir():
        hub_like = re.fullmatch(r"[\w.-]+/[\w.-]+", path) is not None  # org/name
        hint = " (a hub id? posrft loads local folders only, no downloads)" if hub_like else ""
        return [f"{what}: model folder {path!r} does not exist{hint}"]
    problems = []
    if not (folder / "config.json").is_file():
        problems.append(f"{what}: {path!r} has no config.json (not a save_pretrained folder)")
    else:
        try:
            check_json(folder / "config.json", "model config")
        except FileCheckError as err:
            problems.append(f"{what}: {err}")
    weights = sorted(folder.glob("*.safetensors"))
    if not weights and not list(folder.glob("*.bin")):
        problems.append(f"{what}: {path!r} has no *.safetensors weights")
    for file in weights:
        try:
            check_safetensors(file)
        except FileCheckError as err:
            problems.append(f"{what}: {err}")
    return problems


def _model(plan: Plan, problems: list[str]) -> None:
    problems += check_model_folder(plan.cfg.model_name_or_path)


# ---------------------------------------------------------------------------- dataset
def dataset_split_info(path: str, split: str) -> tuple[list[str], int]:
    """``(columns, rows)`` of a ``save_to_disk`` split, read from its metadata and Arrow files
    (no ``datasets`` import); ``ValueError``/``FileNotFoundError`` name what is missing."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {path!r} does not exist")
    if (root / "dataset_dict.json").is_file():
        splits = check_json(root / "dataset_dict.json", "dataset index").get("splits", [])
        if split not in splits:
            from posrft.train.recipe import did_you_mean

            raise ValueError(f"dataset {path!r} has no split {split!r}{did_you_mean(split, splits)}; "
                             f"splits: {splits}")  # fmt: skip
        folder = root / split
    elif (root / "state.json").is_file():
        folder = root  # a single Dataset: taken as the split
    else:
        raise ValueError(f"dataset folder {path!r} is not a saved dataset (no dataset_dict.json or "
                         "state.json; write one with `posrft data synth`)")  # fmt: skip
    info = check_json(folder / "dataset_info.json", "dataset info")
    state = check_json(folder / "state.json", "dataset state")
    columns = list((info.get("features") or {}).keys())
    import pyarrow as pa

    rows = 0
    for entry in state.get("_data_files", []):
        file = folder / entry["filename"]
        try:
            with pa.memory_map(str(file)) as source:
                rows += sum(b.num_rows for b in pa.ipc.open_stream(source))
        except (OSError, pa.ArrowInvalid) as err:
            raise ValueError(f"dataset file {str(file)!r} is unreadable ({err})") from None
    if state.get("_indices_data_files"):
        rows = -1  # a selection: the row count needs the indices; leave it to the loader
    return columns, rows


def _dataset(plan: Plan, problems: list[str]) -> None:
    cfg = plan.cfg
    kind = cfg.KIND
    if kind == "skeleton" and not cfg.dataset_path:
        return  # built in memory
    if not cfg.dataset_path:
        problems.append("dataset_path is empty: give the folder written by `posrft data synth`")
        return
    columns, rows = dataset_split_info(cfg.dataset_path, cfg.dataset_train_split)
    plan.notes.append(f"dataset: {cfg.dataset_path} split {cfg.dataset_train_split!r}: "
                      f"{rows if rows >= 0 else '?'} rows")  # fmt: skip
    plan.dataset_columns = columns
    if rows == 0:
        problems.append(f"dataset {cfg.dataset_path!r} split {cfg.dataset_train_split!r} is empty "
                        "(0 rows)")  # fmt: skip
    missing = [c for c in TRAINER_COLUMNS.get(kind, []) if c not in columns]
    if missing:
        problems.append(f"dataset {cfg.dataset_path!r} split {cfg.dataset_train_split!r} lacks "
                        f"column(s) {missing} the {kind} trainer needs; it has {columns}")  # fmt: skip
    check_dataset_images(cfg.dataset_path, cfg.dataset_train_split)


def check_dataset_images(path: str, split: str) -> int:
    """Verify every image of a saved split (a corrupt PNG row is named before training, not met
    mid-run); returns how many were checked."""
    from posrft.filecheck import check_image_cells, image_columns

    root = Path(path)
    folder = root / split if (root / "dataset_dict.json").is_file() else root
    info = check_json(folder / "dataset_info.json", "dataset info")
    files = [folder / e["filename"] for e in check_json(folder / "state.json", "dataset state").get("_data_files", [])]
    return sum(check_image_cells(files, col, f"dataset {path!r} split {split!r}")
               for col in image_columns(info.get("features") or {}))  # fmt: skip


# ---------------------------------------------------------------------------- rewards
def _rewards(plan: Plan, problems: list[str]) -> None:
    from rewards.registry import check_reward_kwargs, lookup_reward, required_columns
    from rewards.runner import RewardSpec

    columns = plan.dataset_columns
    available = None
    if columns is not None:
        available = [c for c in columns if c not in ("prompt", "images")]
        available += ["reference_completion"] if "completion" in columns else []
    labels = []
    for i, entry in enumerate(plan.cfg.rewards):
        try:
            spec = RewardSpec.from_config(entry)
            labels.append(spec.label)
            obj, factory = lookup_reward(spec.func)
            check_reward_kwargs(obj, factory, spec.kwargs, spec.label)
        except (ValueError, TypeError, KeyError, AttributeError, ImportError, OSError, SyntaxError) as err:
            text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
            problems.append(f"rewards[{i}]: {text}")
            continue
        for key, value in spec.kwargs.items():
            if (key.endswith(("_path", "_dir", "_file")) and isinstance(value, str) and value
                    and not Path(value).expanduser().exists()):  # fmt: skip
                hint = ""
                if spec.label == "semantic" or key == "model_path":
                    hint = " (train one with `posrft retrieval train --data DATA --out DIR --seed 0 --subset a`)"
                problems.append(f"rewards[{i}] ({spec.label}): kwargs.{key} = {value!r} does not exist{hint}")
        if available is not None and not factory:
            missing = [c for c in required_columns(obj) if c not in spec.kwargs and c not in available]
            if missing:
                problems.append(f"rewards[{i}] ({spec.label}) needs the dataset column(s) "
                                f"{', '.join(repr(c) for c in missing)}, which "
                                f"{plan.cfg.dataset_path!r} lacks (it has {sorted(available)})")  # fmt: skip
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        problems.append(f"rewards: names must be unique; repeated: {dupes} (set 'name')")


# ---------------------------------------------------------------------------- Ray
def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def check_ray_address(address: str, timeout_s: float = 2.0) -> str | None:
    """A problem with ``address`` (``host:port``, ``ray://host:port`` or ``auto``), or None when
    something listens there."""
    if address == "auto":
        if os.environ.get("RAY_ADDRESS") or Path("/tmp/ray/ray_current_cluster").is_file():
            return None
        return "ray_address 'auto': no running Ray cluster found on this machine (start one with `ray start --head`)"
    target = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return f"ray_address {address!r} is not HOST:PORT, ray://HOST:PORT or 'auto'"
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return None
    except OSError as err:
        reason = err.strerror or type(err).__name__
        return f"ray_address {address!r}: cannot reach {host}:{port} ({reason}); is the cluster running?"


def _ray(plan: Plan, problems: list[str]) -> None:
    cfg = plan.cfg
    if cfg.num_rollout_workers == 0:
        return
    if cfg.ray_address:
        problem = check_ray_address(cfg.ray_address)
        if problem:
            problems.append(problem)
        return
    need = cfg.num_rollout_workers * cfg.worker_num_cpus
    have = usable_cpus()
    if need > have:
        problems.append(
            f"num_rollout_workers × worker_num_cpus = {cfg.num_rollout_workers} × {cfg.worker_num_cpus:g} "
            f"= {need:g} CPUs, but this machine has {have}: the local Ray cluster would be started "
            "with that many logical CPUs and oversubscribe the cores. Lower worker_num_cpus (it may "
            "be fractional) or join a cluster with ray_address"
        )
    if cfg.worker_num_gpus > 0:
        import torch

        gpus = torch.cuda.device_count()
        if cfg.num_rollout_workers * cfg.worker_num_gpus > gpus:
            problems.append(f"num_rollout_workers × worker_num_gpus = "
                            f"{cfg.num_rollout_workers * cfg.worker_num_gpus:g} GPUs, but this "
                            f"machine has {gpus}")  # fmt: skip


# ---------------------------------------------------------------------------- files
def _output(plan: Plan, problems: list[str]) -> None:
    out = Path(plan.cfg.output_dir)
    if out.exists() and not out.is_dir():
        problems.append(f"output_dir {str(out)!r} is a file, not a folder")
        return
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK | os.X_OK):
        problems.append(f"output_dir {str(out)!r}: cannot write in {str(probe)!r} (permission denied)")


def _resume(plan: Plan, problems: list[str]) -> None:
    from posrft.train.checkpoint import CheckpointError, resolve_checkpoint
    from posrft.train.safe_load import UnsafeCheckpointError, scan_checkpoint

    value = plan.cfg.resume_from_checkpoint
    try:
        ckpt = resolve_checkpoint(value, plan.cfg.output_dir)
        if ckpt is not None:
            scan_checkpoint(ckpt)
            plan.notes.append(f"resuming from {ckpt}")
    except (CheckpointError, UnsafeCheckpointError, FileNotFoundError) as err:
        problems.append(str(err))


def _body(plan: Plan, problems: list[str]) -> None:
    from posrft.config import BODY_MODELS_ENV, body_models_dir

    folder = body_models_dir(plan.cfg.body_model_dir)  # FileNotFoundError names the source
    if folder is None:
        plan.notes.append("body model: the offline SMPL-format stand-in (set body_model_dir or "
                          f"{BODY_MODELS_ENV} for real SMPL files)")  # fmt: skip
        return
    names = ["SMPL_NEUTRAL.pkl", "smpl/SMPL_NEUTRAL.pkl"]
    found = [folder / n for n in names if (folder / n).is_file()]
    if not found:
        problems.append(f"body-model folder {str(folder)!r} has no SMPL neutral model: expected one of "
                        f"{', '.join(names)}")  # fmt: skip
        return
    if found[0].stat().st_size == 0:
        problems.append(f"body-model file {str(found[0])!r} is empty")
        return
    plan.notes.append(f"body model: {found[0]} (a .pkl is a pickle: loading it runs whatever it "
                      "contains, so point body_model_dir only at files you trust; no other file "
                      "in the folder is read)")  # fmt: skip


def _trackers(plan: Plan, problems: list[str]) -> None:
    modules = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "comet_ml": "comet_ml",
               "aim": "aim", "clearml": "clearml", "dvclive": "dvclive", "swanlab": "swanlab",
               "trackio": "trackio"}  # fmt: skip
    for tracker in plan.cfg.report_to:
        module = modules.get(tracker)
        if module and importlib.util.find_spec(module) is None:
            problems.append(f"report_to: {tracker!r} is not installed (pip install {module}, or "
                            "report_to: [none])")  # fmt: skip


def _teacher(plan: Plan, problems: list[str]) -> None:
    cfg = plan.cfg
    if cfg.stage != "crdistill":
        return
    spec = cfg.teacher_spec
    kind = spec.get("kind")
    if kind not in ("kinematic", "hf", "openai"):
        problems.append(f"teacher: kind must be kinematic, hf or openai, got {kind!r}")
    elif kind == "hf" and not Path(str(spec.get("model_path", ""))).is_dir():
        problems.append(f"teacher: model_path {spec.get('model_path')!r} is not a model folder")
    elif kind == "openai" and spec.get("api_key_env") and not os.environ.get(spec["api_key_env"]):
        problems.append(f"teacher: environment variable {spec['api_key_env']!r} (api_key_env) is not set")


def _deepspeed_note(plan: Plan) -> None:
    if plan.accelerate.get("distributed_type") != "DEEPSPEED":
        return
    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    if root is None:
        import torch

        accel = f"cu{torch.version.cuda.replace('.', '')}" if torch.version.cuda else "cpu"
        tag = f"py{__import__('sys').version_info.major}{__import__('sys').version_info.minor}_{accel}"
        root = str(Path.home() / ".cache" / "torch_extensions" / tag)
    built = list(Path(root, "deepspeed_shm_comm").glob("*.so"))
    if not built:
        plan.notes.append(
            f"first DeepSpeed run on this machine: DeepSpeed compiles its shm communication op "
            f"before training starts (30 s to 4 min on a CPU, once; cached in {root})"
        )

