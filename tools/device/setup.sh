# Source at the start of every device call, from the checkout's root: `. tools/device/setup.sh`.
# Installs the carried wheels (.whl) into /tmp/site, the onnxruntime-gpu wheel once all of its
# pieces have arrived in /tmp/ortw (../shared/device/README.md), links the package into
# /tmp/pkg/anycode, unpacks a carried dataset (.carry/ds/*.tar.xz: `tar -cf - train dev vocab.json
# grammar.json summary.json | xz` in data/dataset/python, 49 MB, one call) into /tmp/ds/python and
# a carried corpus split (.carry/corpus.tar.xz, of data/corpus/python) into /tmp/corpus, copies
# start weights (.carry/init_NAME) into /tmp/init_NAME, then leaves the checkout: run from its root,
# Python would import the checkout's own anycode/, which lacks the mapped subpackages.
ROOT_DIR=$PWD
mkdir -p /tmp/site /tmp/ds/python /tmp/ortw
if [ -d .whl ] && [ ! -d /tmp/site/tree_sitter ]; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
fi
for d in .ortc*; do [ -d "$d" ] && cp "$d"/part_* /tmp/ortw/; done
if [ ! -d /tmp/site/onnxruntime ] && [ "$(ls /tmp/ortw/part_* 2>/dev/null | wc -l)" -ge 5 ]; then
  (cd /tmp/ortw && cat part_0* > onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl &&
   python3 -m pip install -q --no-index --no-deps --target /tmp/site onnxruntime_gpu-*.whl && rm -f part_0*)
fi
rm -rf /tmp/pkg && mkdir -p /tmp/pkg/anycode
for f in "$ROOT_DIR"/anycode/*.py; do ln -s "$f" /tmp/pkg/anycode/; done
ln -s "$ROOT_DIR/model" /tmp/pkg/anycode/model
ln -s "$ROOT_DIR/server" /tmp/pkg/anycode/server
ln -s "$ROOT_DIR/grammars" /tmp/pkg/anycode/grammars
for f in .carry/ds*/*.tar.xz; do [ -f "$f" ] && xz -T0 -dc "$f" | tar -xf - -C /tmp/ds/python; done
[ -f .carry/corpus.tar.xz ] && mkdir -p /tmp/corpus && xz -dc .carry/corpus.tar.xz | tar -xf - -C /tmp/corpus
for d in .carry/init*; do [ -d "$d" ] && rm -rf "/tmp/${d#.carry/}" && cp -r "$d" "/tmp/${d#.carry/}"; done
export PYTHONPATH=/tmp/pkg:/tmp/site
cd /tmp
