//! Guest RAM where QEMU's q35 machine puts it (`pc_q35_init` in `hw/i386/pc_q35.c`): all of
//! it below 4 GiB when it is smaller than 2.75 GiB; otherwise 2 GiB below the 32-bit PCI
//! hole and the rest from 4 GiB (`above_4g_mem_size`). QEMU's TD HOB then has one RAM
//! resource per range (`tdx_init_ram_entries`), and so does tdxlab's.

/// Where RAM above 4 GiB starts.
pub const ABOVE_4G: u64 = 1 << 32;
/// RAM from this size on is split (q35's `lowmem` rule).
const SPLIT_FROM: u64 = 0xB000_0000;
/// RAM below 4 GiB once it is split.
const LOWMEM: u64 = 0x8000_0000;

/// The RAM of a TD of `mem` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RamLayout {
    /// Bytes from GPA 0.
    pub below_4g: u64,
    /// Bytes from 4 GiB.
    pub above_4g: u64,
}

impl RamLayout {
    /// q35's layout for `mem` bytes of RAM.
    pub fn q35(mem: u64) -> RamLayout {
        let lowmem = if mem >= SPLIT_FROM {
            LOWMEM
        } else {
            SPLIT_FROM
        };
        if mem >= lowmem {
            RamLayout {
                below_4g: lowmem,
                above_4g: mem - lowmem,
            }
        } else {
            RamLayout {
                below_4g: mem,
                above_4g: 0,
            }
        }
    }

    /// The RAM ranges `(gpa, bytes)`, in address order.
    pub fn ranges(&self) -> Vec<(u64, u64)> {
        let mut r = vec![(0, self.below_4g)];
        if self.above_4g > 0 {
            r.push((ABOVE_4G, self.above_4g));
        }
        r
    }

    /// One past the highest RAM byte: the GPA space each alias's backing spans (the hole
    /// below 4 GiB is part of it, never mapped for the guest).
    pub fn extent(&self) -> u64 {
        if self.above_4g > 0 {
            ABOVE_4G + self.above_4g
        } else {
            self.below_4g
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q35_splits_from_two_and_three_quarter_gib_leaving_two_below_4g() {
        const G: u64 = 1 << 30;
        assert_eq!(RamLayout::q35(2 * G).ranges(), [(0, 2 * G)]);
        assert_eq!(RamLayout::q35(0xAFE0_0000).ranges(), [(0, 0xAFE0_0000)]);
        assert_eq!(
            RamLayout::q35(0xB000_0000).ranges(),
            [(0, 2 * G), (ABOVE_4G, 0xB000_0000 - 2 * G)]
        );
        let l = RamLayout::q35(16 * G);
        assert_eq!(l.ranges(), [(0, 2 * G), (ABOVE_4G, 14 * G)]);
        assert_eq!(l.extent(), 18 * G);
        assert_eq!(RamLayout::q35(256 << 20).extent(), 256 << 20);
    }
}
