#!/usr/bin/env python3
"""Rewrite the "Where each step lives" table of docs/walkthrough.md: one row per function the
walkthrough's trace names, linked to its file and line range (a test in host/tests/docs.rs
checks that every range still starts at that function and ends at its closing brace; rerun
this script when code moves)."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
STEPS = [
    # (trace name, file, fn name, what changes)
    ("TDG.MEM.PAGE.ACCEPT", "host/src/seam/tdcall.rs", "tdg_mem_page_accept",
     "RCX = GPA and level; a missing or FREE leaf → EPT violation to the host; PENDING → zeroed and MAPPED"),
    ("tdx_handle_ept_violation", "host/src/vmm/exits.rs", "handle_tdcall",
     "the faulting TDCALL is resolved and re-executed inside one exit"),
    ("kvm_mmu_page_fault", "host/src/kvm/fault.rs", "tdp_page_fault",
     "attribute check, invalidation sequence, a mirror (private) or direct (shared) leaf"),
    ("TDH.MEM.SEPT.ADD", "host/src/seam/seamcall.rs", "tdh_mem_sept_add", "a new S-EPT table page"),
    ("TDH.MEM.PAGE.AUG", "host/src/seam/seamcall.rs", "tdh_mem_page_aug", "leaf FREE → PENDING, a frame"),
    ("tdx_emulate_vmcall", "host/src/kvm/tdvmcall.rs", "tdx_emulate_vmcall",
     "R10 = 0, R11 = sub-function; the status back in R10"),
    ("tdx_map_gpa", "host/src/kvm/tdvmcall.rs", "tdx_map_gpa",
     "R12 = GPA (shared bit = direction), R13 = size; ≤ 2 MiB chunks; RETRY with R11"),
    ("kvm_convert_memory", "host/src/vmm/convert.rs", "kvm_convert_memory",
     "attributes set, the other alias's backing discarded"),
    ("kvm_vm_set_mem_attributes", "host/src/kvm/zap.rs", "kvm_vm_set_mem_attributes",
     "slots_lock and mmu_lock held; the range's attribute flips"),
    ("kvm_tdp_mmu_unmap_gfn_range", "host/src/kvm/zap.rs", "kvm_tdp_mmu_unmap_gfn_range",
     "the roots the filter (or policy) allows are zapped; a flush owed"),
    ("tdx_sept_remove_private_spte", "host/src/kvm/tdx.rs", "tdx_sept_remove_private_spte",
     "BLOCK, TRACK, kick every vCPU and wait, REMOVE, clear the frame"),
    ("TDH.MEM.RANGE.BLOCK", "host/src/seam/seamcall.rs", "tdh_mem_range_block", "leaf MAPPED → BLOCKED (bepoch)"),
    ("TDH.MEM.TRACK", "host/src/seam/seamcall.rs", "tdh_mem_track", "TD epoch + 1"),
    ("TDH.MEM.PAGE.REMOVE", "host/src/seam/seamcall.rs", "tdh_mem_page_remove",
     "leaf BLOCKED → FREE once no vCPU is in the blocking epoch"),
    ("kvm_gmem_punch_hole", "host/src/kvm/zap.rs", "kvm_gmem_punch_hole", "guest_memfd pages dropped"),
]


def fn_range(path, name):
    lines = (ROOT / path).read_text().splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"(\s*)(pub(\([a-z]+\))? )?fn " + name + r"\b", line)
        if m:
            indent = m.group(1)
            for j in range(i + 1, len(lines)):
                if lines[j] == indent + "}":
                    return i + 1, j + 1
    raise SystemExit(f"fn {name} not found in {path}")


def table():
    rows = ["| step in the trace | tdxlab | what changes |", "|---|---|---|"]
    for trace, path, name, what in STEPS:
        a, b = fn_range(path, name)
        rows.append(f"| `{trace}` | [`{name}`](../{path}#L{a}-L{b}) | {what} |")
    return "\n".join(rows)


doc = ROOT / "docs/walkthrough.md"
text = doc.read_text()
begin, end = "<!-- steps:begin -->\n", "<!-- steps:end -->"
head, rest = text.split(begin)
_, tail = rest.split(end)
doc.write_text(head + begin + table() + "\n" + end + tail)
