#!/usr/bin/env python3
"""Render a terminal screen captured with `tmux capture-pane -p -e -N` as an SVG.

    tmux capture-pane -p -e -N -t room > screen.ans
    scripts/ansi2svg.py --cols 140 --rows 42 screen.ans > screen.svg
    rsvg-convert screen.svg -o screen.png

Understands SGR colours (the 16 palette colours, the 256-colour cube and
greys, and 24-bit truecolor), bold, dim, italic, underline, strikethrough,
hidden and reverse video. Reverse video swaps the *resolved* colours, so a
cell with the default foreground and background (ratatui's selected row)
becomes dark text on a light bar instead of vanishing.

Every character is placed in its own cell (explicit x positions), wide
characters (East Asian Wide/Fullwidth) take two cells, and box-drawing lines
and block elements are drawn as geometry so borders join and sparklines are
exact whatever the font. Standard library only.
"""

import argparse
import html
import re
import sys
import unicodedata

# A dark theme; colours 0-15 as a terminal would show them.
DEFAULT_FG = (0xD4, 0xD7, 0xDD)
DEFAULT_BG = (0x16, 0x1A, 0x22)
PALETTE16 = [
    (0x1F, 0x23, 0x2B),  # 0 black
    (0xE0, 0x5A, 0x5A),  # 1 red
    (0x7C, 0xC4, 0x6A),  # 2 green
    (0xE5, 0xC0, 0x5C),  # 3 yellow
    (0x5C, 0x9C, 0xE6),  # 4 blue
    (0xC6, 0x78, 0xDD),  # 5 magenta
    (0x56, 0xB6, 0xC2),  # 6 cyan
    (0xC8, 0xCC, 0xD4),  # 7 white (grey)
    (0x80, 0x87, 0x94),  # 8 bright black (dark grey): readable on the background
    (0xFF, 0x7B, 0x72),  # 9 bright red
    (0x98, 0xE0, 0x86),  # 10 bright green
    (0xF5, 0xD6, 0x7B),  # 11 bright yellow
    (0x7D, 0xB8, 0xFF),  # 12 bright blue
    (0xDA, 0x9B, 0xF0),  # 13 bright magenta
    (0x7F, 0xD7, 0xE2),  # 14 bright cyan
    (0xF4, 0xF6, 0xFA),  # 15 bright white
]
# The background a red "banner" cell gets is palette 1; make it a deeper red
# than the red used for text so white-on-red stays readable.
BG_OVERRIDES = {1: (0xB3, 0x26, 0x26), 9: (0xC8, 0x3A, 0x3A)}


