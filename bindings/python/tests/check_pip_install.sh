#!/usr/bin/env bash
# `pip install ./bindings/python` from an installed kiln, offline: installs kiln into a temporary
# prefix, pip-installs the binding against it (KILN_PREFIX, --no-build-isolation) into a temporary
# target, and runs a greedy generation from there.
# Usage: check_pip_install.sh PYTHON BUILD_DIR SOURCE_DIR
set -euo pipefail
python="$1" build="$2" src="$3"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cmake --install "$build" --prefix "$work/prefix" > /dev/null
# pip builds in the project directory: build a copy, so the source tree stays clean.
mkdir -p "$work/bindings"
cp "$src/bindings/"*.i "$work/bindings/"
cp -r "$src/bindings/python" "$work/bindings/python"
rm -rf "$work/bindings/python/build" "$work/bindings/python/"*.egg-info
KILN_PREFIX="$work/prefix" "$python" -m pip install -q --no-build-isolation --no-index \
  --target "$work/site" "$work/bindings/python"
cd "$work"
PYTHONPATH="$work/site" "$python" - "$src" <<'PY'
import json, pathlib, sys
import kiln
tiny = pathlib.Path(sys.argv[1]) / "tests/fixtures/tiny-qwen2"
ref = json.loads((tiny / "hf_ref.json").read_text())
assert pathlib.Path(kiln.__file__).is_relative_to(pathlib.Path.cwd()), kiln.__file__
with kiln.Runtime(kiln.Backend.CPU, n_threads=1) as rt, rt.load_model(tiny) as model:
    with model.session() as s:
        ids = s.complete(ref["token_ids"], max_tokens=4, temperature=0, ignore_eos=True).ids
assert ids == ref["greedy_continuation_ids"][:4], ids
print("pip-installed kiln generates", ids)
PY
