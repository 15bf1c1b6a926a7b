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

/// Rust's legacy mangling (`_ZN` + length-prefixed path segments + `17h<hash>E`) as a path;
/// other names as they are.
fn demangle(name: &str) -> String {
    let Some(mut rest) = name.strip_prefix("_ZN") else {
        return name.to_string();
    };
    let mut parts = Vec::new();
    while let Some(end) = rest.find(|c: char| !c.is_ascii_digit()).filter(|e| *e > 0) {
        let Ok(n) = rest[..end].parse::<usize>() else {
            break;
        };
        let Some(seg) = rest.get(end..end + n) else {
            break;
        };
        parts.push(seg);
        rest = &rest[end + n..];
    }
    if parts
        .last()
        .is_some_and(|h| h.starts_with('h') && h.len() == 17)
    {
        parts.pop();
    }
    if parts.is_empty() {
        return name.to_string();
    }
    let mut path = parts.join("::");
    for (code, c) in [
        ("$LT$", "<"),
        ("$GT$", ">"),
        ("$u20$", " "),
        ("$u7b$", "{"),
        ("$u7d$", "}"),
    ] {
        path = path.replace(code, c);
    }
    path
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
        assert_eq!(demangle("_start32"), "_start32");
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
