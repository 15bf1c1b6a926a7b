//! One schema rule for every command's JSON (docs/json.md, "The rules"): the envelope, a
//! snake_case name per field (maps keyed by a TDCALL or step name aside), a unit in the
//! name of every time and cycle count, no bare statistic (`min`, `p90`: of what unit?), no
//! unnamed pairs, and one type and one unit per name across every command. The documents of
//! the commands that need no KVM are checked here; the KVM ones with them under
//! --include-ignored.

mod common;
use common::tdxlab;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// Objects keyed by a name from outside the schema (a TDCALL leaf, a measured step).
const NAME_MAPS: [&str; 4] = ["tdcalls", "tdvmcalls", "windows", "steps"];
/// The units a number's name may end in; a name ending in one holds a number (or null).
const UNITS: [&str; 6] = ["_s", "_ms", "_us", "_ns", "_cycles", "_hz"];
/// Statistics that mean nothing without their unit: `min_cycles`, `p90_us`.
const BARE_STATISTICS: [&str; 6] = ["min", "max", "median", "mean", "p90", "p99"];

/// What a JSON value is, for the one-type-per-name rule (null is "absent": any type).
fn kind(v: &Value) -> Option<&'static str> {
    match v {
        Value::Null => None,
        Value::Bool(_) => Some("bool"),
        Value::Number(_) => Some("number"),
        Value::String(_) => Some("string"),
        Value::Array(_) => Some("array"),
        Value::Object(_) => Some("object"),
    }
}

/// The time or cycle unit `key` ends in, and the name without it.
fn unit(key: &str) -> Option<(&str, &'static str)> {
    // A rate (`bytes_per_s`) keeps `_per` in its base: it is not the same quantity as a
    // duration of that name.
    UNITS
        .iter()
        .find(|u| key.ends_with(*u) && key.len() > u.len())
        .map(|u| (&key[..key.len() - u.len()], *u))
}

