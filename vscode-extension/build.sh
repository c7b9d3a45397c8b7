#!/usr/bin/env bash
# Build the extension from a clean checkout: install, lint, test, package.
# Prints the path of the .vsix on success; exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")"

export CI=1 npm_config_fund=false npm_config_audit=false npm_config_update_notifier=false

# --ignore-scripts: nothing here needs install scripts (they would only try to fetch
# or build the optional keytar/vsce-sign binaries that packaging does not use).
npm ci --no-progress --ignore-scripts
npm run lint
npm test
rm -f ./*.vsix
npm run package

vsix=$(ls "$PWD"/anycode-*.vsix)
echo "$vsix"
