#!/usr/bin/env bash
# Fetch libonnxruntime.so from the PyPI wheel into .cache/onnxruntime/lib (ignored by git).
#   scripts/fetch-onnxruntime.sh          CPU build (onnxruntime)
#   ORT_PACKAGE=onnxruntime-gpu scripts/fetch-onnxruntime.sh   CUDA 13 build (see docs/gpu.md)
set -euo pipefail
VERSION="${ORT_VERSION:-1.31.1}"
PACKAGE="${ORT_PACKAGE:-onnxruntime}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEST="$ROOT/.cache/onnxruntime/lib"
if [ -e "$DEST/libonnxruntime.so.$VERSION" ] && [ "${FORCE:-0}" != 1 ]; then
  exit 0
fi
PY="$(command -v python3 || command -v python)"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
echo "fetching $PACKAGE==$VERSION (manylinux x86_64 wheel) ..." >&2
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --platform manylinux_2_28_x86_64 \
  --python-version 3.11 --implementation cp -d "$TMP" "$PACKAGE==$VERSION"
mkdir -p "$DEST"
"$PY" - "$TMP" "$DEST" "$VERSION" <<'PYEOF'
import glob, os, sys, zipfile
tmp, dest, version = sys.argv[1:]
wheel = glob.glob(os.path.join(tmp, "*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    for n in z.namelist():
        base = os.path.basename(n)
        if n.startswith("onnxruntime/capi/") and (base.startswith("libonnxruntime") and ".so" in base):
            with z.open(n) as src, open(os.path.join(dest, base), "wb") as out:
                out.write(src.read())
            print("  ", base, file=sys.stderr)
PYEOF
cd "$DEST"
ln -sf "libonnxruntime.so.$VERSION" libonnxruntime.so.1
ln -sf "libonnxruntime.so.$VERSION" libonnxruntime.so
echo "ONNX Runtime $VERSION in $DEST" >&2
