#!/usr/bin/env bash
# Idempotent set-up: system data packages, a virtual environment with PyTorch, netslim and its extras.
# A second run is cheap: each step is skipped when its result is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${NETSLIM_VENV:-.venv}
STAMP="$VENV/.netslim-setup"

need_apt=()
[ -d /usr/share/datasets/fashion-mnist ] || need_apt+=(dataset-fashion-mnist)
command -v bible >/dev/null 2>&1 || need_apt+=(bible-kjv-text)
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "setup: installing Debian packages: ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"

# Re-install only when the dependency list changed.
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$want" ]; then
  echo "setup: installing Python packages into $VENV (first run takes a few minutes)"
  "$VENV/bin/pip" install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1 2>&1 | grep -v "is ignored: it is neither" || true
  "$VENV/bin/pip" install -q --disable-pip-version-check -e ".[dev,vision,hf,plots,export,bench,data]" 2>&1 | grep -v "is ignored: it is neither" || true
  "$VENV/bin/python" -c "import torch, torchvision, netslim" || { echo "setup: install failed" >&2; exit 1; }
  echo "$want" > "$STAMP"
fi
