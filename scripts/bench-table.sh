#!/usr/bin/env bash
# Regenerate README.md's benchmark table from one `backstop bench all` run,
# stamped with the commit and the date it ran at, so the figures cannot
# drift from the code.
#
#   scripts/bench-table.sh            # the full suite (release build)
#   scripts/bench-table.sh --quick    # the quick suite (a smoke check of the script)
#   BENCH_JSON=run.json scripts/bench-table.sh   # from a saved `--json bench all` output
#
# The table goes between the README's <!-- bench-table:start --> and
# <!-- bench-table:end --> markers; nothing else in the README changes.
set -euo pipefail
cd "$(dirname "$0")/.."

commit=$(git rev-parse --short HEAD)
git diff --quiet HEAD -- src sql migrations || commit="$commit+uncommitted"
date=$(date -u +%Y-%m-%d)

json_file=${BENCH_JSON:-}
if [[ -z "$json_file" ]]; then
    json_file=$(mktemp)
    trap 'rm -f "$json_file"' EXIT
    cargo run --release -q -- --json bench all "$@" >"$json_file"
fi

table=$(python3 - "$commit" "$date" "$json_file" <<'PY'
import json, sys
commit, date = sys.argv[1], sys.argv[2]
r = json.load(open(sys.argv[3]))
def v(x):
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.2f}"
print(f"`backstop bench all{' --quick' if r['quick'] else ''}` at commit `{commit}`, {date}, "
      f"{r['seconds'] / 60:.0f} minutes; {r['server']}.")
print()
print("| figure | value | baseline (same run) | baseline value | ratio (rounds' range) |")
print("|---|---|---|---|---|")
for f in r["figures"]:
    ratio = "" if f["ratio"] is None else f"{f['ratio']:.2f}"
    # The gateway's ratios are medians of rounds: their range shows how far one strays.
    rounds = f.get("rounds") or []
    if ratio and len(rounds) > 1:
        ratio += f" ({min(rounds):.2f}-{max(rounds):.2f})"
    print(f"| {f['what']} | {v(f['value'])} {f['unit']} | {f['baseline_what']} | {v(f['baseline'])} | {ratio} |")
PY
)

python3 - "$table" <<'PY'
import sys, re
table = sys.argv[1]
s = open("README.md").read()
start, end = "<!-- bench-table:start -->", "<!-- bench-table:end -->"
if start not in s or end not in s:
    sys.exit("README.md has no bench-table markers")
head, rest = s.split(start, 1)
_, tail = rest.split(end, 1)
open("README.md", "w").write(head + start + "\n" + table + "\n" + end + tail)
PY
echo "README.md: benchmark table regenerated (commit $commit, $date)"
