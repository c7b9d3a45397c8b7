# Issue 23's code-search encoders on a GPU machine (torch and numpy, no tree-sitter), from the repo root:
#   bash tools/device/train_search.sh SECONDS [PACKED]     (DEVICE=cpu CONFIGS=tiny: a dry run on a CPU)
# PACKED (default .c23/search, carried) is what `anycode search-data pack` wrote here.  For each preset
# of CONFIGS (default "base fast", model/search_train.py's CONFIGS), one process, all at once on the one
# GPU, trains the five variants (concat, sum, attention, structural, semantic) one after another,
# sharing SECONDS (the whole call, start and evaluation included), and writes three files under
# $OUT/PRESET: search_eval.json (each variant's dev and test MRR and CoSQA figures, and the best by dev
# MRR), search_best.pt (that variant's weights, fp16, without the tables PACKED holds: about 12 MiB)
# and train_search.log.  Runs live in /tmp/runs23/PRESET: a second call on a warm machine resumes each
# variant from its checkpoint.
set -u; T0=$(date +%s); SECS=${1:-570}; DATA=$(realpath "${2:-.c23/search}")
mkdir -p /tmp/pkg23/anycode "$OUT" && cp anycode/__init__.py /tmp/pkg23/anycode/ && ln -sfn "$PWD/model" /tmp/pkg23/anycode/model
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader
MINUTES=$(python3 -c "print(($SECS - 40 - $(date +%s) + $T0) / 60)")
for C in ${CONFIGS:-base fast}; do
  mkdir -p "$OUT/$C"
  # run from /tmp/pkg23: in the repo root `python -m` would find the top-level anycode/ folder first
  (cd /tmp/pkg23 && PYTHONPATH=/tmp/pkg23 PYTHONUNBUFFERED=1 python3 -m anycode.model.search_train --data "$DATA" --out "/tmp/runs23/$C" \
    --variants all --device "${DEVICE:-cuda}" --config "$C" --export "$OUT/$C" --minutes "$MINUTES" \
    > "$OUT/$C/train_search.log" 2>&1) &
done
wait
tail -n 3 "$OUT"/*/train_search.log; ls -la "$OUT"/*; echo "done in $(( $(date +%s) - T0 ))s"
