//! `--html`: the map of a run is one self-contained page; in a real browser (Debian's
//! chromium, headless) its script draws every cell, the legend and the counters. The
//! browser test is #[ignore]d: ci/test.sh installs chromium and runs it apart, and counts it
//! as skipped where chromium cannot be had.

mod common;
use common::tdxlab;
use std::path::PathBuf;

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("tdxlab-map-{}-{name}", std::process::id()))
}

/// A simulated run's map, and the page's embedded data.
fn sim_map(name: &str, args: &[&str]) -> (PathBuf, serde_json::Value) {
    let path = temp(name);
    let mut all = vec!["sim", "--html", path.to_str().unwrap()];
    all.extend_from_slice(args);
    let o = tdxlab(&all);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let page = std::fs::read_to_string(&path).unwrap();
    (path, common::map_data(&page))
}

#[test]
fn the_page_is_self_contained_with_a_column_per_sample() {
    let (path, data) = sim_map("plain.html", &["--vcpus", "2", "--ops", "300"]);
    let page = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "no network"
    );
    assert!(
        !page.contains("<script src") && !page.contains("<link"),
        "no external files"
    );
    assert_eq!(
        data["regions"],
        serde_json::json!([[0, 1024], [1024, 2048]])
    );
    let cols = data["cols"].as_array().unwrap();
    assert!(!cols.is_empty() && cols.len() <= tdxlab::map::MAX_COLS);
    let cells = 2 * tdxlab::map::ROWS;
    assert!(cols.iter().all(|c| c["s"].as_str().unwrap().len() == cells));
    let converted = common::map_conversions(&data);
    assert!(
        converted > 0,
        "conversions are counted in the cells they touch"
    );
}

