//! The fuzz targets' bodies: each takes arbitrary bytes, drives one input-facing part of the
//! host with them, and panics only on a real finding (a crash in the code under test, or a
//! broken invariant afterwards). `fuzz/` (cargo fuzz, nightly) runs them coverage-guided;
//! `tests/fuzz_corpus.rs` replays their corpora on stable in every test run.

use crate::kvm::VmmExits;
use crate::sim::{SimConfig, World};
use crate::vmm::handle_tdcall;
use shared_abi::convert::ConversionTarget;
use shared_abi::layout::hob::HobList;
use shared_abi::layout::tdvf::{TdvfMetadata, IMAGE_SIZE_ALIGN};
use shared_abi::tdcall::TdcallLeaf;
use shared_abi::vmcall::Subfunction;
use shared_abi::{Gpa, GpaRange, Gpaw, PageLevel};
use tdcall::{Regs, Tdx, Transport};

/// One fuzz target's body.
pub type FuzzTarget = fn(&[u8]);

/// The fuzz targets by name (the names of `fuzz/fuzz_targets/*.rs` and of the corpora).
pub const TARGETS: [(&str, FuzzTarget); 5] = [
    ("tdvf_image", tdvf_image),
    ("td_hob", td_hob),
    ("tdcall_dispatch", tdcall_dispatch),
    ("map_gpa", map_gpa),
    ("ve_info", ve_info),
];

/// A TDVF image: the input is the image's last bytes (where the OVMF table and the metadata
/// offset live), zero-padded in front to the 64 KiB QEMU requires; parsed, and when it
/// parses, described the way `tdxlab inspect` and `run` read it.
pub fn tdvf_image(data: &[u8]) {
    let tail = &data[data.len().saturating_sub(IMAGE_SIZE_ALIGN)..];
    let mut image = vec![0u8; IMAGE_SIZE_ALIGN];
    image[IMAGE_SIZE_ALIGN - tail.len()..].copy_from_slice(tail);
    if let Ok(meta) = TdvfMetadata::parse(&image) {
        for s in meta.sections() {
            let _ = meta.raw_data(&s);
            // Validated sections never wrap (the host adds address and size unchecked).
            assert!(s.memory_address.checked_add(s.memory_size).is_some());
        }
        let _ = crate::image::describe(&image);
    }
}

/// A TD HOB list as a guest parses it.
pub fn td_hob(data: &[u8]) {
    if let Ok(list) = HobList::parse(data) {
        let _ = list.resources().count();
        let _ = list.tdxlab();
    }
}

/// Little-endian u64s out of the input, zero once it runs out.
struct Words<'a>(&'a [u8]);

impl Words<'_> {
    fn next(&mut self) -> u64 {
        let n = self.0.len().min(8);
        let mut b = [0u8; 8];
        b[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        u64::from_le_bytes(b)
    }
    fn done(&self) -> bool {
        self.0.is_empty()
    }
}

/// A small simulated TD: 2 vCPUs of 1 MiB each, private pages mapped at up to 2 MiB when the
/// first input byte is odd.
fn model_td(first: u8) -> World {
    World::new(&SimConfig {
        vcpus: 2,
        region_pages: 256,
        private_max_level: if first & 1 == 1 {
            PageLevel::Size2M
        } else {
            PageLevel::Size4K
        },
        ..SimConfig::default()
    })
}

/// The doorbell's transport without a CPU: each TDCALL goes straight to the host's handler.
struct Direct<'a>(&'a World, u32);

impl Transport for Direct<'_> {
    fn call(&mut self, regs: &mut Regs) {
        if handle_tdcall(&self.0.seam, &self.0.vmm, self.1, regs).is_err() {
            regs.rax = shared_abi::TdxStatus::OPERAND_INVALID.0;
        }
    }
    fn emulated(&self) -> bool {
        true
    }
}

/// After the random calls: a guest's normal conversions still go through (their statuses
/// are whatever the random calls left), and every invariant holds.
fn converge_and_check(w: &World) {
    let mut tdx = Tdx::new(Direct(w, 0));
    let r = GpaRange::new(Gpa(0x10_0000), 0x10_0000);
    let _ = tdx.map_gpa(r, ConversionTarget::Shared, w.gpaw);
    let _ = tdx.map_gpa(r, ConversionTarget::Private, w.gpaw);
    let _ = tdx.accept(r);
    let bad = w.check_invariants();
    assert!(bad.is_empty(), "invariants broken: {bad:?}");
}

/// TDCALLs with random register files on a model TD (the module's dispatch, KVM's TDVMCALL
/// handling and the VMM behind them), then normal conversions and the invariant check.
pub fn tdcall_dispatch(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let w = model_td(first);
    let leaves = [
        TdcallLeaf::VpVmcall as u64,
        TdcallLeaf::VpInfo as u64,
        TdcallLeaf::MemPageAccept as u64,
        TdcallLeaf::VpVeinfoGet as u64,
    ];
    let mut words = Words(rest);
    while !words.done() {
        let sel = words.next();
        let version = if sel >> 60 & 1 == 1 {
            (sel >> 8 & 0xff) << 16
        } else {
            0
        };
        let mut regs = Regs {
            // Mostly a real leaf (with a random version byte now and then), sometimes raw.
            rax: match sel % 8 {
                0 => words.next(),
                n => leaves[n as usize % leaves.len()] | version,
            },
            rcx: words.next(),
            rdx: words.next(),
            r10: if sel & 0x100 != 0 { 0 } else { words.next() },
            r11: words.next() % 0x10020,
            r12: words.next(),
            r13: words.next(),
            ..Regs::default()
        };
        let _ = handle_tdcall(&w.seam, &w.vmm, (sel >> 16) as u32 % 2, &mut regs);
    }
    converge_and_check(&w);
}

/// TDG.VP.VMCALL<MapGPA> straight into KVM's handler and the VMM: random GPA and size,
/// either alias, then normal conversions and the invariant check.
pub fn map_gpa(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let w = model_td(first);
    let mem = (w.kvm.config().mem_pages) << 12;
    let mut words = Words(rest);
    while !words.done() {
        let (a, b) = (words.next(), words.next());
        // Mostly in or near RAM, page-aligned or not, in either alias; sometimes anything.
        let gpa = if a >> 63 == 1 { a } else { a % (2 * mem) };
        let gpa = if a >> 62 & 1 == 1 {
            Gpaw::GPAW_48.to_shared(Gpa(gpa)).0
        } else {
            gpa
        };
        let size = if b >> 63 == 1 { b } else { b % (mem + 0x4000) };
        let mut regs = Regs {
            r11: Subfunction::MapGpa as u64,
            r12: gpa,
            r13: size,
            ..Regs::default()
        };
        w.kvm
            .tdx_emulate_vmcall((b >> 32) as u32 % 2, &mut regs, &w.vmm as &dyn VmmExits);
    }
    converge_and_check(&w);
}

/// VEINFO and the I/O exit qualification: whatever the module puts in the registers
/// decodes, and what decodes encodes back to the same registers.
pub fn ve_info(data: &[u8]) {
    use shared_abi::ve::{IoQualification, VeInfo};
    let mut w = Words(data);
    let regs = (w.next(), w.next(), w.next(), w.next(), w.next());
    let ve = VeInfo::decode(regs.0, regs.1, regs.2, regs.3, regs.4);
    let again = ve.encode();
    assert_eq!(
        VeInfo::decode(again.0, again.1, again.2, again.3, again.4),
        ve
    );
    let q = IoQualification::decode(regs.1);
    assert_eq!(IoQualification::decode(q.encode()), q);
}
