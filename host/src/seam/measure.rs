//! The TD's build-time measurement, MRTD (TDX module base spec, "TD Measurement"): a SHA-384
//! the module extends on every TDH.MEM.PAGE.ADD (the page's GPA) and TDH.MR.EXTEND (a
//! 256-byte chunk and its GPA), and closes at TDH.MR.FINALIZE. Each extension is one or
//! three 128-byte blocks: the operation's name at byte 0, the GPA (little-endian) at byte
//! 16, zeros elsewhere, then for MR.EXTEND the chunk itself.

use super::{OpState, SeamResult, TdxModule};
use sha2::{Digest, Sha384};
use shared_abi::sept::SeptState;
use shared_abi::status::operand;
use shared_abi::{Gpa, TdxStatus};

/// One extension block's size.
pub const BLOCK: usize = 128;
/// TDH.MR.EXTEND's chunk.
pub const CHUNK: usize = 256;

/// The 128-byte block that names an operation on `gpa`.
pub fn record(tag: &[u8], gpa: u64) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    b[..tag.len()].copy_from_slice(tag);
    b[16..24].copy_from_slice(&gpa.to_le_bytes());
    b
}

/// MRTD while the TD is built, then its final value.
#[derive(Clone, Default)]
pub(crate) struct Measurement {
    hash: Sha384,
    done: Option<[u8; 48]>,
}

impl Measurement {
    pub(crate) fn page_add(&mut self, gpa: Gpa) {
        self.hash.update(record(b"MEM.PAGE.ADD", gpa.0));
    }

    fn extend(&mut self, gpa: Gpa, chunk: &[u8; CHUNK]) {
        self.hash.update(record(b"MR.EXTEND", gpa.0));
        self.hash.update(chunk);
    }

    /// The digest once finalized.
    pub(crate) fn digest(&self) -> Option<[u8; 48]> {
        self.done
    }

    pub(crate) fn finalize(&mut self) {
        self.done = Some(self.hash.clone().finalize().into());
    }
}

impl TdxModule {
    /// TDH.MR.EXTEND (`tdh_mr_extend`): measure the 256-byte chunk at `gpa` of a page added
    /// before finalize. The module reads the chunk from the TD's page; this model's module
    /// does not own the firmware window's memory, so the VMM hands over the bytes the page
    /// holds (what QEMU copied there for PAGE.ADD).
    pub fn tdh_mr_extend(&self, gpa: Gpa, chunk: &[u8; CHUNK]) -> SeamResult<()> {
        let tree = self.tree();
        let mut g = self.lock();
        if self.op_state() != OpState::Initialized {
            return Err(TdxStatus::LIFECYCLE_STATE_INCORRECT);
        }
        if !gpa.0.is_multiple_of(CHUNK as u64) || !self.params().gpaw.is_valid(gpa) {
            return Err(TdxStatus::OPERAND_INVALID.with_details(operand::RCX));
        }
        let page = Gpa(gpa.0 & !0xFFF);
        let state = tree.entry_at(page, 0).map(|e| e.state);
        if state != Ok(SeptState::Mapped) {
            return Err(TdxStatus::EPT_ENTRY_NOT_PRESENT.with_details(0));
        }
        g.mrtd.extend(gpa, chunk);
        self.stats
            .mr_extend
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// MRTD once TDH.MR.FINALIZE has run (`None` before).
    pub fn mrtd(&self) -> Option<[u8; 48]> {
        self.lock().mrtd.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seam::{NullPrivateMem, TdParams};
    use shared_abi::Gpaw;
    use std::sync::Arc;

    /// PAGE.ADD and MR.EXTEND extend the hash in order; MR.EXTEND needs an added page and a
    /// TD not finalized; finalize fixes the value.
    #[test]
    fn page_add_and_mr_extend_build_mrtd_until_finalize() {
        let p = TdParams {
            gpaw: Gpaw::GPAW_48,
            attributes: 0,
            num_vcpus: 1,
            max_vcpus: 1,
        };
        let m = TdxModule::new(p, Arc::new(NullPrivateMem));
        for level in [3, 2, 1] {
            m.tdh_mem_sept_add(Gpa(0), level).unwrap();
        }
        let chunk = [7u8; CHUNK];
        assert_eq!(
            m.tdh_mr_extend(Gpa(0x1000), &chunk),
            Err(TdxStatus::EPT_ENTRY_NOT_PRESENT.with_details(0))
        );
        m.tdh_mem_page_add(Gpa(0x1000), 1).unwrap();
        assert!(
            m.tdh_mr_extend(Gpa(0x1080), &chunk).is_err(),
            "not 256-aligned"
        );
        m.tdh_mr_extend(Gpa(0x1100), &chunk).unwrap();
        assert_eq!(m.mrtd(), None);
        m.tdh_mr_finalize().unwrap();
        let mut expect = Vec::new();
        expect.extend_from_slice(&record(b"MEM.PAGE.ADD", 0x1000));
        expect.extend_from_slice(&record(b"MR.EXTEND", 0x1100));
        expect.extend_from_slice(&chunk);
        assert_eq!(m.mrtd().unwrap()[..], Sha384::digest(&expect)[..]);
        assert_eq!(
            m.tdh_mr_extend(Gpa(0x1000), &chunk),
            Err(TdxStatus::LIFECYCLE_STATE_INCORRECT)
        );
    }
}
