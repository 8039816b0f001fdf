#!/usr/bin/env bash
# Reproduce what CI does: clone the committed HEAD into a temp folder and run the README's test command.
# Usage: scripts/fresh_clone_check.sh [make target...]   (default: test)
set -euo pipefail
repo=$(git rev-parse --show-toplevel)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git clone -q "$repo" "$work/clone"
cd "$work/clone"
make "${@:-test}"
