//! The architecture map (docs/architecture.md) names every room of the host and the guest,
//! and every path it names exists: moving code without moving the map fails here.

use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

fn map() -> String {
    std::fs::read_to_string(root().join("docs/architecture.md")).unwrap()
}

/// Every `host/src/…`, `guest/…` path in backquotes.
fn named_paths(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| s.starts_with("host/") || s.starts_with("guest/"))
        .flat_map(|s| {
            // "host/src/output.rs`, `trace.rs" style lists are separate spans already.
            s.split(' ').next().map(str::to_string)
        })
        .collect()
}

#[test]
fn every_path_the_map_names_exists() {
    let paths = named_paths(&map());
    assert!(paths.len() > 15, "{paths:?}");
    for p in paths {
        assert!(
            root().join(&p).exists(),
            "docs/architecture.md names {p}, which is gone"
        );
    }
}

#[test]
fn the_map_names_every_room() {
    let text = map();
    let mut missing = Vec::new();
    for dir in ["host/src", "guest/src"] {
        for e in std::fs::read_dir(root().join(dir)).unwrap() {
            let name = e.unwrap().file_name().into_string().unwrap();
            if ["lib.rs", "main.rs"].contains(&name.as_str()) {
                continue;
            }
            let room = if name.ends_with(".rs") {
                name.clone()
            } else {
                format!("{name}/")
            };
            if !text.contains(&format!("{dir}/{room}")) && !text.contains(&format!("`{room}`")) {
                missing.push(format!("{dir}/{room}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/architecture.md does not name: {missing:?}"
    );
}

/// The glossary and the reading order name files that exist (paths from the repository root,
/// or from `host/src` for the host's rooms).
#[test]
fn the_glossary_and_the_reading_order_name_real_files() {
    let mut checked = 0;
    for doc in ["docs/glossary.md", "docs/reading-order.md"] {
        let text = std::fs::read_to_string(root().join(doc)).unwrap();
        for span in text.split('`').skip(1).step_by(2) {
            let is_path = span.ends_with(".rs")
                && span.contains('/')
                && span
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/_.-".contains(c));
            if !is_path {
                continue;
            }
            let found = root().join(span).exists() || root().join("host/src").join(span).exists();
            assert!(found, "{doc} names {span}, which does not exist");
            checked += 1;
        }
    }
    assert!(checked > 25, "only {checked} paths checked");
}

/// docs/sept-states.svg is the picture `tdxlab sept-states --svg` draws from the TDX module
/// model's measured transitions: if the model changes, the picture must be redrawn.
#[test]
fn the_sept_state_picture_is_the_one_the_model_draws() {
    let on_disk = std::fs::read_to_string(root().join("docs/sept-states.svg")).unwrap();
    let drawn = tdxlab::cmd::sept_states::svg(&tdxlab::seam::machine::edges());
    assert!(
        on_disk == drawn,
        "docs/sept-states.svg is stale: run `tdxlab sept-states --svg docs/sept-states.svg`"
    );
}

/// docs/zap-table.svg is the picture `tdxlab zap-table --svg` draws from the measured zap
/// table, and the text under it holds: every non-TD row zaps the direct root, flush kept.
#[test]
fn the_zap_table_picture_is_the_one_the_model_draws() {
    let rows = tdxlab::zap_table::table();
    let on_disk = std::fs::read_to_string(root().join("docs/zap-table.svg")).unwrap();
    assert!(
        on_disk == tdxlab::zap_table::svg(&rows),
        "docs/zap-table.svg is stale: run `tdxlab zap-table --svg docs/zap-table.svg`"
    );
    for r in rows
        .iter()
        .filter(|r| r.vm == tdxlab::zap_table::VmKind::NonTd)
    {
        assert!(
            r.flush_preserved && r.roots_zapped == [tdxlab::kvm::RootKind::Direct],
            "{r:?}"
        );
    }
}

/// docs/walkthrough.md shows exactly what `tdxlab walkthrough` prints.
#[test]
fn the_walkthrough_shows_what_the_command_prints() {
    let doc = std::fs::read_to_string(root().join("docs/walkthrough.md")).unwrap();
    let block = doc
        .split("<!-- walkthrough:begin -->\n```text\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```\n<!-- walkthrough:end -->").next())
        .expect("the trace block of docs/walkthrough.md");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tdxlab"))
        .arg("walkthrough")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        out.stderr.is_empty(),
        "the walkthrough is stdout, nothing on stderr"
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        printed.trim_end(),
        block,
        "docs/walkthrough.md is stale: paste the output of `tdxlab walkthrough`"
    );
    assert!(printed.contains("5. invariants checked: 0 violations"));
}

/// Every link of the walkthrough's step table points at the function it names: line A holds
/// `fn NAME`, line B the brace that closes it at the same indentation
/// (`scripts/walkthrough-links.py` rewrites the table when code moves).
#[test]
fn the_walkthrough_links_point_at_their_functions() {
    let doc = std::fs::read_to_string(root().join("docs/walkthrough.md")).unwrap();
    let table = doc
        .split("<!-- steps:begin -->")
        .nth(1)
        .and_then(|r| r.split("<!-- steps:end -->").next())
        .expect("the step table");
    let mut checked = 0;
    for row in table.lines().filter(|l| l.contains("](../")) {
        let name = row
            .split("[`")
            .nth(1)
            .and_then(|r| r.split('`').next())
            .unwrap();
        let link = row
            .split("](../")
            .nth(1)
            .and_then(|r| r.split(')').next())
            .unwrap();
        let (path, range) = link.split_once("#L").unwrap();
        let (a, b) = range.split_once("-L").unwrap();
        let (a, b): (usize, usize) = (a.parse().unwrap(), b.parse().unwrap());
        let src = std::fs::read_to_string(root().join(path)).unwrap();
        let lines: Vec<&str> = src.lines().collect();
        let start = lines[a - 1];
        assert!(
            start.contains(&format!("fn {name}")),
            "{link}: line {a} is {start:?}"
        );
        let indent = &start[..start.len() - start.trim_start().len()];
        assert_eq!(
            lines[b - 1],
            format!("{indent}}}"),
            "{link}: line {b} does not close fn {name}"
        );
        assert!(
            !lines[a..b - 1].iter().any(|l| *l == format!("{indent}}}")),
            "{link}: fn {name} closes before line {b}"
        );
        checked += 1;
    }
    assert!(checked >= 10, "the table links the walkthrough's functions");
}
