//! Value parsers for the flags: each refuses a bad value with a message naming it, which
//! clap turns into a usage error (exit 2) before anything runs.

use crate::kvm::ZapPolicy;
use crate::td::InjectConfig;
use shared_abi::PageLevel;

/// A size with an optional K/M/G suffix (KiB, MiB, GiB; a trailing B or iB is allowed).
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || format!("'{s}' is not a size (use e.g. 256M or 1G)");
    let t = s.trim();
    let (num, mul) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        None => (t, 1u64),
        Some((i, _)) => {
            let unit = t[i..].to_ascii_uppercase();
            let m = match unit.trim_end_matches("IB").trim_end_matches('B') {
                "K" => 1 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                "" => 1,
                _ => return Err(bad()),
            };
            (&t[..i], m)
        }
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mul))
        .ok_or_else(bad)
}

/// A timeout: whole seconds, at least 1 (0 would stop the TD before it boots).
pub(crate) fn parse_timeout(s: &str) -> Result<u64, String> {
    s.parse::<u64>()
        .ok()
        .filter(|v| *v >= 1)
        .ok_or_else(|| format!("'{s}' is not a number of seconds of at least 1"))
}

/// A TD's RAM: a size that is a multiple of 2 MiB within what the host lays out. A number
/// without a unit is MiB, as QEMU's `-m` reads it.
pub(crate) fn parse_td_mem(s: &str) -> Result<u64, String> {
    use crate::td::{MAX_MEM, MIN_MEM};
    let t = s.trim();
    let v = if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        parse_size(&format!("{t}M"))
            .map_err(|_| format!("'{s}' is not a size (use e.g. 256M or 1G)"))?
    } else {
        parse_size(s)?
    };
    if v % (2 << 20) != 0 || !(MIN_MEM..=MAX_MEM).contains(&v) {
        return Err(format!(
            "'{s}' is not a multiple of 2 MiB from {} MiB to {} MiB",
            MIN_MEM >> 20,
            MAX_MEM >> 20
        ));
    }
    Ok(v)
}

/// A GPA width tdxlab can emulate.
pub(crate) fn parse_gpaw(s: &str) -> Result<u8, String> {
    s.parse::<u8>()
        .ok()
        .and_then(shared_abi::Gpaw::emulated)
        .map(|g| g.bits())
        .ok_or_else(|| {
            let min = shared_abi::Gpaw::MIN_EMULATED_BITS;
            format!("'{s}' is not a GPA width ({min}..=52)")
        })
}

/// 4k or 2m.
pub(crate) fn parse_page_size(s: &str) -> Result<PageLevel, String> {
    match s.to_ascii_lowercase().as_str() {
        "4k" => Ok(PageLevel::Size4K),
        "2m" => Ok(PageLevel::Size2M),
        _ => Err(format!("'{s}' is not a private page size (4k or 2m)")),
    }
}

/// A stress scenario by name.
pub(crate) fn parse_scenario(s: &str) -> Result<shared_abi::stress::Scenario, String> {
    shared_abi::stress::Scenario::parse(s).ok_or_else(|| {
        format!(
            "'{s}' is not a scenario (explicit, punch-hole, implicit, boundary, random or alternate)"
        )
    })
}

/// A zap policy by name (the KVM model knows nothing of the command line).
pub(crate) fn parse_zap_policy(s: &str) -> Result<ZapPolicy, String> {
    ZapPolicy::ALL
        .into_iter()
        .find(|p| p.name() == s)
        .ok_or_else(|| format!("'{s}' is not a zap policy (filter, exclude or v19)"))
}

/// A duration in seconds, 0 to a day.
pub(crate) fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=86_400.0).contains(&v) => Ok(v),
        _ => Err(format!("'{s}' is not a duration in seconds (0 to 86400)")),
    }
}

/// A probability.
pub(crate) fn parse_probability(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("'{s}' is not a probability between 0 and 1")),
    }
}

/// One `--inject` item (clap splits the flag's value at commas).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum InjectItem {
    /// `retry=P`: an event is pending after a 2 MiB chunk of a longer MapGPA (RETRY there).
    Retry(f64),
    /// `busy=P`: TDG.MEM.PAGE.ACCEPT answers OPERAND_BUSY.
    Busy(f64),
    /// `private-page-size=4k|2m`: the largest private mapping KVM makes.
    PrivatePageSize(PageLevel),
    /// `host-invalidate-hz=N`: mmu-notifier invalidations of shared memory per second.
    HostInvalidateHz(u32),
}

