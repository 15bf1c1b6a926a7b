//! SEAMCALL leaf numbers (host → TDX module), module 1.5.

use crate::tdcall::leaves;

/// SEAMCALL opcode bytes.
pub const SEAMCALL_OPCODE: [u8; 4] = [0x66, 0x0F, 0x01, 0xCF];

leaves! { SeamcallLeaf, "A SEAMCALL leaf number.",
    /// TDH.VP.ENTER.
    VpEnter = 0, "TDH.VP.ENTER";
    /// TDH.MNG.ADDCX.
    MngAddcx = 1, "TDH.MNG.ADDCX";
    /// TDH.MEM.PAGE.ADD: add an initial (measured) private page before finalize.
    MemPageAdd = 2, "TDH.MEM.PAGE.ADD";
    /// TDH.MEM.SEPT.ADD: add an S-EPT table page.
    MemSeptAdd = 3, "TDH.MEM.SEPT.ADD";
    /// TDH.VP.ADDCX.
    VpAddcx = 4, "TDH.VP.ADDCX";
    /// TDH.MEM.PAGE.RELOCATE.
    MemPageRelocate = 5, "TDH.MEM.PAGE.RELOCATE";
    /// TDH.MEM.PAGE.AUG: add a PENDING private page to a running TD.
    MemPageAug = 6, "TDH.MEM.PAGE.AUG";
    /// TDH.MEM.RANGE.BLOCK.
    MemRangeBlock = 7, "TDH.MEM.RANGE.BLOCK";
    /// TDH.MNG.KEY.CONFIG.
    MngKeyConfig = 8, "TDH.MNG.KEY.CONFIG";
    /// TDH.MNG.CREATE.
    MngCreate = 9, "TDH.MNG.CREATE";
    /// TDH.VP.CREATE.
    VpCreate = 10, "TDH.VP.CREATE";
    /// TDH.MNG.RD.
    MngRd = 11, "TDH.MNG.RD";
    /// TDH.MEM.PAGE.DEMOTE: split a large leaf.
    MemPageDemote = 15, "TDH.MEM.PAGE.DEMOTE";
    /// TDH.MR.EXTEND.
    MrExtend = 16, "TDH.MR.EXTEND";
    /// TDH.MR.FINALIZE.
    MrFinalize = 17, "TDH.MR.FINALIZE";
    /// TDH.VP.FLUSH.
    VpFlush = 18, "TDH.VP.FLUSH";
    /// TDH.MNG.VPFLUSHDONE.
    MngVpflushdone = 19, "TDH.MNG.VPFLUSHDONE";
    /// TDH.MNG.KEY.FREEID.
    MngKeyFreeid = 20, "TDH.MNG.KEY.FREEID";
    /// TDH.MNG.INIT.
    MngInit = 21, "TDH.MNG.INIT";
    /// TDH.VP.INIT.
    VpInit = 22, "TDH.VP.INIT";
    /// TDH.MEM.PAGE.PROMOTE.
    MemPagePromote = 23, "TDH.MEM.PAGE.PROMOTE";
    /// TDH.MEM.SEPT.RD.
    MemSeptRd = 25, "TDH.MEM.SEPT.RD";
    /// TDH.VP.RD.
    VpRd = 26, "TDH.VP.RD";
    /// TDH.PHYMEM.PAGE.RECLAIM.
    PhymemPageReclaim = 28, "TDH.PHYMEM.PAGE.RECLAIM";
    /// TDH.MEM.PAGE.REMOVE: remove a blocked, tracked private page.
    MemPageRemove = 29, "TDH.MEM.PAGE.REMOVE";
    /// TDH.MEM.SEPT.REMOVE: remove an empty S-EPT table page.
    MemSeptRemove = 30, "TDH.MEM.SEPT.REMOVE";
    /// TDH.MEM.TRACK: advance the TD's TLB epoch.
    MemTrack = 38, "TDH.MEM.TRACK";
    /// TDH.MEM.RANGE.UNBLOCK.
    MemRangeUnblock = 39, "TDH.MEM.RANGE.UNBLOCK";
    /// TDH.PHYMEM.CACHE.WB.
    PhymemCacheWb = 40, "TDH.PHYMEM.CACHE.WB";
    /// TDH.PHYMEM.PAGE.WBINVD.
    PhymemPageWbinvd = 41, "TDH.PHYMEM.PAGE.WBINVD";
    /// TDH.VP.WR.
    VpWr = 43, "TDH.VP.WR";
}
