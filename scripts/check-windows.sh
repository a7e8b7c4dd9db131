#!/usr/bin/env bash
# Type-checks the CLI for Windows: cargo check --target x86_64-pc-windows-gnu.
# Installs what it needs when missing: the target's standard library (rustup)
# and a MinGW C compiler (Debian's gcc-mingw-w64-x86-64, for aws-lc-sys and
# other C build scripts). Nothing is linked or run on Windows.
# Usage: scripts/check-windows.sh [extra cargo check arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

target=x86_64-pc-windows-gnu

if ! rustup target list --installed | grep -qx "$target"; then
  echo "installing the Rust target $target" >&2
  rustup target add "$target"
fi

if ! command -v x86_64-w64-mingw32-gcc >/dev/null; then
  echo "installing the MinGW C compiler (gcc-mingw-w64-x86-64)" >&2
  sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq gcc-mingw-w64-x86-64 >/dev/null
fi

start=$SECONDS
RUSTFLAGS="${RUSTFLAGS:-} -D warnings" cargo check -p kinesin-cli --target "$target" --all-targets "$@"
echo "cargo check (Windows, kinesin-cli): ok in $((SECONDS - start))s" >&2
