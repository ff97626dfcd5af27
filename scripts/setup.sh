#!/usr/bin/env bash
# Set up this checkout on Debian 12: system packages, a virtual environment in .venv, the runner command.
#   scripts/setup.sh          what `runner launch matrix.yml` needs on this machine (a C compiler)
#   scripts/setup.sh --test   also what the test suite needs (sshd, QEMU, libvirt, podman, a guest kernel,
#                             the `share` extra: s3fs and aiohttp for `runner dataset publish/fetch`,
#                             Debian's chromium for the report's browser test)
# Idempotent: packages already present are not installed again. Needs root (or sudo) for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"

want_tests=0
[[ "${1:-}" == "--test" ]] && want_tests=1

base_pkgs=(gcc libc6-dev make python3-venv python3-dev)
test_pkgs=(openssh-server openssh-client iproute2 procps psmisc busybox-static dropbear-bin cpio gzip
           qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-clients linux-image-amd64
           podman runc uidmap flex bison bc libelf-dev libssl-dev linux-source xz-utils mmdebstrap e2fsprogs
           stress-ng chromium)  # chromium: the report's browser test drives it with Playwright (no `playwright install`)
pkgs=("${base_pkgs[@]}")
(( want_tests )) && pkgs+=("${test_pkgs[@]}")

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if (( ${#missing[@]} )); then
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q >/dev/null
  # Services must not start (or fail to start) during the install in containers without an init system.
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null; $SUDO chmod +x /usr/sbin/policy-rc.d
  $SUDO apt-get install -y -q "${missing[@]}" >/dev/null
  $SUDO rm -f /usr/sbin/policy-rc.d
fi

# Shared directories, so every user of the machine can run campaigns on it:
# - campaign holds on this host (runner.lab.reservations): a user must be able to take over another's
#   expired hold, so it is not sticky;
# - campaign work directories (builds of the workloads): sticky, like /tmp.
[[ -w /var/lib/runner/holds ]] || { $SUDO install -d /var/lib/runner/holds && $SUDO chmod 2777 /var/lib/runner/holds; }
[[ -w /var/tmp/runner ]] || { $SUDO install -d /var/tmp/runner && $SUDO chmod 1777 /var/tmp/runner; }

py=""
for cand in python3.11 python3; do
  if command -v "$cand" >/dev/null && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    py=$(command -v "$cand"); break
  fi
done
[[ -n "$py" ]] || { echo "setup: Python 3.11 is needed (Debian 12's python3)" >&2; exit 1; }
if [[ ! -x .venv/bin/python ]]; then
  "$py" -m venv .venv
fi
extras="."
(( want_tests )) && extras=".[test,share]"  # the sharing tests talk to real S3 and HTTP servers on loopback
stamp=".venv/.installed-$(cat pyproject.toml | sha256sum | cut -c1-16)-$want_tests"
if [[ ! -f "$stamp" ]]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q --disable-pip-version-check -e "$extras"
  touch "$stamp"
fi
echo "setup: ready ($(.venv/bin/runner --version))" >&2
