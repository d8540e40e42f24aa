#!/usr/bin/env bash
# Build the wheel, install it (not editable) into a temporary folder and use it from there: every data file
# (MACO magnitude prior, label lists, page assets) must travel in the wheel, not only in the source tree.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# built from a copy of the tracked files, as a fresh clone would be (no stale build/ folder in the wheel)
mkdir "$tmp/src"
git ls-files -z | tar --null -T - -cf - | tar -xf - -C "$tmp/src"
"$VENV/bin/pip" wheel -q --no-deps -w "$tmp/dist" "$tmp/src" >"$tmp/wheel.log" 2>&1 || { tail -20 "$tmp/wheel.log"; exit 1; }
"$VENV/bin/pip" install -q --no-deps --target "$tmp/site" "$tmp"/dist/luminate-*.whl
py=$(cd "$VENV/bin" && pwd)/python
# every tracked non-Python file of the package is in the installed wheel
missing=$(git ls-files luminate | grep -v '\.py$' | while read -r f; do [ -f "$tmp/site/$f" ] || echo "$f"; done)
[ -z "$missing" ] || { echo "files missing from the wheel (add them to [tool.setuptools.package-data]):"; echo "$missing"; exit 1; }
(cd "$tmp" && PYTHONPATH="$tmp/site" "$py" - "$tmp/site" <<'PYEOF')
import sys
import luminate
from luminate import param

assert luminate.__file__.startswith(sys.argv[1]), f"imported {luminate.__file__}, not the installed wheel"
image = param.maco(64)()
assert tuple(image.shape[-2:]) == (64, 64), image.shape
assert len(luminate.models.imagenet_labels()) == 1000
from luminate.views import html
import luminate_launcher  # the console script's module travels in the wheel too
for name in ("base.css", "blocks.css", "blocks.js"):
    assert html.asset(name), name
print("wheel smoke test: MACO prior, labels and page assets load from the installed wheel")
PYEOF
