#!/bin/sh
# `docker run IMAGE worker --devices 0,1` runs `regtune worker --devices 0,1`; a first argument
# that is a program on PATH (sh, python, optuna-dashboard, ...) runs that program instead.
set -eu
if [ "$#" -eq 0 ]; then
    set -- serve --workers 0
fi
if command -v "$1" >/dev/null 2>&1; then
    exec "$@"
fi
exec regtune "$@"
