//! Names for guest RIPs: the built-in guest's function symbols, taken from its ELF when the
//! host is built (`build.rs` writes `guest-symbols.txt`), so that an exception or a stuck
//! vCPU reads `RIP 0xfff8a123 (tdxlab_guest::convert::set_alias+0x53)`.

/// `ADDRESS SIZE NAME` lines, sorted by address (hex).
const TABLE: &str = include_str!(concat!(env!("OUT_DIR"), "/guest-symbols.txt"));

/// The built-in guest's function containing `rip`, as `name+0xoffset`.
pub fn symbolize(rip: u64) -> Option<String> {
    TABLE.lines().find_map(|l| {
        let mut f = l.splitn(3, ' ');
        let start = u64::from_str_radix(f.next()?, 16).ok()?;
        let size = u64::from_str_radix(f.next()?, 16).ok()?;
        let name = f.next()?;
        (start..start + size.max(1))
            .contains(&rip)
            .then(|| format!("{}+{:#x}", demangle(name), rip - start))
    })
}

/// A Rust symbol (legacy `_ZN…E` or v0 `_R…` mangling, whichever the toolchain emitted) as
/// its path without the hash; other names as they are.
fn demangle(name: &str) -> String {
    format!("{:#}", rustc_demangle::demangle(name))
}

/// `RIP 0x…`, plus the symbol when `builtin` (the built-in guest runs) and it has one there.
pub fn describe_rip(rip: u64, builtin: bool) -> String {
    match symbolize(rip).filter(|_| builtin) {
        Some(s) => format!("RIP {rip:#x} ({s})"),
        None => format!("RIP {rip:#x}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_names_demangle_to_paths() {
        assert_eq!(
            demangle("_ZN12tdxlab_guest7convert9set_alias17h0123456789abcdefE"),
            "tdxlab_guest::convert::set_alias"
        );
        assert_eq!(
            demangle(
                "_ZN4core3ptr46drop_in_place$LT$alloc..vec..Vec$LT$u8$GT$$GT$17h0123456789abcdefE"
            ),
            "core::ptr::drop_in_place<alloc::vec::Vec<u8>>"
        );
        assert_eq!(demangle("_start32"), "_start32");
    }

    #[test]
    fn v0_names_demangle_to_paths() {
        // What rustc emits with `-C symbol-mangling-version=v0` (the default of newer
        // releases): the crate's disambiguator is dropped with the alternate format.
        assert_eq!(
            demangle(
                "_RNvNtNtCskt5km6Zhm2y_12tdxlab_guest9workloads10round_trip18misbehave_if_asked"
            ),
            "tdxlab_guest::workloads::round_trip::misbehave_if_asked"
        );
        assert_eq!(
            demangle("_RNvMNtCs1234_12tdxlab_guest7convertNtB2_6Engine9set_alias"),
            "<tdxlab_guest::convert::Engine>::set_alias"
        );
    }

    #[test]
    fn the_guest_symbols_demangle_whichever_the_mangling() {
        // Every Rust symbol of the built guest becomes a path (no `_ZN`/`_R` left), so a
        // diagnostic names the function under the pinned toolchain and newer ones alike.
        let rust = TABLE
            .lines()
            .filter_map(|l| l.splitn(3, ' ').nth(2))
            .filter(|n| n.starts_with("_ZN") || n.starts_with("_R"));
        let mut n = 0;
        for name in rust {
            let d = demangle(name);
            assert!(
                !d.starts_with("_ZN") && !d.starts_with("_R"),
                "{name} -> {d}"
            );
            n += 1;
        }
        assert!(n > 10, "the guest has Rust functions ({n})");
    }

    #[test]
    fn the_guest_entry_point_is_known() {
        let first = TABLE
            .lines()
            .next()
            .expect("the guest has function symbols");
        let addr = u64::from_str_radix(first.split(' ').next().unwrap(), 16).unwrap();
        assert!(
            symbolize(addr).is_some_and(|s| s.ends_with("+0x0")),
            "{first}"
        );
        assert_eq!(symbolize(0), None);
    }
}
