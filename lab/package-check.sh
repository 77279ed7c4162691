#!/usr/bin/env bash
# The release path, checked: build the sdist and the wheel (python -m build), `twine check`
# their metadata (the README renders on PyPI), install the wheel into a fresh venv and run the
# installed composeguard. Then install the wheel the way README's Install says (pipx, as root,
# PIPX_HOME=/opt/pipx PIPX_BIN_DIR=/usr/local/bin; --force, so again on every run) and check
# that every ExecStart= program of contrib/systemd/*.service is there and that
# /usr/local/bin/composeguard is this version. Leaves behind .venv's tools and that install
# (the tests run .venv's composeguard: lab/harness.py looks beside its python and in .venv
# before PATH).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
work=$(mktemp -d /tmp/composeguard-package.XXXXXX)
trap 'rm -rf "$work"' EXIT
.venv/bin/python -m build --outdir "$work/dist" . >"$work/build.log" 2>&1 \
    || { tail -n 30 "$work/build.log" >&2; echo "package: python -m build failed" >&2; exit 1; }
.venv/bin/twine check --strict "$work"/dist/*
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q --disable-pip-version-check "$work"/dist/*.whl
out=$("$work/venv/bin/composeguard" version)
version=$(.venv/bin/python -c 'import tomllib; print(tomllib.load(open("pyproject.toml","rb"))["project"]["version"])')
case $out in
    "composeguard $version"*) echo "package: built, checked and installed composeguard $version from the wheel" ;;
    *) echo "package: the installed wheel says '$out', not composeguard $version" >&2; exit 1 ;;
esac

[ "$(id -u)" -eq 0 ] \
    || { echo "package: run as root: README's install writes /opt/pipx and /usr/local/bin" >&2; exit 1; }
command -v pipx >/dev/null || { echo "package: pipx not found (lab/install-packages.sh installs it)" >&2; exit 1; }
PIPX_HOME=/opt/pipx PIPX_BIN_DIR=/usr/local/bin pipx install --force "$work"/dist/*.whl >"$work/pipx.log" 2>&1 \
    || { tail -n 30 "$work/pipx.log" >&2; echo "package: pipx install failed" >&2; exit 1; }
target=$(readlink -f /usr/local/bin/composeguard || true)
[ "$target" = /opt/pipx/venvs/composeguard/bin/composeguard ] || {
    cat "$work/pipx.log" >&2
    echo "package: /usr/local/bin/composeguard is not pipx's (it leads to '${target:-nothing}')" >&2; exit 1; }
for unit in contrib/systemd/*.service; do
    mapfile -t programs < <(sed -n 's/^ExecStart=[-@:+!]*\([^[:space:]]*\).*/\1/p' "$unit")
    [ "${#programs[@]}" -gt 0 ] || { echo "package: $unit has no ExecStart=" >&2; exit 1; }
    for exe in "${programs[@]}"; do
        [ -f "$exe" ] && [ -x "$exe" ] \
            || { echo "package: $unit runs $exe, which README's install does not provide" >&2; exit 1; }
    done
done
out=$(/usr/local/bin/composeguard version)
case $out in
    "composeguard $version"*)
        echo "package: installed as README says (pipx): /usr/local/bin/composeguard $version;" \
            "every ExecStart= program of contrib/systemd is there" ;;
    *) echo "package: /usr/local/bin/composeguard says '$out', not composeguard $version" >&2; exit 1 ;;
esac
