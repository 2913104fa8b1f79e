#!/usr/bin/env bash
# A GPU experiment's stages back to back in one device session (a bare H200 machine, 30 minutes):
#   bash benchmarks/gpu_session.sh CHAIN start     # every device call (carry .whl)
# CHAIN is one of:
#   run4        issue 16 (benchmarks/run4_validation.py, results in benchmarks/validation/run4/):
#               the WSD-branch benchmark of issue 15 (WSD_S seconds for each of two cooldown
#               fractions, 0.1 and 0.2; first, because it is short and machines have been lost
#               mid-chain) -> sweep (SWEEP_MIN minutes) -> predict (CPU) -> heldout (HELD_MIN
#               minutes) -> report (CPU); the WSD benchmark is skipped where its results exist
#   optimizers  issue 17 (benchmarks/optimizer_axis.py, results in benchmarks/optimizers/):
#               steptime (~3 minutes) -> sweep (OPT_MIN minutes, the six optimizers at once, or those
#               OPT_ONLY names, e.g. OPT_ONLY=lamb) -> report (CPU)
# Every device call runs `start`: on a machine where no chain runs (the first call, or a fresh
# machine after a lost one) it starts the chain detached (setsid, without $OUT); then it polls:
# waits up to POLL_S seconds (or until the chain ends) and packs what the stages have exported
# so far into one file, $OUT/CHAIN.tgz (the device tool returns at most 8 files), so that a
# machine lost between calls loses at most the last two minutes of training (the stages export
# every two minutes). The stages write to /tmp/CHAIN/results, outside the repository copy that
# each call re-sends, seeded from the chain's committed results folder (its specs and exports).
# After every call, before anything else:
#   tar xzf /work/.device/N/CHAIN.tgz -C RESULTS_FOLDER && git add ... && git commit
# (logs/ in the archive holds the chain's log and the stage logs' tails, for BENCHMARKS.md; the
# rest are the stages' results.) A later session's stages restore the committed exports, skip
# what stages.json says is complete and train only the rest.
# .whl/ (git-ignored) holds the packages the device's image lacks, for its Python 3.12:
#   pip download --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 --abi none \
#     --abi abi3 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux_2_28_x86_64 -d .whl optuna sqlalchemy alembic mako pydantic \
#     pydantic-settings annotated-types typing-inspection python-dotenv colorlog greenlet \
#     typing-extensions fastapi starlette
# then delete numpy, pyyaml, packaging, tqdm, idna, anyio and markupsafe from .whl/ (the image's own).
set -u
cd "$(dirname "$0")/.."
NAME=${1:-}
case "$NAME" in
  run4) RESULTS_DIR=benchmarks/validation/run4 ;;
  optimizers) RESULTS_DIR=benchmarks/optimizers ;;
  *) echo "usage: $0 run4|optimizers start|poll" >&2; exit 2 ;;
esac
WORK=/tmp/$NAME
RES=$WORK/results
SWEEP_MIN=${SWEEP_MIN:-14}
HELD_MIN=${HELD_MIN:-6}
WSD_S=${WSD_S:-100}
OPT_MIN=${OPT_MIN:-15}
POLL_S=${POLL_S:-300}
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
# Five (run4) or six (optimizers) training processes share the machine's 16 cores: each one's CPU
# work (data, book-keeping) needs few threads, and 16 spinning OpenMP threads apiece would starve
# the rest.
if [ "$NAME" = run4 ]; then export OMP_NUM_THREADS=${OMP_NUM_THREADS:-3}; else export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}; fi

