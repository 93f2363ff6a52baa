#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks for the local stack, idempotently:
# a second run installs and downloads nothing. Kafka's jars (Maven) and the
# embedded Temporal server (go build) are fetched and built by the launcher on
# first use, into ~/.cache/chat-poc.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
compgen -G '/usr/lib/postgresql/*/bin/pg_basebackup' >/dev/null || missing+=(postgresql)
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || missing+=(maven)
# Browser tests drive Debian's real Chromium; fonts-liberation is only a
# "Recommends" of it, and screenshots need readable fonts.
command -v chromium >/dev/null || missing+=(chromium fonts-liberation)

if ((${#missing[@]})); then
	if [[ $(id -u) -ne 0 ]]; then
		echo "bootstrap: missing ${missing[*]}; install them with: sudo apt-get install -y ${missing[*]}" >&2
		exit 1
	fi
	echo "bootstrap: installing ${missing[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

command -v go >/dev/null || { echo "bootstrap: go not found; install Go 1.26 (https://go.dev/doc/install)" >&2; exit 1; }
go mod download
(cd deploy/temporal && go mod download)

# The tests render deploy/k8s with `kubectl kustomize`, whose kustomize must
# be v5 (the manifests use its syntax). Debian 12's own kubectl
# (kubernetes-client 1.20) embeds kustomize v2, too old, so a machine
# without a recent kubectl gets kustomize v5.5.0 — the one kubectl 1.32
# embeds — from the Go module proxy into bin/ instead.
if ! kubectl version --client -o json 2>/dev/null | grep -q '"kustomizeVersion": "v5\.' && [[ ! -x bin/kustomize ]]; then
	echo "bootstrap: no kubectl with kustomize v5; building bin/kustomize (sigs.k8s.io/kustomize/kustomize/v5@v5.5.0)" >&2
	GOBIN="$PWD/bin" go install sigs.k8s.io/kustomize/kustomize/v5@v5.5.0
fi
