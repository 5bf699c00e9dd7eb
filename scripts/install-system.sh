#!/usr/bin/env bash
# Installs the system packages the agent and its tests need (Debian/Ubuntu).
# espeak-ng: TTS fallback and test speech; flite: more test voices (bench accuracy);
# sox: test audio. --test adds what only the tests need: chromium (browser tests), redis-server
# and haproxy (several workers sharing one registry behind a load balancer, docs/deploy.md),
# docker-compose (validates deploy/docker-compose.yml; no Docker daemon is needed for that).
set -euo pipefail
need=()
command -v espeak-ng >/dev/null || need+=(espeak-ng)
command -v flite >/dev/null || need+=(flite)
command -v sox >/dev/null || need+=(sox)
if [[ "${1:-}" == "--test" || "${1:-}" == "--browser" ]]; then
  command -v chromium >/dev/null || need+=(chromium chromium-driver)
  command -v redis-server >/dev/null || need+=(redis-server)
  command -v haproxy >/dev/null || need+=(haproxy)
  command -v docker-compose >/dev/null || need+=(docker-compose)  # checks deploy/docker-compose.yml
fi
if ((${#need[@]})); then
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  echo "==> installing system packages: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq -o DPkg::Lock::Timeout=300 "${need[@]}"
fi
