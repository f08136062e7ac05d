#!/usr/bin/env bash
# Idempotent installer of the project's tools into project-local directories.
#
#   infra/bootstrap.sh [moto|localstripe|lambda|sam|all|rust-components]...   (no argument = all)
#
#   moto             moto[server] + waitress -> the local AWS emulator, infra/emulator.py
#   localstripe      localstripe (a stateful fake Stripe) -> the tests' Stripe, infra/localstripe_server.py
#   lambda           cargo-lambda (+ ziglang) -> .venv/bin/cargo-lambda ("cargo lambda" once .venv/bin is on PATH)
#   sam              aws-sam-cli + cfn-lint  -> .venv/bin/sam, .venv/bin/cfn-lint
#   all              the four above
#   rust-components  rustup component add rustfmt clippy (only if missing)
#   openapi-lint     openapi-spec-validator -> .venv/bin/openapi-spec-validator (lints docs/openapi.json)
#   chromium         Debian's chromium + chromium-driver (apt-get, only when /usr/bin/chromium or
#                    /usr/bin/chromedriver is missing) for the headless-browser tests
#
# Everything Python lives in one virtualenv, <repo>/.venv, created with `uv venv` from the
# machine's python3 (uv never downloads an interpreter here). Versions are pinned below; a
# changed pin is picked up on the next run. When everything is present the script only runs one
# short python3 process to read the installed versions (~50 ms), so callers (make test, .ci/run)
# may run it unconditionally.
#
# Cold timings (2 cores, empty uv cache, packages from PyPI), measured 2026-11:
#   uv venv          ~0.1 s
#   moto             ~3 s
#   localstripe      ~1 s   (aiohttp, python-dateutil)
#   lambda           ~3 s   (cargo-lambda wheel 14 MB + ziglang wheel ~50 MB)
#   sam              ~8 s   (aws-sam-cli + cfn-lint, ~100 packages)
#   all (fresh)      ~12 s; with a warm uv cache ~2 s; nothing to do: ~0.05 s
set -euo pipefail

MOTO_VERSION=5.2.5
# moto is served by waitress (keep-alive HTTP/1.1), see infra/emulator.py.
WAITRESS_VERSION=3.0.2
# A fake Stripe for the integration tests (tests/it/localstripe.rs); objects shaped like API 2017-08-15.
LOCALSTRIPE_VERSION=1.15.10
CARGO_LAMBDA_VERSION=1.9.2
# cargo-lambda only asks for ziglang>=0.10; pin the zig it was verified with (cross builds via zig).
ZIGLANG_VERSION=0.15.2
SAM_CLI_VERSION=1.170.0
CFN_LINT_VERSION=1.58.0
OPENAPI_SPEC_VALIDATOR_VERSION=0.8.4

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
export UV_PYTHON_DOWNLOADS=never

log() { printf 'bootstrap: %s\n' "$*" >&2; }

want_moto=0 want_localstripe=0 want_lambda=0 want_sam=0 want_rust=0
want_openapi_lint=0 want_chromium=0
[ "$#" -eq 0 ] && set -- all
for arg in "$@"; do
    case "$arg" in
        openapi-lint) want_openapi_lint=1 ;;
        chromium) want_chromium=1 ;;
        moto) want_moto=1 ;;
        localstripe) want_localstripe=1 ;;
        lambda) want_lambda=1 ;;
        sam) want_sam=1 ;;
        all) want_moto=1 want_localstripe=1 want_lambda=1 want_sam=1 ;;
        rust-components) want_rust=1 ;;
        -h | --help)
            sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            log "unknown component '$arg' (expected moto, localstripe, lambda, sam, all or rust-components)"
            exit 2
            ;;
    esac
done

# Prints "name==version" for each requested distribution whose installed version differs
# from the wanted one (or that is missing), and whose console script is absent.
missing() {
    # args: pairs of "dist==version" and the script that must exist in .venv/bin
    local out=""
    if [ ! -x "$PY" ]; then
        while [ "$#" -gt 0 ]; do out+="$1 "; shift 2; done
        printf '%s' "$out"
        return
    fi
    local dists=() scripts=()
    while [ "$#" -gt 0 ]; do dists+=("$1"); scripts+=("$2"); shift 2; done
    "$PY" - "${dists[@]}" <<'EOF' || true
import sys
from importlib import metadata
for req in sys.argv[1:]:
    name, _, want = req.partition("==")
    name = name.split("[")[0]
    try:
        have = metadata.version(name)
    except metadata.PackageNotFoundError:
        have = None
    if have is None or (want != "*" and have != want):
        print(req, end=" ")
EOF
    local i
    for i in "${!scripts[@]}"; do
        [ -n "${scripts[$i]}" ] && [ ! -x "$VENV/bin/${scripts[$i]}" ] && printf '%s ' "${dists[$i]}"
    done
    return 0
}

