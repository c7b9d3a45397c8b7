# Source at the start of every device call, from the checkout's root: `. tools/device/setup.sh`.
# Installs the carried wheels (.whl, and .carry/whl*: e.g. tokenizers for the FIM baseline) into
# /tmp/site, the onnxruntime-gpu wheel once all of its pieces have arrived in /tmp/ortw
# (../shared/device/README.md), links the package into /tmp/pkg/anycode, unpacks a carried dataset
# (.carry/ds/*.tar.xz: `tar -cf - train dev vocab.json grammar.json summary.json | xz` in
# data/dataset/python, 49 MB, one call) into /tmp/ds/python and a carried corpus split
# (.carry/corpus.tar.xz, of data/corpus/python) into /tmp/corpus, copies start weights
# (.carry/init_NAME) into /tmp/init_NAME, then leaves the checkout: run from its root, Python would
# import the checkout's own anycode/, which lacks the mapped subpackages.
# Two scripts of one call may source it at once (an SLM run and a baseline side by side): the work
# below holds a lock, the package links are rebuilt only for another checkout, and each carried
# archive is unpacked once per machine (a marker per archive and size), so that a later call neither
# unpacks it again nor brings back the shards that featurize.py moved out of the split.
ROOT_DIR=$PWD
mkdir -p /tmp/site /tmp/ds/python /tmp/ortw
exec 9>/tmp/setup.lock
flock 9
for w in .whl/*.whl .carry/whl*/*.whl; do       # each carried wheel once per machine
  [ -f "$w" ] && [ ! -f "/tmp/site/.installed_${w##*/}" ] &&
    python3 -m pip install -q --no-index --no-deps --target /tmp/site "$w" && touch "/tmp/site/.installed_${w##*/}"
done
for d in .ortc*; do [ -d "$d" ] && cp "$d"/part_* /tmp/ortw/; done
if [ ! -d /tmp/site/onnxruntime ] && [ "$(ls /tmp/ortw/part_* 2>/dev/null | wc -l)" -ge 5 ]; then
  (cd /tmp/ortw && cat part_0* > onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl &&
   python3 -m pip install -q --no-index --no-deps --target /tmp/site onnxruntime_gpu-*.whl && rm -f part_0*)
fi
if [ "$(readlink /tmp/pkg/anycode/model)" != "$ROOT_DIR/model" ]; then
  rm -rf /tmp/pkg && mkdir -p /tmp/pkg/anycode
  for f in "$ROOT_DIR"/anycode/*.py; do ln -s "$f" /tmp/pkg/anycode/; done
  ln -s "$ROOT_DIR/model" /tmp/pkg/anycode/model
  ln -s "$ROOT_DIR/server" /tmp/pkg/anycode/server
  ln -s "$ROOT_DIR/grammars" /tmp/pkg/anycode/grammars
fi
_once() {   # ARCHIVE DEST: unpack an xz tar once per machine
  local mark="/tmp/.unpacked_$(echo "$1" | tr / _)_$(stat -c %s "$1")"
  [ -f "$mark" ] && return 0
  mkdir -p "$2" && xz -T0 -dc "$1" | tar -xf - -C "$2" && touch "$mark"
}
for f in .carry/ds*/*.tar.xz; do [ -f "$f" ] && _once "$f" /tmp/ds/python; done
[ -f .carry/corpus.tar.xz ] && _once .carry/corpus.tar.xz /tmp/corpus
for d in .carry/init*; do [ -d "$d" ] && rm -rf "/tmp/${d#.carry/}" && cp -r "$d" "/tmp/${d#.carry/}"; done
flock -u 9
export PYTHONPATH=/tmp/pkg:/tmp/site
cd /tmp
