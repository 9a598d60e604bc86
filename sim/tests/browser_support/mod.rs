//! Headless Chromium for the HTML tests (`report.html`, `plan.html`): find it, or skip
//! visibly when `LBSIM_SKIP_BROWSER=1`, else fail; take a screenshot with a deadline.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The Chromium binary on `PATH`; `None` (after saying so) when it is missing and
/// `LBSIM_SKIP_BROWSER=1`. Panics when it is missing otherwise.
pub fn browser_or_skip() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        ["chromium", "chromium-browser"].iter().find_map(|name| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(name))
                .find(|candidate| candidate.is_file())
        })
    });
    if found.is_none() {
        if std::env::var("LBSIM_SKIP_BROWSER").as_deref() == Ok("1") {
            eprintln!("chromium missing; browser check skipped (LBSIM_SKIP_BROWSER=1)");
            return None;
        }
        panic!(
            "chromium is not installed: install it (`apt-get install -y chromium`, or run \
             scripts/test as root) or set LBSIM_SKIP_BROWSER=1 to skip the browser check"
        );
    }
    found
}

/// Render `page` to `png` in a `width`×`height` window (fresh `profile` directory);
/// fails when Chromium fails or takes more than 120 s.
pub fn screenshot(browser: &Path, page: &Path, png: &Path, profile: &Path, window: (u32, u32)) {
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("--window-size={},{}", window.0, window.1))
        .arg(format!("file://{}", page.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium starts");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "chromium exited with {status}");
            return;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
