//! The vCPUs' CPUID table as userspace set it (KVM_SET_CPUID2), and KVM's lookup
//! (`kvm_cpuid` in `arch/x86/kvm/cpuid.c`), which TDVMCALL<Instruction.CPUID> is answered from.

use super::Kvm;

/// One CPUID entry (`struct kvm_cpuid_entry2`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuidEntry {
    /// EAX in (the leaf).
    pub function: u32,
    /// ECX in (the subleaf), when `significant_index`.
    pub index: u32,
    /// KVM_CPUID_FLAG_SIGNIFICANT_INDEX: the subleaf selects the entry.
    pub significant_index: bool,
    /// EAX, EBX, ECX, EDX out.
    pub regs: [u32; 4],
}

/// "AuthenticAMD" / "HygonGenuine" in EBX, EDX, ECX of leaf 0: KVM's out-of-range rule
/// applies to other vendors only.
fn vendor_is_amd_like(e: &CpuidEntry) -> bool {
    let vendor = [e.regs[1], e.regs[3], e.regs[2]];
    let name: Vec<u8> = vendor.iter().flat_map(|r| r.to_le_bytes()).collect();
    name == b"AuthenticAMD" || name == b"HygonGenuine"
}

/// `kvm_find_cpuid_entry_index`.
fn find(table: &[CpuidEntry], function: u32, index: u32) -> Option<&CpuidEntry> {
    (table.iter()).find(|e| e.function == function && (!e.significant_index || e.index == index))
}

/// `get_out_of_range_cpuid_entry`: on Intel-like vendors a leaf beyond its class's maximum
/// reads as the maximum basic leaf (with the requested subleaf), as the CPUs do.
fn out_of_range(table: &[CpuidEntry], function: u32, index: u32) -> Option<&CpuidEntry> {
    let basic = find(table, 0, 0)?;
    if vendor_is_amd_like(basic) {
        return None;
    }
    let class = match function {
        0x4000_0000..=0x4fff_ffff => find(table, function & 0xffff_ff00, 0),
        0xc000_0000.. => find(table, 0xc000_0000, 0),
        _ => find(table, function & 0x8000_0000, 0),
    };
    if class.is_some_and(|c| function <= c.regs[0]) {
        return None;
    }
    find(table, basic.regs[0], index)
}

impl Kvm {
    /// KVM_SET_CPUID2 (the same table for every vCPU here, as QEMU sets it).
    pub fn kvm_set_cpuid(&self, entries: Vec<CpuidEntry>) {
        *self.cpuid.write().unwrap_or_else(|e| e.into_inner()) = entries;
    }

    /// `kvm_cpuid`: the entry for `function`/`index`, else the out-of-range rule, else zeros.
    /// (KVM's leaf-specific touches — TSX bits of leaf 7, EDX of absent 0xB/0x1F subleaves —
    /// are not modelled: the emulated TD's table has the entries KVM reported.)
    pub fn kvm_cpuid(&self, function: u32, index: u32) -> [u32; 4] {
        let table = self.cpuid.read().unwrap_or_else(|e| e.into_inner());
        find(&table, function, index)
            .or_else(|| out_of_range(&table, function, index))
            .map_or([0; 4], |e| e.regs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(function: u32, index: u32, sig: bool, regs: [u32; 4]) -> CpuidEntry {
        CpuidEntry {
            function,
            index,
            significant_index: sig,
            regs,
        }
    }

    /// Leaf 0 with max basic leaf 0xd and the vendor in EBX, EDX, ECX.
    fn leaf0(vendor: &[u8; 12]) -> CpuidEntry {
        let w = |i: usize| u32::from_le_bytes(vendor[i..i + 4].try_into().unwrap());
        e(0, 0, false, [0xd, w(0), w(8), w(4)])
    }

    #[test]
    fn exact_entries_subleaves_and_the_out_of_range_rule_by_vendor() {
        let mut t = vec![
            e(0xd, 0, true, [1, 2, 3, 4]),
            e(0xd, 1, true, [5, 6, 7, 8]),
            e(0x8000_0000, 0, false, [0x8000_0008, 0, 0, 0]),
            e(7, 0, true, [9, 9, 9, 9]),
        ];
        t.push(leaf0(b"GenuineIntel"));
        assert_eq!(find(&t, 0xd, 1).unwrap().regs, [5, 6, 7, 8]);
        assert_eq!(find(&t, 0xd, 2), None);
        // Intel: beyond the basic maximum reads as leaf 0xd with the requested subleaf.
        assert_eq!(out_of_range(&t, 0x20, 1).unwrap().regs, [5, 6, 7, 8]);
        assert_eq!(out_of_range(&t, 0x8000_0009, 0).unwrap().regs, [1, 2, 3, 4]);
        // Inside its class's range but absent: zeros, not redirected.
        assert_eq!(out_of_range(&t, 0x8000_0005, 0), None);
        // AMD: never redirected.
        let amd: Vec<CpuidEntry> = t
            .iter()
            .map(|x| {
                if x.function == 0 {
                    leaf0(b"AuthenticAMD")
                } else {
                    *x
                }
            })
            .collect();
        assert_eq!(out_of_range(&amd, 0x20, 1), None);
    }
}