def color256(n):
    if n < 16:
        return PALETTE16[n]
    if n < 232:
        n -= 16
        steps = [0, 95, 135, 175, 215, 255]
        return (steps[n // 36], steps[(n // 6) % 6], steps[n % 6])
    g = 8 + (n - 232) * 10
    return (g, g, g)


class Style:
    __slots__ = ("fg", "bg", "bold", "dim", "italic", "underline", "strike", "reverse", "hidden")

    def __init__(self):
        self.reset()

    def reset(self):
        # fg/bg: None (default), ("i", index) or ("rgb", (r, g, b))
        self.fg = None
        self.bg = None
        self.bold = self.dim = self.italic = self.underline = False
        self.strike = self.reverse = self.hidden = False

    def copy(self):
        s = Style.__new__(Style)
        for k in Style.__slots__:
            setattr(s, k, getattr(self, k))
        return s

    def key(self):
        return tuple(getattr(self, k) for k in Style.__slots__)


def parse_ext_color(params, i):
    """Parse 38/48 extended colour starting at params[i] (the 38/48). Returns (colour, next_i)."""
    if i + 1 < len(params) and params[i + 1] == 5 and i + 2 < len(params):
        return ("i", params[i + 2] & 0xFF), i + 3
    if i + 1 < len(params) and params[i + 1] == 2 and i + 4 < len(params):
        r, g, b = (max(0, min(255, v)) for v in params[i + 2 : i + 5])
        return ("rgb", (r, g, b)), i + 5
    return None, len(params)


def apply_sgr(style, raw):
    # Colon sub-parameters (38:2::r:g:b) are treated like semicolons.
    parts = [p for p in re.split("[;:]", raw)] if raw else ["0"]
    params = []
    for p in parts:
        try:
            params.append(int(p) if p else 0)
        except ValueError:
            params.append(0)
    i = 0
    while i < len(params):
        p = params[i]
        if p == 0:
            style.reset()
        elif p == 1:
            style.bold = True
        elif p == 2:
            style.dim = True
        elif p == 3:
            style.italic = True
        elif p in (4, 21):
            style.underline = True
        elif p == 7:
            style.reverse = True
        elif p == 8:
            style.hidden = True
        elif p == 9:
            style.strike = True
        elif p == 22:
            style.bold = style.dim = False
        elif p == 23:
            style.italic = False
        elif p == 24:
            style.underline = False
        elif p == 27:
            style.reverse = False
        elif p == 28:
            style.hidden = False
        elif p == 29:
            style.strike = False
        elif 30 <= p <= 37:
            style.fg = ("i", p - 30)
        elif p == 38:
            c, i = parse_ext_color(params, i)
            if c is not None:
                style.fg = c
            continue
        elif p == 39:
            style.fg = None
        elif 40 <= p <= 47:
            style.bg = ("i", p - 40)
        elif p == 48:
            c, i = parse_ext_color(params, i)
            if c is not None:
                style.bg = c
            continue
        elif p == 49:
            style.bg = None
        elif 90 <= p <= 97:
            style.fg = ("i", p - 90 + 8)
        elif 100 <= p <= 107:
            style.bg = ("i", p - 100 + 8)
        i += 1


def char_width(ch):
    if unicodedata.combining(ch):
        return 0
    cat = unicodedata.category(ch)
    if cat in ("Mn", "Me", "Cf"):
        return 0
    if unicodedata.east_asian_width(ch) in ("W", "F"):
        return 2
    return 1


ESC_RE = re.compile(r"\x1b\[([0-9;:?]*)([@-~])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][0-9A-Za-z]|\x1b[=>78M]")


def parse(text, cols, rows):
    """Return a rows x cols grid of (char, Style) where char is None for the
    right half of a wide character."""
    blank = Style()
    grid = [[(" ", blank) for _ in range(cols)] for _ in range(rows)]
    style = Style()
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for r, line in enumerate(lines[:rows]):
        c = 0
        pos = 0
        line = line.rstrip("\r")
        while pos < len(line):
            m = ESC_RE.match(line, pos)
            if m:
                if m.group(2) == "m":
                    apply_sgr(style, m.group(1))
                pos = m.end()
                continue
            ch = line[pos]
            pos += 1
            if ch == "\t":
                nxt = min(cols, (c // 8 + 1) * 8)
                while c < nxt:
                    grid[r][c] = (" ", style.copy())
                    c += 1
                continue
            if ord(ch) < 0x20 or ch == "\x7f":
                continue
            w = char_width(ch)
            if w == 0:
                # combining mark: attach to the previous cell
                if c > 0:
                    pc, ps = grid[r][c - 1]
                    if pc is None and c > 1:
                        pc, ps = grid[r][c - 2]
                        grid[r][c - 2] = (pc + ch, ps)
                    elif pc is not None:
                        grid[r][c - 1] = (pc + ch, ps)
                continue
            if c + w > cols:
                break
            st = style.copy()
            grid[r][c] = (ch, st)
            if w == 2:
                grid[r][c + 1] = (None, st)
            c += w
    return grid


def resolve(style, theme_bg):
    """Concrete (fg, bg) colours for a cell, reverse video applied last."""

    def rgb(c, default, bg=False):
        if c is None:
            return default
        if c[0] == "rgb":
            return c[1]
        if bg and c[1] in BG_OVERRIDES:
            return BG_OVERRIDES[c[1]]
        return color256(c[1])

    fg = rgb(style.fg, DEFAULT_FG)
    bg = rgb(style.bg, theme_bg, bg=True)
    if style.reverse:
        # swap the resolved colours: default-on-default becomes dark text on
        # a light bar instead of vanishing
        fg, bg = bg, fg
    if style.dim:
        fg = tuple((a + b) // 2 for a, b in zip(fg, bg))
    if style.hidden:
        fg = bg
    return fg, bg


def hexc(c):
    return "#%02x%02x%02x" % c


# Box drawing: (left, right, up, down) arm weights, 1 = light, 2 = heavy, 3 = double.
BOX = {
    "─": (1, 1, 0, 0), "━": (2, 2, 0, 0), "│": (0, 0, 1, 1), "┃": (0, 0, 2, 2),
    "┌": (0, 1, 0, 1), "┐": (1, 0, 0, 1), "└": (0, 1, 1, 0), "┘": (1, 0, 1, 0),
    "╭": (0, 1, 0, 1), "╮": (1, 0, 0, 1), "╰": (0, 1, 1, 0), "╯": (1, 0, 1, 0),
    "├": (0, 1, 1, 1), "┤": (1, 0, 1, 1), "┬": (1, 1, 0, 1), "┴": (1, 1, 1, 0),
    "┼": (1, 1, 1, 1), "┏": (0, 2, 0, 2), "┓": (2, 0, 0, 2), "┗": (0, 2, 2, 0),
    "┛": (2, 0, 2, 0), "┣": (0, 2, 2, 2), "┫": (2, 0, 2, 2), "┳": (2, 2, 0, 2),
    "┻": (2, 2, 2, 0), "╋": (2, 2, 2, 2), "═": (3, 3, 0, 0), "║": (0, 0, 3, 3),
    "╔": (0, 3, 0, 3), "╗": (3, 0, 0, 3), "╚": (0, 3, 3, 0), "╝": (3, 0, 3, 0),
    "╴": (1, 0, 0, 0), "╶": (0, 1, 0, 0), "╵": (0, 0, 1, 0), "╷": (0, 0, 0, 1),
}


def block_rects(ch, x, y, w, h):
    """Rectangles (x, y, w, h, opacity) for a block element, or None."""
    o = ord(ch)
    if 0x2581 <= o <= 0x2588:  # ▁▂▃▄▅▆▇█ lower n/8
        n = o - 0x2580
        return [(x, y + h * (8 - n) / 8, w, h * n / 8, 1)]
    if ch == "▀":
        return [(x, y, w, h / 2, 1)]
    if ch == "▔":
        return [(x, y, w, h / 8, 1)]
    if ch == "▕":
        return [(x + w * 7 / 8, y, w / 8, h, 1)]
    if 0x2589 <= o <= 0x258F:  # ▉..▏ left n/8
        n = 0x2590 - o
        return [(x, y, w * n / 8, h, 1)]
    if ch == "▐":
        return [(x + w / 2, y, w / 2, h, 1)]
    if ch in "░▒▓":
        return [(x, y, w, h, {"░": 0.25, "▒": 0.5, "▓": 0.75}[ch])]
    quads = {"▖": "3", "▗": "4", "▘": "1", "▝": "2", "▙": "134", "▚": "14", "▛": "123",
             "▜": "124", "▞": "23", "▟": "234"}
    if ch in quads:
        out = []
        for q in quads[ch]:
            qx = x + (w / 2 if q in "24" else 0)
            qy = y + (h / 2 if q in "34" else 0)
            out.append((qx, qy, w / 2, h / 2, 1))
        return out
    return None


def box_rects(ch, x, y, w, h, lw):
    arms = BOX.get(ch)
    if arms is None:
        return None
    left, right, up, down = arms
    cx, cy = x + w / 2, y + h / 2
    out = []

    def thick(k):
        return lw * (2 if k == 2 else 1)

    def horiz(x0, x1, k):
        if k == 3:
            out.append((x0, cy - lw * 1.5, x1 - x0, lw, 1))
            out.append((x0, cy + lw * 0.5, x1 - x0, lw, 1))
        else:
            t = thick(k)
            out.append((x0, cy - t / 2, x1 - x0, t, 1))

    def vert(y0, y1, k):
        if k == 3:
            out.append((cx - lw * 1.5, y0, lw, y1 - y0, 1))
            out.append((cx + lw * 0.5, y0, lw, y1 - y0, 1))
        else:
            t = thick(k)
            out.append((cx - t / 2, y0, t, y1 - y0, 1))

    # arms overlap the centre by half a line so corners join cleanly
    ext = lw
    if left:
        horiz(x, cx + (ext if (up or down) else 0), left)
    if right:
        horiz(cx - (ext if (up or down) else 0), x + w, right)
    if up:
        vert(y, cy + (ext if (left or right) else 0), up)
    if down:
        vert(cy - (ext if (left or right) else 0), y + h, down)
    return out


def render(grid, cols, rows, font_size, line_height, pad, title):
    cw = round(font_size * 0.6021, 4)  # DejaVu Sans Mono advance: 1233/2048 em
    ch = round(font_size * line_height, 4)
    lw = max(1.0, round(font_size / 14, 2))
    bar = round(ch * 1.6) if title is not None else 0
    width = round(cols * cw + 2 * pad)
    height = round(rows * ch + 2 * pad + bar)
    ox, oy = pad, pad + bar
    baseline = ch * 0.5 + font_size * 0.36  # vertically centred glyphs

    out = []
    out.append(
        '<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d">'
        % (width, height, width, height)
    )
    out.append(
        "<style>text{font-family:'DejaVu Sans Mono',monospace;font-size:%spx;white-space:pre}"
        ".b{font-weight:bold}.i{font-style:italic}</style>" % font_size
    )
    out.append('<rect width="%d" height="%d" rx="8" fill="%s"/>' % (width, height, hexc(DEFAULT_BG)))
    if title is not None:
        out.append('<rect width="%d" height="%d" rx="8" fill="#232833"/>' % (width, bar + 8))
        out.append('<rect y="%d" width="%d" height="8" fill="%s"/>' % (bar, width, hexc(DEFAULT_BG)))
        for i, col in enumerate(("#ff5f57", "#febc2e", "#28c840")):
            out.append('<circle cx="%d" cy="%s" r="6" fill="%s"/>' % (pad + 8 + i * 20, bar / 2 + 2, col))
        out.append(
            '<text x="%s" y="%s" fill="#9aa3b2" text-anchor="middle">%s</text>'
            % (width / 2, bar / 2 + 2 + font_size * 0.36, html.escape(title))
        )

    def fmt(v):
        return ("%.2f" % v).rstrip("0").rstrip(".")

    # 1. backgrounds, merged into horizontal runs
    for r in range(rows):
        c = 0
        while c < cols:
            _, bg = resolve(grid[r][c][1], DEFAULT_BG)
            start = c
            c += 1
            while c < cols and resolve(grid[r][c][1], DEFAULT_BG)[1] == bg:
                c += 1
            if bg != DEFAULT_BG:
                out.append(
                    '<rect x="%s" y="%s" width="%s" height="%s" fill="%s"/>'
                    % (fmt(ox + start * cw), fmt(oy + r * ch), fmt((c - start) * cw + 0.3), fmt(ch + 0.3), hexc(bg))
                )

    # 2. glyphs: geometry for box drawing / blocks, text runs (explicit x per char) for the rest
    for r in range(rows):
        y = oy + r * ch
        run = []  # [(x, char)]
        run_key = None

        def flush():
            if not run:
                return
            fg, bold, italic, underline, strike = run_key
            cls = " ".join(k for k, on in (("b", bold), ("i", italic)) if on)
            xs = " ".join(fmt(x) for x, _ in run)
            txt = html.escape("".join(t for _, t in run))
            out.append(
                '<text x="%s" y="%s" fill="%s"%s>%s</text>'
                % (xs, fmt(y + baseline), hexc(fg), ' class="%s"' % cls if cls else "", txt)
            )
            run.clear()

        for c in range(cols):
            chr_, st = grid[r][c]
            if chr_ is None:
                continue
            fg, bg = resolve(st, DEFAULT_BG)
            x = ox + c * cw
            wide = c + 1 < cols and grid[r][c + 1][0] is None
            if st.underline:
                out.append('<rect x="%s" y="%s" width="%s" height="%s" fill="%s"/>'
                           % (fmt(x), fmt(y + ch - lw * 2), fmt(cw * (2 if wide else 1)), fmt(lw), hexc(fg)))
            if st.strike:
                out.append('<rect x="%s" y="%s" width="%s" height="%s" fill="%s"/>'
                           % (fmt(x), fmt(y + ch / 2), fmt(cw * (2 if wide else 1)), fmt(lw), hexc(fg)))
            if chr_ == " " or st.hidden:
                flush()
                run_key = None
                continue
            geo = block_rects(chr_, x, y, cw, ch) or box_rects(chr_, x, y, cw, ch, lw * (1.3 if st.bold else 1))
            if geo:
                flush()
                run_key = None
                for gx, gy, gw, gh, op in geo:
                    out.append(
                        '<rect x="%s" y="%s" width="%s" height="%s" fill="%s"%s/>'
                        % (fmt(gx), fmt(gy), fmt(gw + 0.15), fmt(gh + 0.15), hexc(fg),
                           ' fill-opacity="%s"' % op if op != 1 else "")
                    )
                continue
            key = (fg, st.bold, st.italic, st.underline, st.strike)
            if key != run_key:
                flush()
                run_key = key
            if wide:
                # centre a wide glyph over its two cells
                x += cw / 2
            run.append((x, chr_))
        flush()
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("input", nargs="?", default="-", help="captured screen (default: stdin)")
    ap.add_argument("-o", "--output", default="-", help="SVG file (default: stdout)")
    ap.add_argument("--cols", type=int, default=0, help="terminal width (default: widest line)")
    ap.add_argument("--rows", type=int, default=0, help="terminal height (default: number of lines)")
    ap.add_argument("--font-size", type=float, default=14)
    ap.add_argument("--line-height", type=float, default=1.3)
    ap.add_argument("--pad", type=int, default=14)
    ap.add_argument("--title", default=None, help="draw a window bar with this title")
    a = ap.parse_args()

    data = sys.stdin.buffer.read() if a.input == "-" else open(a.input, "rb").read()
    text = data.decode("utf-8", errors="replace")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    rows = a.rows or len(lines)
    cols = a.cols or max((sum(char_width(ch) for ch in ESC_RE.sub("", ln)) for ln in lines), default=80)
    grid = parse(text, cols, rows)
    svg = render(grid, cols, rows, a.font_size, a.line_height, a.pad, a.title)
    if a.output == "-":
        sys.stdout.write(svg)
    else:
        with open(a.output, "w", encoding="utf-8") as f:
            f.write(svg)


if __name__ == "__main__":
    main()
