#!/usr/bin/env bash
# Build the BudgetOps image as budgetops:test on a machine without an image registry
# (docs/image.md): a Debian bookworm base made with debootstrap and imported into podman,
# then `podman build --isolation chroot` of the Dockerfile on it.
#
#   bash hack/image.sh            # build (or reuse) everything; prints each step and its time
#
# Idempotent: podman and debootstrap are installed only when missing, the base is made once
# and kept under $BUDGETOPS_IMAGE_CACHE (default ~/.cache/budgetops/image/), and podman's
# layer cache makes an unchanged build take seconds. Needs root (or sudo), like apt-get.
# Environment: BUDGETOPS_IMAGE_TAG (default budgetops:test), BUDGETOPS_BASE_TAG (default
# budgetops-base:bookworm).
set -euo pipefail
cd "$(dirname "$0")/.."

TAG="${BUDGETOPS_IMAGE_TAG:-budgetops:test}"
BASE_TAG="${BUDGETOPS_BASE_TAG:-budgetops-base:bookworm}"
CACHE="${BUDGETOPS_IMAGE_CACHE:-$HOME/.cache/budgetops/image}"
SUITE=bookworm
PACKAGES=python3,python3-venv,ca-certificates
# Changing how the base is made changes this key, and so makes the base again.
BASE_KEY="$SUITE-minbase-$PACKAGES-trimmed-1"

SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo

START=$SECONDS
STEP_START=$SECONDS
step() { # step NAME: announce a step, and how long the one before it took
    STEP_START=$SECONDS
    echo "==> $*"
}
took() { echo "    ($(( SECONDS - STEP_START )) s)"; }
die() { echo "hack/image.sh: $*" >&2; exit 1; }

mkdir -p "$CACHE"
# One build at a time on this machine: two suites running at once share podman's store.
exec 9>"$CACHE/lock"
flock 9

# 1. Tools.
missing=()
command -v podman >/dev/null || missing+=(podman)
command -v debootstrap >/dev/null || missing+=(debootstrap)
step "tools: ${missing[*]:-podman and debootstrap already installed}"
if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt_install() {
        $SUDO apt-get install -y -q --no-install-recommends -o Dpkg::Use-Pty=0 "${missing[@]}"
    }
    # The package lists a machine comes with usually do; refresh them only when they don't.
    apt_install >"$CACHE/apt.log" 2>&1 || {
        $SUDO apt-get update -q >>"$CACHE/apt.log" 2>&1 && apt_install >>"$CACHE/apt.log" 2>&1
    } || {
        tail -n 20 "$CACHE/apt.log" >&2
        die "could not install ${missing[*]} with apt-get (log: $CACHE/apt.log)"
    }
fi
podman --version | sed 's/^/    /'
took

# 2. The base: Debian bookworm's python3 (3.11) and its venv module, nothing else.
mirror() { # the Debian archive this machine's apt is configured for, as apt itself reads it
    apt-cache policy 2>/dev/null | awk -v want="$SUITE/main" '
        / Packages$/ { url = $2; suite = $3; next }
        /^ +release / && /o=Debian,/ && suite ~ /^[a-z]+\/main$/ {
            if (suite == want) { print url; found = 1; exit }
            if (!other) other = url
        }
        END { if (!found && other) print other }'
}
step "base image $BASE_TAG"
if [ "$($SUDO podman image inspect --format '{{index .Labels "budgetops.base"}}' "$BASE_TAG" \
        2>/dev/null)" = "$BASE_KEY" ]; then
    echo "    already in podman's store"
else
    tarball="$CACHE/base-$SUITE.tar"
    if [ ! -s "$tarball" ] || [ "$(cat "$tarball.key" 2>/dev/null)" != "$BASE_KEY" ]; then
        url="$(mirror)"
        [ -n "$url" ] || die "no Debian archive in this machine's apt sources (apt-cache policy)"
        root="$CACHE/rootfs"
        $SUDO rm -rf "$root" "$tarball" "$tarball.key"
        echo "    debootstrap --variant=minbase --include=$PACKAGES $SUITE (from the apt sources' archive)"
        since=$SECONDS
        $SUDO debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$url" \
            >"$CACHE/debootstrap.log" 2>&1 || {
            tail -n 20 "$CACHE/debootstrap.log" >&2
            die "debootstrap failed (log: $CACHE/debootstrap.log)"
        }
        echo "    debootstrap took $(( SECONDS - since )) s"
        # What a container never reads: downloaded packages, package lists, docs, the
        # machine's own resolver and host name.
        $SUDO sh -c "cd '$root' && rm -rf var/cache/apt/archives/*.deb var/lib/apt/lists/* \
            usr/share/doc/* usr/share/man/* usr/share/info/* usr/share/locale/* \
            var/log/* etc/resolv.conf etc/hostname"
        $SUDO tar --numeric-owner -C "$root" -cf "$tarball.part" .
        mv "$tarball.part" "$tarball"
        echo "$BASE_KEY" >"$tarball.key"
        $SUDO rm -rf "$root"
        echo "    made $tarball ($(du -h "$tarball" | cut -f1))"
    else
        echo "    from $tarball"
    fi
    $SUDO podman import --quiet --change "LABEL budgetops.base=\"$BASE_KEY\"" \
        --change "ENV LANG=C.UTF-8" "$tarball" "$BASE_TAG" >/dev/null
