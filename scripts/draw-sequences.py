#!/usr/bin/env python3
# Draw docs/conversion-to-shared.svg and docs/conversion-to-private.svg: one 4 KiB conversion
# each way across the five actors, with the functions tdxlab names after the kernel and the
# TDX module. Run from the repository root after changing a step: python3 scripts/draw-sequences.py
import html
ACTORS = ["guest", "transport\n(doorbell / TDCALL)", "TDX module\n(seam/)", "KVM\n(kvm/)", "VMM\n(vmm/, QEMU's role)"]
X0, DX, TOP = 110, 190, 70

def svg(title, steps, path):
    # steps: (from, to, label) with from==to for a self step; ("note", text) for notes
    h = TOP + 40 + 34 * len(steps) + 40
    w = X0 + DX * (len(ACTORS) - 1) + 130
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif">',
           '<defs><marker id="a" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#333"/></marker></defs>',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{w/2:.0f}" y="22" font-size="15" text-anchor="middle">{html.escape(title)}</text>']
    for i, a in enumerate(ACTORS):
        x = X0 + DX * i
        lines = a.split("\n")
        out.append(f'<rect x="{x-80}" y="{TOP-32}" width="160" height="40" rx="6" fill="#eef3fa" stroke="#1a4f8b"/>')
        for k, l in enumerate(lines):
            out.append(f'<text x="{x}" y="{TOP-14+14*k - (7 if len(lines)>1 else 0)}" font-size="{12 if k==0 else 10}" text-anchor="middle">{html.escape(l)}</text>')
        out.append(f'<line x1="{x}" y1="{TOP+8}" x2="{x}" y2="{h-20}" stroke="#999" stroke-dasharray="4 3"/>')
    y = TOP + 36
    for st in steps:
        if st[0] == "note":
            out.append(f'<text x="{X0-90}" y="{y}" font-size="11" fill="#555" font-style="italic">{html.escape(st[1])}</text>')
        else:
            f, t, label = st
            xf, xt = X0 + DX * f, X0 + DX * t
            if f == t and f >= 3:
                out.append(f'<path d="M{xf},{y-8} h-28 v14 h26" fill="none" stroke="#333" marker-end="url(#a)"/>')
                out.append(f'<text x="{xf-34}" y="{y+2}" font-size="11" text-anchor="end" fill="#1a4f8b" stroke="white" stroke-width="3" paint-order="stroke">{html.escape(label)}</text>')
            elif f == t:
                out.append(f'<path d="M{xf},{y-8} h28 v14 h-26" fill="none" stroke="#333" marker-end="url(#a)"/>')
                out.append(f'<text x="{xf+34}" y="{y+2}" font-size="11" fill="#1a4f8b" stroke="white" stroke-width="3" paint-order="stroke">{html.escape(label)}</text>')
            else:
                out.append(f'<line x1="{xf}" y1="{y}" x2="{xt + (-4 if xt>xf else 4)}" y2="{y}" stroke="#333" marker-end="url(#a)"/>')
                mid = (xf + xt) / 2
                out.append(f'<text x="{mid:.0f}" y="{y-5}" font-size="11" text-anchor="middle" fill="#1a4f8b" stroke="white" stroke-width="3" paint-order="stroke">{html.escape(label)}</text>')
        y += 34
    out.append('</svg>')
    open(path, "w").write("\n".join(out) + "\n")

G, T, M, K, V = range(5)
to_shared = [
    (G, G, "set_alias: PTE -> gpa | shared bit, INVLPG"),
    (G, T, "TDG.VP.VMCALL<MapGPA>(gpa | shared, 4K)"),
    (T, M, "TDCALL -> TdxModule::tdcall: a VMCALL"),
    (M, K, "TD exit; host view R10-R15"),
    (K, K, "tdx_emulate_vmcall -> tdx_map_gpa (check range, then alignment)"),
    (K, V, "KVM_EXIT_HYPERCALL(KVM_HC_MAP_GPA_RANGE) <= 2 MiB"),
    (V, V, "kvm_convert_memory(to shared)"),
    (V, K, "KVM_SET_MEMORY_ATTRIBUTES(shared)"),
    (K, K, "kvm_vm_set_mem_attributes: filter PRIVATE -> mirror root"),
    (K, K, "tdp_mmu_zap_leafs -> tdx_sept_remove_private_spte"),
    (K, M, "TDH.MEM.RANGE.BLOCK"),
    (K, M, "TDH.MEM.TRACK, then kick every vCPU and wait"),
    (K, M, "TDH.MEM.PAGE.REMOVE; tdx_clear_page"),
    (K, K, "kvm_flush_remote_tlbs: kick every vCPU (flush)"),
    (V, K, "guest_memfd PUNCH_HOLE (kvm_gmem_punch_hole)"),
    (K, M, "TD entry: R10 = SUCCESS"),
    (M, G, "MapGPA returns"),
    ("note", "first touch of the shared page:"),
    (G, K, "EPT violation on gpa | shared bit (userfaultfd fault here)"),
    (K, K, "kvm_mmu_page_fault: attribute shared -> direct leaf"),
    (K, G, "the page is reachable; the access completes (reads zero)"),
]
to_private = [
    (G, T, "TDG.VP.VMCALL<MapGPA>(gpa, 4K)"),
    (T, M, "TDCALL -> TdxModule::tdcall: a VMCALL"),
    (M, K, "TD exit; host view R10-R15"),
    (K, V, "KVM_EXIT_HYPERCALL(KVM_HC_MAP_GPA_RANGE)"),
    (V, K, "KVM_SET_MEMORY_ATTRIBUTES(private)"),
    (K, K, "filter SHARED -> direct root zapped, flush (kick)"),
    (V, V, "discard the shared page (QEMU's ram_block_discard_range)"),
    (K, M, "TD entry: R10 = SUCCESS"),
    (M, G, "MapGPA returns (no BLOCK/TRACK: nothing private was removed)"),
    (G, T, "TDG.MEM.PAGE.ACCEPT(gpa, 4K)"),
    (T, M, "TDCALL -> TdxModule::tdcall"),
    (M, K, "EPT violation (ACCEPT on a FREE entry)"),
    (K, K, "kvm_mmu_page_fault -> tdx_sept_set_private_spte"),
    (K, M, "TDH.MEM.PAGE.AUG (entry PENDING)"),
    (K, M, "TD entry: ACCEPT re-executed"),
    (M, M, "zero the page, entry MAPPED"),
    (M, G, "ACCEPT returns SUCCESS"),
    (G, G, "set_alias: PTE -> gpa (private), INVLPG"),
]
svg("A 4 KiB page, private -> shared (then its first touch)", to_shared, "docs/conversion-to-shared.svg")
svg("A 4 KiB page, shared -> private (MapGPA, then ACCEPT)", to_private, "docs/conversion-to-private.svg")
