//! The map as one HTML page: no network, no external script. The data is embedded as JSON
//! and a short script draws one grid per vCPU region (rows of GPAs × sampled columns), the
//! conversions per column as a timeline, and a tooltip with a cell's GPAs, its row's state
//! history and the conversions that touched it; the run's counters and settings are a table.

use super::{Recorder, ROWS};
use serde_json::{json, Value};

const STYLE: &str = r#"
body { font: 13px system-ui, sans-serif; margin: 16px; color: #222; }
h1 { font-size: 18px; } h2 { font-size: 14px; margin: 12px 0 4px; }
.grid { display: grid; gap: 0; width: max-content; border: 1px solid #999; }
.cell { width: 6px; height: 8px; }
.s0 { background: #d9d9d9; } .s1 { background: #f2c12e; } .s2 { background: #1f4e9c; }
.s3 { background: #3aa655; } .s4 { background: #d7263d; }
#legend span { display: inline-block; margin-right: 14px; }
#legend i { display: inline-block; width: 12px; height: 12px; vertical-align: -2px; margin-right: 4px; }
#timeline { display: flex; align-items: flex-end; height: 60px; gap: 0; border-bottom: 1px solid #999; width: max-content; }
#timeline div { width: 6px; display: flex; flex-direction: column-reverse; }
#timeline .ts { background: #3aa655; } #timeline .tp { background: #1f4e9c; }
#tip { position: fixed; display: none; background: #fff; border: 1px solid #555; padding: 6px; max-width: 420px; font-size: 12px; white-space: pre-wrap; }
table { border-collapse: collapse; margin-top: 8px; } td { border: 1px solid #ccc; padding: 2px 8px; }
"#;

const SCRIPT: &str = r#"
const NAMES = ["free (private, not accepted)", "pending (AUGed, not accepted)", "private (accepted)", "shared", "blocked (being removed)"];
const hex = n => "0x" + n.toString(16);
const legend = document.getElementById("legend");
NAMES.forEach((n, i) => { legend.insertAdjacentHTML("beforeend", `<span><i class="s${i}"></i>${n}</span>`); });
const tip = document.getElementById("tip");
const maps = document.getElementById("maps");
const cols = DATA.cols, rows = DATA.rows;
function history(region, row) {
  const out = []; let last = -1, since = 0;
  cols.forEach((c, i) => { const s = +c.s[region * rows + row]; if (s !== last) { if (last >= 0) out.push(`${since.toFixed(0)}–${c.t.toFixed(0)} ms: ${NAMES[last]}`); last = s; since = i ? cols[i - 1].t : 0; } });
  if (last >= 0) out.push(`${since.toFixed(0)} ms on: ${NAMES[last]}`);
  return out.slice(-12).join("\n");
}
function conversions(col, cell) {
  const hit = cols[col].c.find(x => x[0] === cell);
  return hit ? `${hit[1]} to shared, ${hit[2]} to private` : "none";
}
DATA.regions.forEach(([lo, hi], r) => {
  const per = Math.max(1, Math.ceil((hi - lo) / rows));
  maps.insertAdjacentHTML("beforeend", `<h2>vCPU ${r}: GPA ${hex(lo * 4096)}–${hex(hi * 4096)}</h2>`);
  const grid = document.createElement("div");
  grid.className = "grid"; grid.style.gridTemplateColumns = `repeat(${cols.length}, 6px)`;
  for (let row = 0; row < rows; row++) for (let c = 0; c < cols.length; c++) {
    const d = document.createElement("div");
    d.className = "cell s" + cols[c].s[r * rows + row];
    d.dataset.region = r; d.dataset.row = row; d.dataset.col = c;
    d.onmouseover = e => {
      const a = (lo + row * per) * 4096, b = Math.min(hi, lo + (row + 1) * per) * 4096;
      tip.textContent = `GPA ${hex(a)}–${hex(b)} (vCPU ${r}), at ${cols[c].t.toFixed(0)} ms: ${NAMES[cols[c].s[r * rows + row]]}\n` +
        `conversions in this interval: ${conversions(c, r * rows + row)}\nhistory:\n${history(r, row)}`;
      tip.style.display = "block"; tip.style.left = (e.clientX + 12) + "px"; tip.style.top = (e.clientY + 12) + "px";
    };
    d.onmouseout = () => { tip.style.display = "none"; };
    grid.appendChild(d);
  }
  maps.appendChild(grid);
});
const tl = document.getElementById("timeline");
const peak = Math.max(1, ...cols.map(c => c.n[0] + c.n[1]));
cols.forEach(c => {
  const [s, p] = c.n;
  tl.insertAdjacentHTML("beforeend", `<div title="${c.t.toFixed(0)} ms: ${s} to shared, ${p} to private"><span class="ts" style="height:${60 * s / peak}px"></span><span class="tp" style="height:${60 * p / peak}px"></span></div>`);
});
const sum = document.getElementById("map-summary");
sum.dataset.cells = document.querySelectorAll(".cell").length;
sum.dataset.columns = cols.length; sum.dataset.regions = DATA.regions.length;
sum.dataset.conversions = cols.reduce((n, c) => n + c.n[0] + c.n[1], 0);
sum.textContent = `${DATA.regions.length} regions × ${rows} rows × ${cols.length} columns; hover a cell for its history`;
"#;

/// The embedded data: regions, rows, and per column its time, states (one digit per cell),
/// the non-zero conversion counts as `[cell, to_shared, to_private]` (a conversion over
/// several rows counts in each) and the column's conversions `n: [to_shared, to_private]`,
/// each counted once (the timeline; they add up to the report's `conversions`).
fn data(rec: &Recorder) -> Value {
    let cols: Vec<Value> = (rec.columns().into_iter())
        .map(|c| {
            let s: String = c
                .states
                .iter()
                .map(|s| char::from(b'0' + *s as u8))
                .collect();
            let conv: Vec<Value> = (c.conversions.iter().enumerate())
                .filter(|(_, n)| **n != (0, 0))
                .map(|(i, (sh, pr))| json!([i, sh, pr]))
                .collect();
            json!({ "t": c.t_ms, "s": s, "c": conv, "n": [c.totals.0, c.totals.1] })
        })
        .collect();
    json!({ "regions": rec.regions(), "rows": ROWS, "cols": cols })
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The report's scalar fields (and its settings'), one table row each.
fn counters(report: &Value) -> String {
    let mut rows = String::new();
    let mut add = |k: &str, v: &Value| {
        if !(v.is_object() || v.is_array()) {
            rows.push_str(&format!(
                "<tr><td>{}</td><td>{}</td></tr>",
                escape(k),
                escape(&scalar(v))
            ));
        }
    };
    if let Some(o) = report.as_object() {
        o.iter().for_each(|(k, v)| add(k, v));
        for section in ["phases", "run", "zaps", "exits", "settings", "beyond"] {
            if let Some(inner) = o.get(section).and_then(Value::as_object) {
                inner
                    .iter()
                    .for_each(|(k, v)| add(&format!("{section}.{k}"), v));
            }
        }
    }
    rows
}

/// A scalar as a reader wants it: a fraction to three decimals at most (a rate of
/// 1234.5678901234 reads as 1234.568), strings without their quotes.
fn scalar(v: &Value) -> String {
    match v {
        Value::Number(n) if !n.is_f64() => n.to_string(),
        Value::Number(n) => {
            let s = format!("{:.3}", n.as_f64().unwrap_or(0.0));
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        }
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The page for a run whose report is `report` (JSON), titled `title`.
pub fn render(rec: &Recorder, title: &str, report: &Value) -> String {
    // `</` cannot end the script early inside JSON strings: escape the slash.
    let data = data(rec).to_string().replace("</", "<\\/");
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{t}</title><style>{STYLE}</style></head>\n<body>\n<h1>{t}</h1>\n<p id=\"map-summary\"></p>\n<div id=\"legend\"></div>\n<div id=\"maps\"></div>\n<h2>Conversions per interval (green: to shared, blue: to private)</h2>\n<div id=\"timeline\"></div>\n<h2>Counters and settings</h2>\n<table id=\"counters\">{rows}</table>\n<div id=\"tip\"></div>\n<script>const DATA = {data};\n{SCRIPT}</script>\n</body></html>\n",
        t = escape(title),
        rows = counters(report),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_self_contained_and_carries_the_data() {
        let rec = Recorder::new(vec![(0, 64)]);
        rec.conversion(0, 2, shared_abi::convert::ConversionTarget::Shared);
        let page = render(
            &rec,
            "a <test>",
            &json!({"conversions": 3, "rate": 1234.5678901234, "whole": 2.0, "settings": {"seed": 1}}),
        );
        assert!(page.contains("<title>a &lt;test&gt;</title>"));
        assert!(page.contains("<td>conversions</td><td>3</td>"));
        assert!(page.contains("<td>settings.seed</td><td>1</td>"));
        assert!(page.contains("<td>rate</td><td>1234.568</td>"), "{page}");
        assert!(page.contains("<td>whole</td><td>2</td>"));
        assert!(page.contains("const DATA = {\"cols\":[]"));
        assert!(!page.contains("src=\"http") && !page.contains("href=\"http"));
    }
}
