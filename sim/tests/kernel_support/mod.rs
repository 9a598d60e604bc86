//! Shared helpers of the kernel tests: whether to run them, a serialising lock, pcap files
//! of fixture packets, and the namespaces this process owns.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

static KERNEL_LOCK: Mutex<()> = Mutex::new(());

/// Serialise kernel tests of one binary (they share the machine's two cores, and the
/// leftover checks look at this process's namespaces).
pub fn lock() -> MutexGuard<'static, ()> {
    KERNEL_LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether to run kernel tests: yes when the environment allows; under CI=true an
/// unavailable kernel side is a failure; locally LBSIM_SKIP_KERNEL_TESTS=1 skips them.
pub fn kernel_tests_enabled() -> bool {
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let skip = std::env::var("LBSIM_SKIP_KERNEL_TESTS").is_ok_and(|v| v == "1");
    if skip && !in_ci {
        eprintln!("kernel tests skipped (LBSIM_SKIP_KERNEL_TESTS=1)");
        return false;
    }
    if let Err(error) = sim::kernel::topology::check_environment() {
        panic!(
            "kernel side unavailable: {error:#} (set LBSIM_SKIP_KERNEL_TESTS=1 to skip outside CI)"
        );
    }
    true
}

/// Namespaces of this process (`lbsim-<pid>-…`).
pub fn own_namespaces() -> Vec<String> {
    let prefix = format!("lbsim-{}-", std::process::id());
    sim::kernel::topology::list_namespaces()
        .expect("ip netns list")
        .into_iter()
        .filter(|name| name.starts_with(&prefix))
        .collect()
}

/// Write Ethernet frames as a pcap file in a fresh temporary directory.
pub fn write_pcap(name: &str, frames: &[Vec<u8>]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lbsim-kernel-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&0xa1b2_c3d4_u32.to_le_bytes());
    bytes.extend_from_slice(&2u16.to_le_bytes());
    bytes.extend_from_slice(&4u16.to_le_bytes());
    bytes.extend_from_slice(&[0; 8]);
    bytes.extend_from_slice(&65_535u32.to_le_bytes());
    bytes.extend_from_slice(&1u32.to_le_bytes());
    for (index, frame) in frames.iter().enumerate() {
        let length = u32::try_from(frame.len()).expect("small frame");
        bytes.extend_from_slice(&1_000u32.to_le_bytes());
        bytes.extend_from_slice(&(u32::try_from(index).expect("few frames") * 1_000).to_le_bytes());
        bytes.extend_from_slice(&length.to_le_bytes());
        bytes.extend_from_slice(&length.to_le_bytes());
        bytes.extend_from_slice(frame);
    }
    std::fs::write(&path, bytes).expect("write pcap");
    path
}

/// The real captures, `../shared/corpus/real` (found from the workspace or a worktree).
pub fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|dir| dir.join("shared/corpus/real"))
        .find(|dir| dir.is_dir())
        .expect("../shared/corpus/real exists")
}

/// A file of `sim/tests/data/kernel/`.
pub fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/kernel")
        .join(name)
}

pub mod random_flows;
