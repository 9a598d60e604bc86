//! `report.html`: written by `sim run` next to report.json/report.md, self-contained (inline
//! SVG only), well-formed (every element closed, in order), one plot per time series with a
//! drawn line, and rendered by headless Chromium into a non-blank screenshot.

mod browser_support;

use std::path::Path;
use std::process::Command;

use sim::engine::Collect;
use sim::run::{RunOptions, run_scenario};
use sim::scenario::{self, DurationNs};

const VOID: [&str; 6] = ["meta", "br", "hr", "img", "input", "link"];

/// Check that every element is closed in order; returns the number of elements.
fn well_formed(html: &str) -> usize {
    let mut open: Vec<String> = Vec::new();
    let mut elements = 0;
    let mut rest = html;
    while let Some(start) = rest.find('<') {
        let end = rest[start..].find('>').expect("tag closed by '>'") + start;
        let tag = &rest[start + 1..end];
        rest = &rest[end + 1..];
        if tag.starts_with('!') || tag.starts_with('?') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            let top = open
                .pop()
                .unwrap_or_else(|| panic!("</{name}> closes nothing"));
            assert_eq!(top, name.trim(), "</{name}> closes <{top}>");
            continue;
        }
        elements += 1;
        let name: String = tag
            .chars()
            .take_while(|c| !c.is_whitespace() && *c != '/')
            .collect();
        if !tag.ends_with('/') && !VOID.contains(&name.as_str()) {
            open.push(name);
        }
    }
    assert!(open.is_empty(), "unclosed elements: {open:?}");
    elements
}

#[test]
fn synflood_report_html_is_self_contained_well_formed_and_renders() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/synflood.toml");
    let mut loaded = scenario::load(&path).unwrap();
    loaded.scenario.duration = DurationNs(400_000_000);
    let options = RunOptions {
        threads: 2,
        collect: Collect::default(),
    };
    let output = run_scenario(&loaded, options, &|_| {}).unwrap();
    let html = sim::report_html::page(&output.report, Some(&output.measured)).unwrap();
    assert!(well_formed(&html) > 100);
    assert!(!html.contains("<script") && !html.contains("<link") && !html.contains(" src="));
    let svgs = html.split("<svg").skip(1).count();
    assert_eq!(svgs, 5, "every series has data in synflood");
    for svg in html.split("<svg").skip(1) {
        let svg = &svg[..svg.find("</svg>").unwrap()];
        if svg.contains("Shield protection modes") {
            // A state chart: a bar per interval a mode is on, per context, queue and mode.
            assert!(
                svg.contains("<rect class=\"on\""),
                "mode chart without a bar"
            );
            assert!(svg.contains("shield/192.0.2.10 q0 · syn cookies"), "{svg}");
            assert!(svg.contains("shield/192.0.2.10 q1 · ttl filter"), "{svg}");
        } else {
            assert!(svg.contains("<polyline"), "a plot without a line");
        }
        assert!(svg.contains("<text"), "a plot without text");
    }
    for title in [
        "Packets per second by verdict",
        "Shield protection modes",
        "Real-server share",
        "ActiveConn per real server",
        "Client connection time percentiles",
    ] {
        assert!(html.contains(title), "{title}");
    }
    // The report's tables are HTML tables (not Markdown in a <pre>), numbers right-aligned.
    assert!(!html.contains("|---"), "Markdown table left in the page");
    assert!(html.matches("<table>").count() >= 6, "too few tables");
    assert!(html.contains(
        "<thead><tr><th>check</th><th>limit</th><th>value</th><th>result</th></tr></thead>"
    ));
    assert!(html.contains("<td>legit_success_ratio_min</td><td class=\"num\">0.99</td>"));
    assert!(html.contains("<h2>Pipeline decisions</h2>"));
    // The appliance's text block (ipvsadm shape) stays preformatted.
    assert!(
        html.contains("<pre>Shield shield/default"),
        "appliance block"
    );
    let dir = std::env::temp_dir().join(format!("lbsim-report-html-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let page = dir.join("report.html");
    std::fs::write(&page, &html).unwrap();
    let Some(browser) = browser_support::browser_or_skip() else {
        return;
    };
    let png = dir.join("report.png");
    browser_support::screenshot(
        &browser,
        &page,
        &png,
        &dir.join("chromium-profile"),
        (1100, 2400),
    );
    let bytes = std::fs::read(&png).expect("screenshot written");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "screenshot is a PNG");
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert_eq!((width, height), (1100, 2400));
    assert!(
        bytes.len() > 40_000,
        "screenshot is {} bytes: blank?",
        bytes.len()
    );
    if std::env::var_os("LBSIM_KEEP_SCREENSHOT").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn sim_run_writes_report_html_next_to_json_and_markdown() {
    let dir = std::env::temp_dir().join(format!("lbsim-run-html-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/faults.toml");
    let output = Command::new(env!("CARGO_BIN_EXE_sim"))
        .args(["run", "--out"])
        .arg(&dir)
        .arg(&scenario)
        .env("CI", "true")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    for file in ["report.json", "report.md", "report.html"] {
        assert!(dir.join(file).is_file(), "{file} missing");
    }
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    well_formed(&html);
    assert!(html.contains("Link faults"));
    let _ = std::fs::remove_dir_all(&dir);
}