compute_todo() {
    local args=()
    [ "$want_moto" = 1 ] && args+=("moto[server]==$MOTO_VERSION" moto_server "flask-cors==*" "" "waitress==$WAITRESS_VERSION" waitress-serve)
    [ "$want_localstripe" = 1 ] && args+=("localstripe==$LOCALSTRIPE_VERSION" localstripe)
    [ "$want_lambda" = 1 ] && args+=("cargo-lambda==$CARGO_LAMBDA_VERSION" cargo-lambda "ziglang==$ZIGLANG_VERSION" "")
    [ "$want_sam" = 1 ] && args+=("aws-sam-cli==$SAM_CLI_VERSION" sam "cfn-lint==$CFN_LINT_VERSION" cfn-lint)
    [ "${#args[@]}" -eq 0 ] && return 0
    missing "${args[@]}"
}

# The machine's python3, never the project's venv one (callers such as `make test` put .venv/bin
# first on PATH, and a uv-made venv has neither pip nor uv).
SYS_PYTHON="$(PATH="$(printf '%s' "$PATH" | tr ':' '\n' | grep -vxF "$VENV/bin" | paste -sd: -)" command -v python3)"

ensure_uv() {
    if command -v uv >/dev/null 2>&1 && [ "$(command -v uv)" != "$VENV/bin/uv" ]; then
        UV=(uv)
    elif "$SYS_PYTHON" -m uv --version >/dev/null 2>&1; then
        UV=("$SYS_PYTHON" -m uv)
    else
        log "installing uv (pip)"
        "$SYS_PYTHON" -m pip install --quiet --user uv 2>/dev/null || "$SYS_PYTHON" -m pip install --quiet uv
        UV=("$SYS_PYTHON" -m uv)
    fi
}

python_todo=""
if [ "$want_moto$want_localstripe$want_lambda$want_sam" != "0000" ]; then
    python_todo="$(compute_todo)"
    # "flask-cors==*" is a presence probe for moto's [server] extra, never installed by itself.
    python_todo="${python_todo//flask-cors==\* /moto[server]==$MOTO_VERSION }"
fi

if [ -n "$python_todo" ]; then
    mkdir -p "$ROOT/.tools"
    exec 9>"$ROOT/.tools/bootstrap.lock"
    flock 9 # another bootstrap (e.g. a parallel make target) may be installing right now
    python_todo="$(compute_todo)"
    python_todo="${python_todo//flask-cors==\* /moto[server]==$MOTO_VERSION }"
fi

if [ -n "$python_todo" ]; then
    ensure_uv
    if [ ! -x "$PY" ]; then
        log "creating $VENV (uv venv)"
        "${UV[@]}" venv --quiet --python "$SYS_PYTHON" "$VENV"
    fi
    # Deduplicate, then install everything outstanding in one resolution.
    read -r -a reqs <<<"$(printf '%s\n' $python_todo | sort -u | tr '\n' ' ')"
    log "installing ${reqs[*]}"
    start=$(date +%s)
    "${UV[@]}" pip install --quiet --python "$PY" "${reqs[@]}"
    log "installed in $(($(date +%s) - start)) s"
fi

if [ "$want_rust" = 1 ]; then
    comps=()
    cargo fmt --version >/dev/null 2>&1 || comps+=(rustfmt)
    cargo clippy --version >/dev/null 2>&1 || comps+=(clippy)
    if [ "${#comps[@]}" -gt 0 ]; then
        log "rustup component add ${comps[*]}"
        rustup component add "${comps[@]}"
    fi
fi

# openapi-lint: its own small install (kept out of the shared resolution above).
if [ "$want_openapi_lint" = 1 ]; then
    lint_todo="$(missing "openapi-spec-validator==$OPENAPI_SPEC_VALIDATOR_VERSION" openapi-spec-validator)"
    if [ -n "$lint_todo" ]; then
        ensure_uv
        [ -x "$PY" ] || "${UV[@]}" venv --quiet --python "$SYS_PYTHON" "$VENV"
        log "installing $lint_todo"
        "${UV[@]}" pip install --quiet --python "$PY" $lint_todo
    fi
fi

# chromium: Debian's packages (CI and developers run as root with apt available).
if [ "$want_chromium" = 1 ] && { [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; }; then
    sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    log "installing chromium chromium-driver (apt-get)"
    start=$(date +%s)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
        chromium chromium-driver >/dev/null
    log "installed in $(($(date +%s) - start)) s"
fi