/// The timeline counts each conversion the VMM served once: its total is the report's.
#[test]
fn the_maps_conversions_are_the_reports() {
    let (path, data) = sim_map("count.html", &["--vcpus", "3", "--ops", "200"]);
    let _ = std::fs::remove_file(&path);
    let o = tdxlab(&["sim", "--vcpus", "3", "--ops", "200", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let host = report["host_conversions"].as_u64().unwrap();
    assert!(host > 0);
    assert_eq!(common::map_total_conversions(&data), host);
}

/// Each vCPU's grid is the memory that vCPU converts, in every scenario: the map of a
/// stress run on KVM has one region per vCPU, every conversion vCPU 1's trace shows lies in
/// region 1 (and none of vCPU 0's), and the timeline's conversions are the report's. The
/// alternate scenario converts implicitly (no MapGPA to trace): there, each vCPU's cells
/// count conversions.
#[test]
#[ignore = "needs /dev/kvm"]
fn the_stress_map_draws_each_vcpus_own_memory() {
    require_kvm!();
    for scenario in ["random", "boundary", "explicit", "alternate"] {
        let (r, data) = stress_map(scenario);
        let regions: Vec<(u64, u64)> = (data["regions"].as_array().unwrap().iter())
            .map(|r| (r[0].as_u64().unwrap() << 12, r[1].as_u64().unwrap() << 12))
            .collect();
        assert_eq!(regions.len(), 2, "{scenario}: {regions:x?}");
        if scenario == "alternate" {
            for v in 0..2 {
                assert!(
                    region_conversions(&data, v) > 0,
                    "{scenario}: vCPU {v}'s grid"
                );
            }
        } else {
            let converted = traced_conversions(&r.err, 1);
            assert!(
                !converted.is_empty(),
                "{scenario}: vCPU 1 converted nothing?"
            );
            for gpa in converted {
                let inside = |(lo, hi): (u64, u64)| (lo..hi).contains(&gpa);
                assert!(
                    inside(regions[1]) && !inside(regions[0]),
                    "{scenario}: vCPU 1 converted {gpa:#x}, outside its grid {regions:x?}"
                );
            }
        }
        let conversions = r.report["conversions"].as_u64().unwrap();
        assert_eq!(
            common::map_total_conversions(&data),
            conversions,
            "{scenario}"
        );
    }
}

/// A 2-vCPU stress run of `scenario` with `--html`, vCPU 1 traced: the run and its map.
fn stress_map(scenario: &str) -> (common::Run, serde_json::Value) {
    let path = temp(&format!("stress-{scenario}.html"));
    let path_s = path.to_str().unwrap();
    let mut args = vec![
        "stress",
        "--scenario",
        scenario,
        "--vcpus",
        "2",
        "--mem",
        "64M",
    ];
    // One pass of each fixed scenario; the random one for a fixed number of operations.
    match scenario {
        "random" => args.extend(["--seconds", "600", "--ops", "60"]),
        _ => args.extend(["--seconds", "0"]),
    }
    args.extend([
        "--no-measure",
        "--trace",
        "--trace-vcpu",
        "1",
        "--html",
        path_s,
    ]);
    let r = common::run_with_report(&args);
    assert_eq!(r.code, Some(0), "{scenario}: {}", r.err);
    let data = common::map_data(&std::fs::read_to_string(&path).unwrap());
    let _ = std::fs::remove_file(&path);
    (r, data)
}

/// Conversions counted in region `r`'s cells over the whole map.
fn region_conversions(data: &serde_json::Value, r: u64) -> u64 {
    let rows = tdxlab::map::ROWS as u64;
    (data["cols"].as_array().unwrap().iter())
        .flat_map(|c| c["c"].as_array().unwrap().clone())
        .filter(|x| x[0].as_u64().unwrap() / rows == r)
        .map(|x| x[1].as_u64().unwrap() + x[2].as_u64().unwrap())
        .sum()
}

/// The GPAs of `kvm_convert_memory` steps on `vcpu` in a `--trace` text.
fn traced_conversions(trace: &str, vcpu: u32) -> Vec<u64> {
    let tag = format!(" v{vcpu} ");
    (trace.lines())
        .filter(|l| l.contains(&tag) && l.contains("kvm_convert_memory gpa=0x"))
        .filter_map(|l| l.split("gpa=0x").nth(1)?.split(' ').next())
        .filter_map(|h| u64::from_str_radix(h, 16).ok())
        .collect()
}

#[test]
fn an_unwritable_map_is_a_usage_error() {
    let o = tdxlab(&["sim", "--ops", "1", "--html", "/nonexistent/dir/map.html"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

fn chromium() -> String {
    std::env::var("TDXLAB_CHROMIUM").unwrap_or_else(|_| "chromium".into())
}

/// Headless chromium loads the map of a 4-vCPU run: the DOM after its script ran has one
/// cell per region, row and column, as the summary says, and a screenshot is taken
/// (TDXLAB_MAP_SCREENSHOT names where; docs/map.png is one).
#[test]
#[ignore = "needs Debian's chromium: ci/test.sh installs it and runs this test apart"]
fn the_map_renders_in_a_real_browser() {
    let (path, data) = sim_map("browser.html", &["--vcpus", "4", "--seconds", "2"]);
    let url = format!("file://{}", path.display());
    let flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
    ];
    let o = std::process::Command::new(chromium())
        .args(flags)
        .args(["--dump-dom", &url])
        .output()
        .expect("run chromium");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let dom = String::from_utf8(o.stdout).unwrap();
    let cols = data["cols"].as_array().unwrap().len();
    let cells = 4 * tdxlab::map::ROWS * cols;
    assert_eq!(
        dom.matches("class=\"cell s").count(),
        cells,
        "every cell drawn"
    );
    let summary = format!("data-cells=\"{cells}\" data-columns=\"{cols}\" data-regions=\"4\"");
    assert!(dom.contains(&summary), "the summary counts what was drawn");
    for state in 0..5 {
        let entry = format!("<span><i class=\"s{state}\"></i>");
        assert!(dom.contains(&entry), "the legend names state {state}");
    }
    assert!(dom.contains("<td>conversions</td>") && dom.contains("<td>zap_policy</td>"));
    assert!(
        dom.contains("vCPU 3: GPA 0xc00000"),
        "one grid per vCPU region"
    );
    let shot = std::env::var("TDXLAB_MAP_SCREENSHOT")
        .map(PathBuf::from)
        .unwrap_or_else(|_| temp("map.png"));
    if let Some(dir) = shot.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    let o = std::process::Command::new(chromium())
        .args(flags)
        .args([
            "--window-size=1100,1000",
            &format!("--screenshot={}", shot.display()),
            &url,
        ])
        .output()
        .expect("run chromium");
    let written = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(
        o.status.success() && written > 1000,
        "screenshot {} ({written} bytes): {}",
        shot.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    let _ = std::fs::remove_file(&path);
}
