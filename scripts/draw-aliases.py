#!/usr/bin/env python3
# Draw docs/aliases.svg: a TD's guest-physical space as tdxlab's emulated host lays it out —
# the private and the shared alias (the shared bit is GPAW - 1), the q35 RAM ranges in each,
# the memslots, and the two backings behind them. Run from the repository root after a
# change: python3 scripts/draw-aliases.py
import html

W, H = 960, 500
out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif">',
       '<defs><marker id="a" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#333"/></marker></defs>',
       f'<rect width="{W}" height="{H}" fill="white"/>']

def text(x, y, s, size=12, anchor="start", fill="#000", weight="normal"):
    out.append(f'<text x="{x}" y="{y}" font-size="{size}" text-anchor="{anchor}" fill="{fill}" font-weight="{weight}">{html.escape(s)}</text>')

def box(x, y, w, h, fill, stroke="#555", label=None, sub=None):
    out.append(f'<rect x="{x}" y="{y}" width="{w}" height="{h}" fill="{fill}" stroke="{stroke}"/>')
    if label:
        text(x + w / 2, y + h / 2 + (0 if sub else 4), label, 12, "middle")
    if sub:
        text(x + w / 2, y + h / 2 + 15, sub, 10, "middle", "#444")

def arrow(x1, y1, x2, y2, label=None, dx=6):
    out.append(f'<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" stroke="#333" marker-end="url(#a)"/>')
    if label:
        text((x1 + x2) / 2 + dx, (y1 + y2) / 2, label, 10, "start", "#1a4f8b")

text(W / 2, 26, "A TD's guest-physical space on tdxlab's emulated host (8 GiB, GPAW 48)", 15, "middle")

# The two aliases as horizontal bars.
def alias(y, name, base, fill):
    text(20, y + 24, name, 13, weight="bold")
    text(20, y + 40, base, 10, fill="#444")
    x0 = 200
    box(x0, y, 220, 44, fill, label="RAM below 4 GiB", sub="[0, 2 GiB)")
    box(x0 + 220, y, 120, 44, "#f4f4f4", label="32-bit hole", sub="PCI, APIC")
    box(x0 + 340, y, 340, 44, fill, label="RAM from 4 GiB", sub="[4 GiB, 10 GiB)")
    box(x0 + 680, y, 60, 44, "#fafafa", label="...")

alias(60, "private alias", "GPA, shared bit clear", "#e7f0fb")
alias(270, "shared alias", "GPA | 1 << 47 (GPAW - 1)", "#e9f6e6")
# The firmware window sits in the hole below 4 GiB.
box(530, 60, 30, 44, "#fdecc8")
text(20, 124, "mapped by the S-EPT (mirror root) and the TDX module:", 10, fill="#1a4f8b")
text(20, 137, "AUG, ACCEPT, BLOCK, REMOVE", 10, fill="#1a4f8b")
text(20, 334, "mapped by the direct root: zapped on to-private", 10, fill="#2e6b1f")
text(20, 347, "and on mmu-notifier invalidations", 10, fill="#2e6b1f")

box(200, 170, 560, 46, "#e7f0fb", label="private backing: a memfd (guest_memfd's role)", sub="offset = private GPA; pages only where the guest accepted")
box(200, 380, 560, 46, "#e9f6e6", label="shared backing: a memfd", sub="offset = GPA without the shared bit; pages only where the guest touched")
box(800, 170, 140, 46, "#fdecc8", label="the image", sub="(firmware window)")
arrow(310, 104, 310, 170, "memslot 1")
arrow(710, 104, 710, 170, "memslot 3")
arrow(310, 314, 310, 380, "memslot 2")
arrow(710, 314, 710, 380, "memslot 4")
arrow(560, 82, 800, 182)
text(800, 160, "memslot 0", 10, fill="#1a4f8b")
text(780, 396, "every memslot view of RAM is", 10, fill="#444")
text(780, 409, "registered with userfaultfd:", 10, fill="#444")
text(780, 422, "a page is reachable only while", 10, fill="#444")
text(780, 435, "the model has a leaf for it", 10, fill="#444")
text(20, 470, "Below 2.75 GiB of RAM there is no split: one RAM range per alias from GPA 0.", 10, fill="#444")
text(20, 484, "On a host with MAXPHYADDR 39 the TD's GPAW is 39 and the shared bit 38 (docs/emulation.md).", 10, fill="#444")
out.append('</svg>')
open("docs/aliases.svg", "w").write("\n".join(out) + "\n")
