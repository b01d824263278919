#!/usr/bin/env bash
# The package as a user gets it: build a wheel, install it into a fresh virtualenv outside the checkout, and run the
# genesis-jax command from a temporary directory (the checkout is not on sys.path there):
#   genesis-jax configs                        lists every packaged config
#   genesis-jax summary models/unet3d:pytorch  Total params: 19,073,665
#   a tiny pretrain on synthetic CT phantoms, then finetune (liver on phantoms) from its weights.
# The fresh venv reuses the installed dependencies of PYTHON's environment (a .pth naming its site-packages) instead
# of downloading them again; only the wheel goes into it (--no-deps).
# Usage: .ci/wheel_check.sh [PYTHON]   (default: the checkout's .venv/bin/python). About 2 minutes on 2 CPU cores.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd -P)"
python="${1:-$repo/.venv/bin/python}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
say() { echo "wheel_check: $*"; }
fail() { echo "wheel_check: FAILED: $*" >&2; exit 1; }

# Built from a copy of the files git knows (tracked, or untracked and not ignored), so a stale build/ or egg-info in
# the checkout cannot add files to the wheel, and the build writes nothing into the checkout.
src="$repo"
if git -C "$repo" rev-parse --is-inside-work-tree > /dev/null 2>&1; then
    src="$tmp/src"
    mkdir "$src"
    (cd "$repo" && git ls-files -z --cached --others --exclude-standard | tar --null --ignore-failed-read -T - -cf -) | tar -xf - -C "$src"
fi
"$python" -m pip wheel -q --no-deps -w "$tmp/dist" "$src"
wheel=("$tmp"/dist/genesis_jax-*.whl)
[ -f "${wheel[0]}" ] || fail "no wheel built in $tmp/dist"
say "built $(basename "${wheel[0]}")"

# A fresh venv, without pip of its own: pip and the dependencies come from the base environment's site-packages
# (only directories listed in a .pth; .pth files inside them, such as an editable install's, are not run).
"$python" -m venv --without-pip "$tmp/venv"
venv_python="$tmp/venv/bin/python"
site="$("$venv_python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
"$python" - "$repo" > "$site/zz_base_packages.pth" <<'EOF'
import sys
from pathlib import Path

repo = Path(sys.argv[1]).resolve()
for entry in sys.path:
    path = Path(entry or ".").resolve()
    if path.name in ("site-packages", "dist-packages") and path != repo:
        print(path)
EOF
# --ignore-installed: the base environment may hold an editable genesis-jax; the wheel goes into the fresh venv anyway
"$venv_python" -m pip install -q --no-deps --ignore-installed "${wheel[0]}"

mkdir "$tmp/run"
cd "$tmp/run"
"$venv_python" - "$repo" "$site" <<'EOF' || fail "genesis_jax is not imported from the wheel, or the checkout is on sys.path"
import sys
from pathlib import Path

repo, site = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
import genesis_jax

where = Path(genesis_jax.__file__).resolve()
assert where.is_relative_to(site), f"genesis_jax imported from {where}, not from the wheel in {site}"
on_path = [p for p in sys.path if Path(p or ".").resolve() == repo]
assert not on_path, f"the checkout is on sys.path: {on_path}"
print(f"wheel_check: genesis_jax {genesis_jax.__version__} from {where.parent}")
EOF
cli="$tmp/venv/bin/genesis-jax"
[ -x "$cli" ] || fail "the wheel installed no genesis-jax command"

"$cli" configs > configs.txt
expected="$(cd "$repo/genesis_jax/configs" && find . -name '*.py' ! -name '__init__.py' ! -name 'common.py' | sed 's#^\./##; s#\.py$##' | sort)"
listed="$(awk '{print $1}' configs.txt | sort)"
[ "$listed" = "$expected" ] || fail "genesis-jax configs lists $(echo $listed) instead of $(echo $expected)"
say "genesis-jax configs lists all $(echo "$expected" | wc -l) packaged configs"

"$cli" summary --config=models/unet3d:pytorch > summary.txt
grep -q "Total params: 19,073,665" summary.txt || fail "summary: $(tail -1 summary.txt)"
say "genesis-jax summary --config=models/unet3d:pytorch: $(grep 'Total params' summary.txt)"

quiet=(--config.logging.progress=False --config.logging.tensorboard=False)
"$cli" pretrain --config=pretrain/genesis_chest_ct:tiny --workdir=pt --config.model.base_width=2 \
    --config.model.depth=2 --config.max_steps=4 --config.steps_per_epoch=2 --config.validation_batches=1 \
    --config.logging.preview_every_steps=0 "${quiet[@]}" > pretrain.out 2> pretrain.log \
    || fail "pretrain: $(tail -5 pretrain.log)"
"$venv_python" - <<'EOF' || fail "pretrain summary: $(cat pt/summary.json)"
import json, math
from pathlib import Path

s = json.loads(Path("pt/summary.json").read_text())
assert s["step"] == 4 and math.isfinite(s["final_loss"]) and Path(s["weights"]).is_dir(), s
print(f"wheel_check: pretrain: 4 steps, final loss {s['final_loss']:.4f}, weights in {s['weights']}")
EOF

# The pre-trained network is the pytorch variant; fine-tune the same network from its weights.
"$cli" finetune --config=finetune/lcs:tiny --workdir=ft --init=pt/weights --config.model.variant=pytorch \
    "${quiet[@]}" > finetune.out 2> finetune.log || fail "finetune: $(tail -5 finetune.log)"
grep -qE "initialisation from .*: [1-9][0-9]* arrays loaded" finetune.log finetune.out \
    || fail "finetune transferred no pre-trained parameter"
"$venv_python" - <<'EOF' || fail "finetune summary: $(cat ft/summary.json)"
import json, math
from pathlib import Path

s = json.loads(Path("ft/summary.json").read_text())
assert s["stopped"] == "completed" and s["step"] == 4 and str(s["init"]).startswith("pt/weights"), s
dice = s["test"]["mean"]["dice"]
assert math.isfinite(dice), s["test"]
print(f"wheel_check: finetune: 4 steps from pt/weights, test Dice {dice:.4f} (a tiny network: the pipeline, not accuracy)")
EOF
say "passed"
