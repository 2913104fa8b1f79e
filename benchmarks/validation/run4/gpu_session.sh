#!/usr/bin/env bash
# Run 4's GPU stages back to back in one device session (a bare H200 machine, 30 minutes):
#   sweep (SWEEP_MIN minutes) -> predict (CPU, seconds to minutes) -> heldout (HELD_MIN minutes)
#   -> report (CPU) -> the WSD-branch benchmark of issue 15 (WSD_S seconds), in that order of importance.
# Started detached (setsid) by the first device call; every call then runs `poll` below, which
# waits up to POLL_S seconds and copies whatever the stages have exported so far into $OUT, so
# that a machine lost between calls loses at most the last two minutes of training (the stages
# export every two minutes). Commit what comes back before anything else: a later session's
# stages restore the exports, skip what stages.json says is complete and train only the rest.
#   bash benchmarks/validation/run4/gpu_session.sh start   # setup, start the chain, then poll
#   bash benchmarks/validation/run4/gpu_session.sh poll
set -u
cd "$(dirname "$0")/../../.."
RUN4=benchmarks/validation/run4
WORK=/tmp/run4
SWEEP_MIN=${SWEEP_MIN:-14}
HELD_MIN=${HELD_MIN:-6}
WSD_S=${WSD_S:-150}
POLL_S=${POLL_S:-300}
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1

chain() {
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  mkdir -p $WORK
  # Each stage does nothing when stages.json says it is complete, and resumes from the exports.
  python3 benchmarks/run4_validation.py sweep --work $WORK --minutes "$SWEEP_MIN" || echo "sweep stage failed: $?"
  python3 benchmarks/run4_validation.py predict --work $WORK || echo "predict stage failed: $?"
  python3 benchmarks/run4_validation.py heldout --work $WORK --minutes "$HELD_MIN" || echo "heldout stage failed: $?"
  python3 benchmarks/run4_validation.py report --work $WORK || echo "report stage failed: $?"
  python3 benchmarks/wsd_branches.py --device cuda --widths 64,128 --batch-sizes 16 --seeds 0,1 \
    --time-budget "$WSD_S" --out $WORK/wsd_h200.json || echo "wsd benchmark failed: $?"
  echo CHAIN-DONE
}

collect() {
  [ -n "${OUT:-}" ] || return 0
  cp -f $RUN4/*.json.gz $RUN4/*.json $RUN4/heldout-*.yaml $RUN4/report.md $WORK/wsd_h200.json "$OUT"/ 2>/dev/null
  cp -f $WORK/chain.log "$OUT"/ 2>/dev/null
  tail -n 40 $WORK/log-*.txt > "$OUT"/stage-logs-tail.txt 2>/dev/null
  true
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

case "${1:-poll}" in
  start) mkdir -p $WORK; setsid bash "$PWD/$RUN4/gpu_session.sh" chain > $WORK/chain.log 2>&1 < /dev/null & sleep 2; poll ;;
  chain) chain ;;
  poll) poll ;;
  *) echo "usage: $0 start|poll" >&2; exit 2 ;;
esac
