# Issue 21's baselines on a GPU machine, one call, from the repo root: the fill-in-the-middle model
# (model/fim*.py) and the seq2seq + copy model (model/s2s*.py, CONFIGS="s2s:base"; docs/baselines.md):
#   bash tools/device/train_fim.sh SECONDS [PLAN_MINUTES]
#   bash tools/device/train_fim.sh weights PRESET FIRST LAST     (a call that only brings weight parts back)
# Carried (ignored folders): .whl (the cp312 wheels of tokenizers, tree-sitter and tree-sitter-python:
# ../shared/device/README.md says how to download them) and .carry/fim*/ holding tokenizer.json and what
# `anycode fim pack --pieces` wrote (dev.xz.000, train.xz.000 ..., *.pieces.json), in one call or
# spread over several: pieces gather in /tmp/fim/pieces while the machine stays warm, and a split is
# unpacked into /tmp/fim/data once all of its pieces are there (checked against its .pieces.json).
# For each preset of CONFIGS (default "base large", model/fim_train.py's CONFIGS), one process, all at
# once on the one GPU, trains /tmp/runs21/PRESET until SECONDS (the whole call, counted from its start)
# less what the weights and, with EVAL=1, the evaluation need; a later call on the warm machine resumes
# each run from its checkpoint.  PLAN_MINUTES (default: this call's training minutes) is the whole run's
# training time, for the learning-rate schedule: give every call of a run the same.  FIM_WORKERS: loader
# processes a preset (default 15 / presets; fewer beside an SLM run).  COMPILE=1 compiles the training
# step (torch.compile: a minute of compiling in every call).  TRAIN_SET="--set batch=512 ..." adds settings
# to every run of the call (a resumed run keeps its first call's).
# EVAL=1: after the weights, `anycode fim eval` of the presets in EVALS (default CONFIGS) on `anycode eval`'s
# 2,000 test holes (EVAL_LIMIT), both
# searches, until the deadline (its log shows the running figures every 200 holes); it
# needs the test shards (.carry/ds_test/test.tar.xz: python3 tools/device/pack_dataset.py
# data/dataset/python .carry/ds_test/test.tar.xz --splits test) and the test files of the corpus
# (.carry/corpus.tar.xz: tar -C data/corpus -cf - python/test python/manifest.json | xz -T2 -9), which
# setup.sh unpacks.
# Back in $OUT: logs21.tar holding PRESET/train_fim.log and PRESET/fim_eval.json, and the weights of the presets in WEIGHTS
# (default "base": weights.py's fp16 parts, fim_PRESET.part* and fim_PRESET.meta.tar; here
# `python3 tools/device/weights.py --join DIR fim_PRESET runs/fim_PRESET`, then copy tokenizer.json
# beside them).  A call brings back at most 8 files, 64 MiB: large's fp16 weights (five parts) come
# in calls of their own, `weights large 0 3` then `weights large 4 4`.
# A run goes on across sessions from the fp16 weights a call brought back (its checkpoint stays on the
# machine): carry them as .carry/init21_RUN (slm.pt and config.json of `weights.py --join`; RUN as below,
# base or s2s_base) and the first call of the machine starts RUN from them, a fresh optimizer and plan.
# A preset named KIND:PRESET is of that baseline (fim or s2s; a bare name is fim's).  The seq2seq
# model's data travel as .carry/s2s*/ (vocab.json and what `anycode s2s pack --pieces` wrote: train.xz.*,
# dev.xz.*, *.pieces.json), gathered in /tmp/s2s/pieces and unpacked into /tmp/s2s/data; its run is
# /tmp/runs21/s2s_PRESET, its weights s2s_PRESET.part* (WEIGHTS="s2s:base"), its evaluation
# `anycode s2s eval` into $OUT/s2s_PRESET/s2s_eval.json.  Both kinds may train side by side on the one GPU.
set -u; T0=$(date +%s)
. tools/device/setup.sh
name() { case $1 in *:*) echo "${1%%:*}_${1#*:}";; *) echo "$1";; esac; }       # s2s:base -> s2s_base, base -> base
kind() { case $1 in *:*) echo "${1%%:*}";; *) echo fim;; esac; }
if [ "$1" = weights ]; then
  N2=$(name "$2"); P=fim_$2; [ "$(kind "$2")" = s2s ] && P=$N2
  python3 "$ROOT_DIR/tools/device/weights.py" "/tmp/runs21/$N2" /tmp/w21 "$P"
  for k in $(seq "$3" "$4"); do cp "/tmp/w21/$P.part$k" "$OUT/"; done
  cp "/tmp/w21/$P.meta.tar" "$OUT/"; ls -la "$OUT"; exit 0
