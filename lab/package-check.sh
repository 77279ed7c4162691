#!/usr/bin/env bash
# The release path, checked: build the sdist and the wheel (python -m build), `twine check`
# their metadata (the README renders on PyPI), install the wheel into a fresh venv and run the
# installed composeguard. Leaves nothing behind but .venv's tools.
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