/// The rules, over a set of (command, document) pairs: every broken one, named.
fn violations(docs: &[(String, Value)]) -> Vec<String> {
    let mut bad = Vec::new();
    let mut kinds: BTreeMap<String, BTreeSet<(&'static str, String)>> = BTreeMap::new();
    let mut units: BTreeMap<String, BTreeSet<(&'static str, String)>> = BTreeMap::new();
    for (cmd, doc) in docs {
        if doc["command"] != cmd.as_str() || doc["schema"] != 2 || !doc["tdxlab"].is_string() {
            bad.push(format!("{cmd}: the envelope (command, schema 2, tdxlab)"));
        }
        walk(doc, "", &mut |path, key, v| {
            let mut say = |what: &str| bad.push(format!("{cmd}: {path}: {what}"));
            let snake = key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !snake {
                say("not snake_case");
            }
            if BARE_STATISTICS.contains(&key) {
                say("a statistic without its unit");
            }
            if let Some((base, u)) = unit(key) {
                if !(v.is_number() || v.is_null()) {
                    say("a name with a unit holds a number");
                }
                units
                    .entry(base.to_string())
                    .or_default()
                    .insert((u, cmd.clone()));
            }
            if let Value::Array(a) = v {
                if a.len() == 2 && a.iter().all(Value::is_number) {
                    say("an unnamed pair: give each value its name");
                }
            }
            if let Some(k) = kind(v) {
                kinds
                    .entry(key.to_string())
                    .or_default()
                    .insert((k, cmd.clone()));
            }
        });
    }
    for (key, seen) in kinds {
        let k: BTreeSet<_> = seen.iter().map(|(k, _)| k).collect();
        if k.len() > 1 {
            bad.push(format!("{key}: one name, several types: {seen:?}"));
        }
    }
    for (base, seen) in units {
        let u: BTreeSet<_> = seen.iter().map(|(u, _)| u).collect();
        if u.len() > 1 {
            bad.push(format!("{base}: one quantity, several units: {seen:?}"));
        }
    }
    bad
}

/// Call `f(path, key, value)` for every field of every object under `v`, except the keys
/// of the name maps (their values are still walked).
fn walk(v: &Value, path: &str, f: &mut dyn FnMut(&str, &str, &Value)) {
    match v {
        Value::Object(o) => {
            let named = NAME_MAPS.iter().any(|m| path.ends_with(&format!(".{m}")));
            for (k, x) in o {
                let p = format!("{path}.{k}");
                if !named {
                    f(&p, k, x);
                }
                walk(x, &p, f);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| walk(x, &format!("{path}[]"), f)),
        _ => {}
    }
}

/// `tdxlab ARGS` as JSON on stdout, named by its command.
fn doc(args: &[&str]) -> (String, Value) {
    let o = tdxlab(args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    let cmd = v["command"].as_str().unwrap_or("?").to_string();
    (cmd, v)
}

/// The documents of every command that runs without KVM.
fn docs_without_kvm() -> Vec<(String, Value)> {
    let image = std::env::temp_dir().join(format!("tdxlab-schema-{}.bin", std::process::id()));
    let image_s = image.to_str().unwrap();
    assert!(tdxlab(&["image", "-o", image_s]).status.success());
    let docs = vec![
        doc(&["caps", "--json"]),
        doc(&["sim", "--vcpus", "2", "--ops", "50", "--json"]),
        doc(&["zap-table", "--json"]),
        doc(&["sept-states", "--json"]),
        doc(&["inspect", image_s, "--json"]),
        doc(&["bench", "scale", "--seconds", "0.1", "--json"]),
    ];
    let _ = std::fs::remove_file(&image);
    docs
}

#[test]
fn every_command_s_json_follows_one_schema_rule() {
    let bad = violations(&docs_without_kvm());
    assert!(bad.is_empty(), "{bad:#?}");
}

/// The KVM commands' documents, checked together with the others (one name, one type and
/// one unit across all of them).
#[test]
#[ignore = "needs a usable /dev/kvm: ci/test.sh runs it with --include-ignored where there is one"]
fn every_kvm_command_s_json_follows_the_same_rule() {
    require_kvm!();
    let mut docs = docs_without_kvm();
    docs.extend([
        doc(&["run", "--vcpus", "2", "--json"]),
        doc(&["stress", "--vcpus", "2", "--seconds", "0.5", "--json"]),
        doc(&["bench", "doorbell", "--samples", "50", "--json"]),
        doc(&["bench", "convert", "--samples", "4", "--json"]),
        doc(&["bench", "convert", "--compare", "--json"]),
    ]);
    let bad = violations(&docs);
    assert!(bad.is_empty(), "{bad:#?}");
}

/// The checker finds each kind of break (so that an empty list means something).
#[test]
fn the_rule_checker_finds_each_break() {
    let env = |cmd: &str, body: Value| {
        let mut v = serde_json::json!({"command": cmd, "schema": 2, "tdxlab": "0"});
        v.as_object_mut()
            .unwrap()
            .extend(body.as_object().unwrap().clone());
        (cmd.to_string(), v)
    };
    let bad = violations(&[
        env(
            "a",
            serde_json::json!({"zaps": 3, "boot_ms": 1.0, "tdcall": {"min": 1}}),
        ),
        env(
            "b",
            serde_json::json!({
                "zaps": {"direct": 1}, "phases": {"boot_s": 0.1}, "rt_min_p90_us": [1.0, 2.0],
                "Bad": 1, "tdcalls": {"TDG.VP.INFO": 1}
            }),
        ),
    ]);
    let has = |s: &str| bad.iter().any(|b| b.contains(s));
    assert!(has("zaps: one name, several types"), "{bad:#?}");
    assert!(has("boot: one quantity, several units"), "{bad:#?}");
    assert!(
        has("a: .tdcall.min: a statistic without its unit"),
        "{bad:#?}"
    );
    assert!(
        has("b: .rt_min_p90_us: a name with a unit holds a number"),
        "{bad:#?}"
    );
    assert!(has("b: .rt_min_p90_us: an unnamed pair"), "{bad:#?}");
    assert!(has("b: .Bad: not snake_case"), "{bad:#?}");
    assert!(!has("TDG.VP.INFO"), "name maps keep their names: {bad:#?}");
    assert_eq!(bad.len(), 6, "{bad:#?}");
}