chain() {
  trap 'echo CHAIN-DONE' EXIT  # also when a step fails: the poll stops waiting
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  # Each stage does nothing when stages.json says it is complete, and resumes from the exports.
  if [ "$NAME" = run4 ]; then
    local stage=(python3 benchmarks/run4_validation.py)
    mkdir -p $RES/logs
    # Budgets 10/15/20 tokens per parameter: cooldown 0.1 promises 2.0x fewer steps, 0.2 1.8x.
    # (Named for the card the device tool lent: the JSON records its name.)
    # ("NVIDIA H100 80GB HBM3" -> h100; the H of HBM3 is no card.)
    local card; card=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | grep -oE 'H[0-9]+' | head -1 | tr H h)
    card=${card:-gpu}
    for f in 0.1 0.2; do
      local have=""
      for j in "$RES"/logs/wsd_*_f$f.json; do [ -s "$j" ] && have=1; done
      [ -n "$have" ] && continue
      python3 benchmarks/wsd_branches.py --device cuda --widths 64,128 --batch-sizes 16 --seeds 0,1 \
        --cooldown-fraction $f --corpus-bytes 20000000 --time-budget "$WSD_S" \
        --out "$RES/logs/wsd_${card}_f$f.json" 2> "$RES/logs/wsd_${card}_f$f.log" || echo "wsd benchmark (cooldown $f) failed: $?"
    done
    "${stage[@]}" sweep --work $WORK --results $RES --minutes "$SWEEP_MIN" || echo "sweep stage failed: $?"
    "${stage[@]}" predict --work $WORK --results $RES || echo "predict stage failed: $?"
    "${stage[@]}" heldout --work $WORK --results $RES --minutes "$HELD_MIN" || echo "heldout stage failed: $?"
    "${stage[@]}" report --work $WORK --results $RES || echo "report stage failed: $?"
  else
    local stage=(python3 benchmarks/optimizer_axis.py)
    "${stage[@]}" steptime --work $WORK --results $RES || echo "steptime stage failed: $?"
    "${stage[@]}" sweep --work $WORK --results $RES --minutes "$OPT_MIN" ${OPT_ONLY:+--only "$OPT_ONLY"} || echo "sweep stage failed: $?"
    "${stage[@]}" report --work $WORK --results $RES || echo "report stage failed: $?"
  fi
}

collect() {
  [ -n "${OUT:-}" ] || return 0
  mkdir -p $RES/logs
  cp -f $WORK/chain.log $RES/logs/ 2>/dev/null
  tail -n 40 $WORK/log-*.txt > $RES/logs/stage-logs-tail.txt 2>/dev/null
  # Exports are renamed into place when complete: the archive never holds a half-written one.
  tar czf "$OUT/$NAME.tgz" -C $RES --exclude='./.*' . && ls -la $RES
}

poll() {
  local t0=$SECONDS
  while [ $((SECONDS - t0)) -lt "$POLL_S" ]; do
    grep -q CHAIN-DONE $WORK/chain.log 2>/dev/null && break
    sleep 5
  done
  collect
  tail -n 25 $WORK/chain.log
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>/dev/null
  # Host memory, disk and process count: two sessions lost their machine mid-stage ("stopped
  # answering"); if it happens again these lines from the last poll are the evidence.
  free -g | head -2; df -h /tmp | tail -1; echo "processes: $(ps -e --no-headers | wc -l)"
}

start() {
  if [ -f $WORK/chain.pid ] && kill -0 "$(cat $WORK/chain.pid)" 2>/dev/null; then
    echo "a chain is already running (pid $(cat $WORK/chain.pid)): polling it"
  else
    mkdir -p $RES
    cp -rn $RESULTS_DIR/. $RES/  # the committed specs and exports; a warm machine's newer files stay
    rm -f $WORK/chain.log
    env -u OUT setsid bash "$PWD/benchmarks/gpu_session.sh" "$NAME" chain > $WORK/chain.log 2>&1 < /dev/null &
    echo $! > $WORK/chain.pid
    sleep 2
  fi
  poll
}

case "${2:-poll}" in
  start) start ;;
  chain) chain ;;
  poll) poll ;;
  *) echo "usage: $0 run4|optimizers start|poll" >&2; exit 2 ;;
esac
