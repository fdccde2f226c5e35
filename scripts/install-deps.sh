#!/bin/bash
# Installs what building, running and testing skiff needs on a Debian
# machine, and nothing that is already there. Safe to run again and again;
# `make up`, `make test` and CI all start with it.
set -euo pipefail

# Debian packages skiff uses at run time or in tests. Each later capability
# (runc, iproute2, nftables, a registry, ...) adds its packages here.
APT_PACKAGES=(ca-certificates git
	busybox-static  # agent/image tests: builds a test image from /bin/busybox
	docker-registry # agent/image tests: a real OCI registry on loopback
	runc            # agent/runtime: runs containers (and its tests)
	iproute2        # tests: ip netns, ip route to inspect what the agent programmed
	nftables        # tests and operators: nft list table ip skiff (the agent itself uses netlink)
)

log() { echo "install-deps: $*" >&2; }

missing=()
for p in "${APT_PACKAGES[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	if [[ $(id -u) -ne 0 ]]; then
		log "missing Debian packages: ${missing[*]}; run as root or install them"
		exit 1
	fi
	log "installing ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Go: the machine's toolchain in /usr/local/go, else Debian's. go.mod names
# the version; a newer toolchain is fetched through the module proxy when
# the installed one is older (GOTOOLCHAIN=auto).
export PATH="/usr/local/go/bin:$PATH"
if ! command -v go >/dev/null; then
	if [[ $(id -u) -ne 0 ]]; then
		log "Go is not installed; run as root or install Go 1.21 or newer"
		exit 1
	fi
	log "installing Go from Debian"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go >/dev/null
fi
minor=$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')
if [[ -z "$minor" || "$minor" -lt 21 ]]; then
	log "$(go version) is too old to fetch the toolchain go.mod asks for; install Go 1.21 or newer"
	exit 1
fi

cd "$(dirname "$0")/.."
go mod download
