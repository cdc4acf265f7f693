#!/usr/bin/env bash
# Build the tutorial book offline into build/book/_build/html/ (open index.html).
#
#   docs/build_book.sh            # from the repository root, with `pip install -e ".[docs,lab]"`
#
# 1. docs/prepare_book.py executes every notebook with papermill and stages
#    them with these pages under build/book-src/ (about 2 minutes);
# 2. Jupyter Book 1 builds the HTML from the executed notebooks, with every
#    warning an error (-W), so a broken link or an unknown output type fails.
set -euo pipefail
cd "$(dirname "$0")/.."
python docs/prepare_book.py "$@"
jupyter-book build build/book-src --path-output build/book --builder html --all -W --keep-going
echo "The book: build/book/_build/html/index.html"
