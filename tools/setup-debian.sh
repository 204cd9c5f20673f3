#!/usr/bin/env bash
# Installs everything qkern's build, tests and benchmarks need on a fresh
# Debian 12 machine (x86-64 host, aarch64 cross toolchain + qemu for the Arm
# tests). Idempotent; run as root or with sudo available.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive

if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  $SUDO dpkg --add-architecture arm64
fi
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends \
  cmake make g++ pkg-config python3 python3-pip \
  libhwy-dev libgtest-dev libbenchmark-dev libeigen3-dev \
  g++-aarch64-linux-gnu qemu-user \
  libhwy-dev:arm64 libgtest-dev:arm64