fi
took

# 3. The image. Skipped when nothing it is built from changed since the last build: the build
# context (as .dockerignore leaves it), the Dockerfile and the base.
context_key() {
    {
        $SUDO podman image inspect --format '{{.Id}}' "$BASE_TAG"
        find Dockerfile .dockerignore pyproject.toml README.md operator -type f \
            ! -path '*/__pycache__/*' ! -name '*.py[co]' ! -path '*.egg-info/*' -print0 |
            LC_ALL=C sort -z | xargs -0 sha256sum
    } | sha256sum | cut -c1-64
}
key="$(context_key)"
old="$($SUDO podman image inspect --format '{{.Id}}' "$TAG" 2>/dev/null || true)"
step "podman build --isolation chroot --build-arg BASE=localhost/$BASE_TAG -t $TAG ."
if [ -n "$old" ] && [ "$(cat "$CACHE/built" 2>/dev/null)" = "$key $old" ]; then
    echo "    $TAG is up to date (same context, Dockerfile and base as its build)"
    new="$old"
else
    # pip in the build reads the machine's pip configuration (index, CA bundle, timeout),
    # handed over as build secrets: they reach no layer and change no cache key.
    pip_config="$(python3 -m pip config list 2>/dev/null || true)"
    pip_setting() { # pip_setting NAME: its value from PIP_<NAME>, else from pip's configuration
        local env scope value
        env="PIP_$(echo "$1" | tr 'a-z-' 'A-Z_')"
        if [ -n "${!env:-}" ]; then echo "${!env}"; return; fi
        for scope in global install; do
            value="$(printf '%s\n' "$pip_config" | sed -n "s/^$scope\.$1='\(.*\)'\$/\1/p")"
            if [ -n "$value" ]; then echo "$value"; return; fi
        done
    }
    secrets="$(mktemp -d)"
    trap 'rm -rf "$secrets"' EXIT
    {
        echo "[global]"
        for name in index-url extra-index-url trusted-host; do
            value="$(pip_setting "$name")"
            [ -z "$value" ] || echo "$name = $value"
        done
        timeout="$(pip_setting default-timeout)"
        [ -n "$timeout" ] || timeout="$(pip_setting timeout)"
        [ -z "$timeout" ] || echo "timeout = $timeout"
        cert="$(pip_setting cert)"
        [ -n "$cert" ] || cert="${REQUESTS_CA_BUNDLE:-${CURL_CA_BUNDLE:-}}"
        if [ -n "$cert" ] && [ -f "$cert" ]; then
            cp "$cert" "$secrets/ca.crt"
            echo "cert = /run/secrets/pipca"
        else
            : >"$secrets/ca.crt"
        fi
    } >"$secrets/pip.conf"
    echo "    pip settings passed in: $(sed -n 's/ = .*//p' "$secrets/pip.conf" | tr '\n' ' ')"
    $SUDO podman build --isolation chroot --network host \
        --build-arg "BASE=localhost/$BASE_TAG" \
        --secret "id=pipconf,src=$secrets/pip.conf" --secret "id=pipca,src=$secrets/ca.crt" \
        -t "$TAG" . >"$CACHE/build.log" 2>&1 || {
        tail -n 30 "$CACHE/build.log" >&2
        die "podman build failed (log: $CACHE/build.log)"
    }
    new="$($SUDO podman image inspect --format '{{.Id}}' "$TAG")"
    echo "    $(grep -c -- '--> Using cache' "$CACHE/build.log" || true) steps from podman's cache"
    if [ -n "$old" ] && [ "$old" != "$new" ]; then
        # The image this build replaced: dropped, so rebuilds don't fill the disk (kept if in use).
        $SUDO podman rmi "$old" >/dev/null 2>&1 || true
    fi
    # The context may have changed during the build: the key read before it is the safe one.
    echo "$key $new" >"$CACHE/built"
fi
took

size="$($SUDO podman image inspect --format '{{.Size}}' "$TAG")"
echo "==> $TAG ${new:0:12}: $(( (size + 500000) / 1000000 )) MB; $(( SECONDS - START )) s in all"
