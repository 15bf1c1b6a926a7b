//! TLB epochs: how the module knows no vCPU can still hold a translation through a blocked
//! entry (`tdh_mem_track`, `is_tlb_tracked`).

use shared_abi::TdxStatus;

/// The TD epoch and, for the current and previous epoch, how many vCPUs are inside the TD.
#[derive(Debug)]
pub struct EpochState {
    td_epoch: u64,
    /// vCPUs in the TD per epoch parity.
    refcount: [u32; 2],
    /// Per vCPU: the epoch it entered in (None while outside the TD), and the epoch of its
    /// last entry (to know whether its TLB must be flushed).
    vcpu_epoch: Vec<Option<u64>>,
    last_entry_epoch: Vec<u64>,
}

impl EpochState {
    /// Epoch 1, no vCPU inside.
    pub fn new(vcpus: u32) -> EpochState {
        EpochState {
            td_epoch: 1,
            refcount: [0; 2],
            vcpu_epoch: vec![None; vcpus as usize],
            last_entry_epoch: vec![1; vcpus as usize],
        }
    }
    /// The current TD epoch.
    pub(crate) fn td_epoch(&self) -> u64 {
        self.td_epoch
    }
    /// TDH.MEM.TRACK: bump the epoch unless vCPUs are still in the previous one.
    pub(crate) fn track(&mut self) -> Result<(), TdxStatus> {
        let prev = self.td_epoch - 1;
        if self.refcount[(prev & 1) as usize] != 0 {
            return Err(TdxStatus::PREVIOUS_TLB_EPOCH_BUSY);
        }
        self.td_epoch += 1;
        Ok(())
    }
    /// `is_tlb_tracked(bepoch)`: no vCPU can still translate through an entry blocked at
    /// `bepoch`.
    pub(crate) fn is_tracked(&self, bepoch: u64) -> bool {
        bepoch + 1 < self.td_epoch
            || (bepoch + 1 == self.td_epoch && self.refcount[(bepoch & 1) as usize] == 0)
    }
    /// TD entry; returns true if the vCPU's TLB must be flushed (epoch changed).
    pub(crate) fn enter(&mut self, vcpu: u32) -> bool {
        let v = vcpu as usize;
        if let Some(e) = self.vcpu_epoch[v].take() {
            self.refcount[(e & 1) as usize] -= 1;
        }
        self.vcpu_epoch[v] = Some(self.td_epoch);
        self.refcount[(self.td_epoch & 1) as usize] += 1;
        let flush = self.last_entry_epoch[v] != self.td_epoch;
        self.last_entry_epoch[v] = self.td_epoch;
        flush
    }
    /// TD exit.
    pub fn exit(&mut self, vcpu: u32) {
        if let Some(e) = self.vcpu_epoch[vcpu as usize].take() {
            self.refcount[(e & 1) as usize] -= 1;
        }
    }

    /// One line for diagnostics: the epoch and where each vCPU is.
    pub fn describe(&self) -> String {
        let inside: Vec<String> = self
            .vcpu_epoch
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.map(|e| format!("vCPU {i} in epoch {e}")))
            .collect();
        format!(
            "TD epoch {}; {}",
            self.td_epoch,
            if inside.is_empty() {
                "no vCPU inside".to_string()
            } else {
                inside.join(", ")
            }
        )
    }
}
