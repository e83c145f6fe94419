#!/usr/bin/env bash
# Build (once) Helm from the Go module proxy and link it at .tools/helm, for the chart tests
# (`helm lint`, `helm template`). Cached, shared by clones, at
#   $CACHE/helm-<version>/helm   with CACHE=${SIDELIGHT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sidelight}
# A second run only relinks. The build goes to a temp dir renamed into place, so an interrupted
# build never leaves a binary at the cached path. stdout: the binary's path.
set -euo pipefail
VERSION=v3.22.0
main() {
  cd "$(dirname "$0")/.."
  CACHE="${SIDELIGHT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sidelight}"
  mkdir -p .tools "$CACHE"
  dest="$CACHE/helm-$VERSION"
  if [ ! -x "$dest/helm" ]; then
    command -v go >/dev/null || export PATH="/usr/local/go/bin:$PATH"
    tmp=$(mktemp -d "$CACHE/.helm-build.XXXXXX")
    log="$tmp/build.log"
    if ! GOBIN="$tmp/bin" GOFLAGS=-mod=mod CGO_ENABLED=0 go install "helm.sh/helm/v3/cmd/helm@$VERSION" >"$log" 2>&1; then
      cat "$log" >&2
      echo "helm.sh: go install helm.sh/helm/v3/cmd/helm@$VERSION failed" >&2
      exit 1
    fi
    mkdir -p "$tmp/out" && mv "$tmp/bin/helm" "$tmp/out/helm"
    rm -rf "$dest" && mv "$tmp/out" "$dest" && rm -rf "$tmp"
  fi
  ln -sfn "$dest/helm" ".tools/.helm.$$" && mv -fT ".tools/.helm.$$" .tools/helm
  echo "$dest/helm"
}
main "$@"
