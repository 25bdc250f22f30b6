#!/bin/sh
# ctest's web_e2e: runs e2e.mjs (the web app in headless Chromium against a
# real `pixseek serve`), or exits 77 (skipped) when node or chromium is absent.
#   run_e2e.sh PIXSEEK_BINARY FIXTURE_BINARY ARTIFACT_DIR
# $PIXSEEK_CHROMIUM overrides the browser (default: chromium on $PATH).
if ! command -v node >/dev/null 2>&1; then
  echo "SKIPPED: node is not installed (Debian: apt-get install nodejs npm)"
  exit 77
fi
chromium=${PIXSEEK_CHROMIUM:-$(command -v chromium || command -v chromium-browser)}
if [ -z "$chromium" ] || [ ! -x "$chromium" ]; then
  echo "SKIPPED: chromium is not installed (Debian: apt-get install chromium)"
  exit 77
fi
here=$(cd "$(dirname "$0")" && pwd)
PIXSEEK_CHROMIUM=$chromium exec node "$here/e2e.mjs" "$@"
