#!/bin/sh
# Print the Python 3.13 interpreter the project's venv is built with, or fail saying how to get one.
# Order: $PYTHON_313 if set, python3.13 on PATH (a pyenv shim that cannot run counts as absent), then pyenv's
# own versions folder (these machines keep 3.13 there without making it global).
for candidate in "${PYTHON_313:-}" python3.13 "$(pyenv root 2>/dev/null)"/versions/3.13*/bin/python3.13 \
    "$HOME"/.pyenv/versions/3.13*/bin/python3.13; do
    [ -n "$candidate" ] || continue
    if "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' 2>/dev/null; then
        command -v "$candidate" 2>/dev/null || echo "$candidate"
        exit 0
    fi
done
echo "Python 3.13 is required (the app runs on Azure Functions' Python 3.13 runtime)." >&2
echo "Install it (pyenv install 3.13, or your OS's python3.13 package) or set PYTHON_313=/path/to/python3.13." >&2
exit 1
