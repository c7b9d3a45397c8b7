# One device call of a training run (issue 22; `--config large` unless CONFIG names another preset of
# train.CONFIGS, e.g. CONFIG=paper with TRAIN_SET for the shipped model's settings), from the checkout's root:
#   bash tools/device/train_large.sh RUN[,RUN2...] SECONDS [FEATURE_SECONDS]
# SECONDS: when this call must be done, counted from its start (weights included); the first call of
# a run featurizes the carried train split for at most FEATURE_SECONDS (tools/device/featurize.py:
# shards not done by then are left out of the run) and starts from /tmp/init (.carry/init: slm.pt,
# config.json, vocab.json, grammar.json of model/shipped; INIT names other start weights, such as
# another run's directory /tmp/runs/RUN0); a later call on the same warm machine resumes the run
# from its checkpoint.  Ends with the run's latest weights in $OUT (weights.py --last;
# PICK="" brings best.pt instead: the best dev check, by dev nll where the run checks no accuracy).
# DEVICE (default cuda) and TRAIN_SET (e.g. "--set targets_per_batch=512") are for a dry run on a CPU.
# Several runs (RUN,RUN2) train side by side on the one GPU from the same features, each with
# TRAIN_SET and its own SET_RUN (e.g. SET_G2="n_layers=8 d_ff=2048"), each log in /tmp/runs/RUN/train.out
# (its end printed); the weights of the runs in WEIGHTS (default all) come back, at most 8 files a call.
# FEATURES_ONLY=1: featurize what was carried and stop (a call that carries half of the split).
# BG_JOBS=N: while the GPU trains, featurize the shards left out on N more processes (featurize.py
# --left); the next call's runs read them.
set -u
T0=$(date +%s)
RUN=$1; DEADLINE=$2; FEAT=${3:-150}
. tools/device/setup.sh
# batches of many shapes fragment the caching allocator (PyTorch's own advice when a run ran out of memory on an H100)
export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
INIT=${INIT:-/tmp/init}
RUNS=$(echo "$RUN" | tr , ' ')
for R in $RUNS; do
  if [ ! -f /tmp/runs/$R/ckpt.pt ] && [ ! -f $INIT/slm.pt ] && [ ! -f $INIT/ckpt.pt ]; then
    echo "neither /tmp/runs/$R/ckpt.pt nor start weights in $INIT: a fresh machine without the carried pieces"; exit 3
  fi
done
echo "train shards: $(ls /tmp/ds/python/train/*.npz | wc -l), dev shards: $(ls /tmp/ds/python/dev/*.npz | wc -l)"
python3 "$ROOT_DIR/tools/device/featurize.py" /tmp/ds/python /tmp/feat --seconds "$FEAT" --jobs 16 | tail -4
[ -n "${FEATURES_ONLY:-}" ] && { echo "featurized only, in $(( $(date +%s) - T0 ))s"; exit 0; }
LEFT=$(( DEADLINE - ($(date +%s) - T0) - 30 - 10 * $(echo $RUNS | wc -w) ))
echo "$(( $(date +%s) - T0 ))s in; training $RUNS for $LEFT s"
rm -f /tmp/feat_left.out        # a previous call's
if [ -n "${BG_JOBS:-}" ] && ls /tmp/ds/python/train_left/*.npz >/dev/null 2>&1; then
  nice -n 10 python3 "$ROOT_DIR/tools/device/featurize.py" /tmp/ds/python /tmp/feat --left --seconds $(( LEFT - 30 )) \
    --jobs "$BG_JOBS" > /tmp/feat_left.out 2>&1 &
fi
for R in $RUNS; do
  OWN=SET_$R; mkdir -p /tmp/runs/$R
  PYTHONUNBUFFERED=1 python3 -m anycode train --data /tmp/ds/python --out /tmp/runs/$R --config "${CONFIG:-large}" \
    --init "$INIT" --features /tmp/feat --device "${DEVICE:-cuda}" --minutes "$(python3 -c "print($LEFT / 60)")" \
    ${TRAIN_SET:-} ${!OWN:+--set ${!OWN}} >> /tmp/runs/$R/train.out 2>&1 &
done
wait
for R in $RUNS; do echo "== $R"; grep -v Warning /tmp/runs/$R/train.out | tail -n 25; done
[ -f /tmp/feat_left.out ] && tail -n 2 /tmp/feat_left.out
for R in ${WEIGHTS:-$RUNS}; do python3 "$ROOT_DIR/tools/device/weights.py" /tmp/runs/$R "$OUT" "$R" ${PICK---last}; done
nvidia-smi --query-gpu=memory.used --format=csv,noheader
ls -la "$OUT"; echo "call done in $(( $(date +%s) - T0 ))s"