/// `NAME=VALUE` as an [`InjectItem`].
pub(crate) fn parse_inject_item(item: &str) -> Result<InjectItem, String> {
    let Some((k, v)) = item.trim().split_once('=') else {
        return Err(format!("'{item}' is not NAME=VALUE"));
    };
    Ok(match k {
        "retry" => InjectItem::Retry(parse_probability(v).map_err(|e| format!("retry: {e}"))?),
        "busy" => match parse_probability(v).map_err(|e| format!("busy: {e}"))? {
            // Every accept would answer OPERAND_BUSY: no guest could ever finish.
            p if p >= 1.0 => return Err(format!("busy={v} fails every accept (use less than 1)")),
            p => InjectItem::Busy(p),
        },
        "private-page-size" => InjectItem::PrivatePageSize(
            parse_page_size(v).map_err(|e| format!("private-page-size: {e}"))?,
        ),
        "host-invalidate-hz" => InjectItem::HostInvalidateHz(
            v.parse::<u32>()
                .ok()
                .filter(|n| *n <= 10_000)
                .ok_or_else(|| {
                    format!("host-invalidate-hz: '{v}' is not a rate from 0 to 10000")
                })?,
        ),
        _ => {
            return Err(format!(
                "'{k}' is unknown (retry, busy, private-page-size, host-invalidate-hz)"
            ))
        }
    })
}

impl InjectItem {
    /// The item's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            InjectItem::Retry(_) => "retry",
            InjectItem::Busy(_) => "busy",
            InjectItem::PrivatePageSize(_) => "private-page-size",
            InjectItem::HostInvalidateHz(_) => "host-invalidate-hz",
        }
    }
}

/// Each `--inject` item at most once (`retry=0.1,retry=0.2` is a mistake, not an override).
pub fn check_inject(items: &[InjectItem]) -> Result<(), String> {
    for (i, a) in items.iter().enumerate() {
        if items[..i].iter().any(|b| b.name() == a.name()) {
            return Err(format!("--inject names {} twice", a.name()));
        }
    }
    Ok(())
}

/// The injection configuration the items describe.
pub fn inject_config(items: &[InjectItem]) -> InjectConfig {
    let mut c = InjectConfig::default();
    for item in items {
        match *item {
            InjectItem::Retry(p) => c.retry = p,
            InjectItem::Busy(p) => c.busy = p,
            InjectItem::PrivatePageSize(l) => c.private_page_size = l,
            InjectItem::HostInvalidateHz(n) => c.host_invalidate_hz = n,
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_suffixes_and_refuse_garbage() {
        assert_eq!(parse_size("256M"), Ok(256 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("12X").is_err());
        assert!(parse_size("99999999999G").is_err());
    }

    #[test]
    fn td_memory_without_a_unit_is_mib_as_qemu_reads_it() {
        assert_eq!(parse_td_mem("256"), Ok(256 << 20));
        assert_eq!(parse_td_mem("1G"), Ok(1 << 30));
        let e = parse_td_mem("3").unwrap_err();
        assert!(e.starts_with("'3' is not a multiple of 2 MiB"), "{e}");
    }

    #[test]
    fn inject_items_parse_and_combine() {
        let items: Vec<InjectItem> = ["retry=0.2", "private-page-size=2m", "busy=0.1"]
            .iter()
            .map(|s| parse_inject_item(s).unwrap())
            .collect();
        let c = inject_config(&items);
        assert_eq!((c.retry, c.busy), (0.2, 0.1));
        assert_eq!(c.private_page_size, PageLevel::Size2M);
        assert!(parse_inject_item("retry").is_err());
        assert!(parse_inject_item("busy=2").is_err());
        assert!(parse_inject_item("nope=1").is_err());
        assert!(parse_inject_item("").is_err());
        assert!(parse_inject_item("busy=1")
            .unwrap_err()
            .contains("fails every accept"));
        let twice = [
            InjectItem::Retry(0.1),
            InjectItem::Busy(0.1),
            InjectItem::Retry(0.2),
        ];
        assert_eq!(
            check_inject(&twice),
            Err("--inject names retry twice".into())
        );
        assert_eq!(check_inject(&items), Ok(()));
    }

    #[test]
    fn zap_policies_parse_by_their_names() {
        for p in ZapPolicy::ALL {
            assert_eq!(parse_zap_policy(p.name()), Ok(p));
        }
        assert!(parse_zap_policy("v20").is_err());
    }
}
