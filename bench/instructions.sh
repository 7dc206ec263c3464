#!/bin/sh
# Instructions per ping of bench/seller_instructions.py SCENARIO in the checkout DIR (default: here):
# (I(2,500) - I(500)) / 2,000 under cachegrind, start-up cancelled out.
# The harness is this checkout's, the code measured DIR's (its .venv): any two checkouts compare.
# Usage: bench/instructions.sh SCENARIO [DIR [none]]   (none: without the books)
set -e
scenario=$1
dir=${2:-.}
books=${3:-}
script=$(cd "$(dirname "$0")" && pwd)/seller_instructions.py  # this checkout's harness, any checkout's code
count() {
    out=$(mktemp)
    (cd "$dir" && PYTHONHASHSEED=0 valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null \
        .venv/bin/python "$script" "$scenario" "$1" $books 2>"$out" >/dev/null)
    sed -n 's/.*I *refs: *//p' "$out" | tr -d ,
    rm -f "$out"
}
small=$(count 500)
large=$(count 2500)
echo "$scenario $dir: $(( (large - small) / 2000 )) instructions per ping"