fi
SECS=$1; PLAN=${2:-}
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader
CONFIGS=${CONFIGS:-base large}; N=$(echo $CONFIGS | wc -w)
for K in $(for C in $CONFIGS; do kind "$C"; done | sort -u); do
  mkdir -p /tmp/$K/pieces /tmp/$K/data
  for d in "$ROOT_DIR"/.carry/$K*; do [ -d "$d" ] && cp "$d"/* /tmp/$K/pieces/; done
  for f in tokenizer.json vocab.json; do [ -f /tmp/$K/pieces/$f ] && cp /tmp/$K/pieces/$f /tmp/$K/data/; done
  python3 -m anycode fim pack --unpack /tmp/$K/pieces --out /tmp/$K/data
  NEED="train.bin.npy dev.bin.npy tokenizer.json"; [ $K = s2s ] && NEED="train.s2s.npz dev.s2s.npz vocab.json"
  for f in $NEED; do
    if [ ! -f /tmp/$K/data/$f ]; then
      ls -la /tmp/$K/pieces /tmp/$K/data; echo "not all pieces are here yet: carry the rest in the next call"; exit 3
    fi
  done
done
RESERVE=$(( 45 + ${EVAL:-0} * ${EVAL_S:-300} ))
MINUTES=$(python3 -c "print(max(0.5, ($SECS - $RESERVE - $(date +%s) + $T0) / 60))")
echo "$(( $(date +%s) - T0 ))s in; training $CONFIGS for $MINUTES minutes"
for C in $CONFIGS; do
  R=$(name "$C"); K=$(kind "$C"); mkdir -p "$OUT/$R"; INIT=
  [ -d "$ROOT_DIR/.carry/init21_$R" ] && [ ! -f "/tmp/runs21/$R/ckpt.pt" ] && INIT="--init $ROOT_DIR/.carry/init21_$R"
  PYTHONUNBUFFERED=1 python3 -m anycode $K train --data /tmp/$K/data --out "/tmp/runs21/$R" --config "${C#*:}" \
    --minutes "$MINUTES" ${PLAN:+--plan-minutes "$PLAN"} --workers ${FIM_WORKERS:-$(( 15 / N ))} --device "${DEVICE:-cuda}" \
    ${COMPILE:+--compile} $INIT ${TRAIN_SET:-} > "$OUT/$R/train_$K.log" 2>&1 &
done
wait
for C in ${WEIGHTS-base}; do
  P=fim_$C; [ "$(kind "$C")" = s2s ] && P=$(name "$C")
  python3 "$ROOT_DIR/tools/device/weights.py" "/tmp/runs21/$(name "$C")" "$OUT" "$P"
done
if [ "${EVAL:-0}" = 1 ]; then      # after the weights: an evaluation cut short by the deadline costs nothing else
  LEFT=$(( SECS - 15 - $(date +%s) + T0 ))
  for C in ${EVALS:-$CONFIGS}; do
    R=$(name "$C"); K=$(kind "$C")
    timeout "$LEFT" python3 -m anycode $K eval --model "/tmp/runs21/$R" --data /tmp/ds/python --corpus /tmp/corpus/python \
      --split test --limit "${EVAL_LIMIT:-2000}" --device "${DEVICE:-cuda}" --json "$OUT/$R/${K}_eval.json" \
      >> "$OUT/$R/train_$K.log" 2>&1 &
  done
  wait
fi
tail -n 4 "$OUT"/*/train_*.log
# A call brings back at most 8 files: the logs and evaluations of all presets travel as one.
(cd "$OUT" && tar -cf logs21.tar $(for C in $CONFIGS; do name "$C"; done) && rm -rf $(for C in $CONFIGS; do name "$C"; done))
ls -la "$OUT"; echo "done in $(( $(date +%s) - T0 ))s"
