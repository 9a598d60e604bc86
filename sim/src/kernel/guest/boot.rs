//! Booting `linux.uml` with the host's filesystem as root and a generated init script.
//!
//! [`Guest::run`] writes `init.sh` into a fresh per-run directory under `/tmp`
//! (`lbsim-guest-<pid>-<n>`), starts `linux.uml … init=<dir>/init.sh` with its console on
//! a file, waits (killing it after [`Guest::timeout`]) and reads back what the script left
//! in the directory: the body's stdout, stderr and exit status, and any file the body
//! wrote into `$OUT`. The directory is removed afterwards unless `LBSIM_GUEST_KEEP` is set
//! or the guest failed (then the error names it).
//!
//! The init script mounts proc, sysfs and a tmpfs on `/run` (so `ip netns add` stays inside
//! the guest), sets `PATH`, makes `$MODDIR/lib/modules/<version>` a symlink to the package's
//! modules so that `modprobe -d "$MODDIR" MODULE` (the `load_modules` shell function) works,
//! runs the body in a subshell and ends with `poweroff -f`.
//!
//! Hosts whose XSAVE area is larger than UML 6.1 expects (AVX-512 + AMX CPUs, as on these
//! machines) make the guest panic as its first process starts ("ptrace set fp regs failed,
//! errno = 14"): `linux.uml` then runs with a small `LD_PRELOAD` shim
//! (`xstate_shim.c`, compiled with the host's `cc` into the run directory) that hands the
//! host kernel whole XSAVE areas.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The kernel binary of Debian's `user-mode-linux` package.
pub const UML_BINARY: &str = "linux.uml";
/// Where the package keeps its modules (`<version>/kernel/...`).
pub const UML_MODULES: &str = "/usr/lib/uml/modules";
/// The C source of the XSAVE shim.
const XSTATE_SHIM: &str = include_str!("xstate_shim.c");

static RUN_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A guest kernel to run scripts in.
#[derive(Clone, Debug)]
pub struct Guest {
    /// Guest memory in MiB (`mem=`).
    pub memory_mib: u32,
    /// Wall-clock limit for one boot, script and power-off.
    pub timeout: Duration,
}

impl Default for Guest {
    fn default() -> Self {
        Self {
            memory_mib: 768,
            timeout: Duration::from_secs(300),
        }
    }
}

/// What a guest run left behind.
#[derive(Clone, Debug)]
pub struct GuestOutput {
    /// The body's standard output.
    pub stdout: String,
    /// The body's standard error.
    pub stderr: String,
    /// The body's exit status.
    pub status: i32,
    /// The guest console (kernel messages), for diagnostics.
    pub console: String,
    /// Files the body wrote into `$OUT`, by name (not the ones above).
    pub files: std::collections::BTreeMap<String, String>,
}

impl GuestOutput {
    /// A file the body wrote into `$OUT`.
    pub fn file(&self, name: &str) -> Option<&str> {
        self.files.get(name).map(String::as_str)
    }
}

/// Why the guest cannot run here.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    /// Not root (the kernel tests run as root; the package install needs it).
    #[error("not root")]
    NotRoot,
    /// A command or directory is missing; the string says which and the package.
    #[error("{0}")]
    Missing(String),
}

fn on_path(command: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(command).is_file()))
}

impl Guest {
    /// Check that a guest can start here: root, `linux.uml` and its modules, `ipvsadm`,
    /// `modprobe` (kmod) and a C compiler for the XSAVE shim.
    pub fn check() -> Result<(), Unavailable> {
        if !nix::unistd::Uid::effective().is_root() {
            return Err(Unavailable::NotRoot);
        }
        for (command, package) in [
            (UML_BINARY, "user-mode-linux"),
            ("modprobe", "kmod"),
            ("ipvsadm", "ipvsadm"),
            ("iptables-legacy", "iptables"),
            ("ip", "iproute2"),
            ("cc", "gcc"),
        ] {
            if !on_path(command) {
                return Err(Unavailable::Missing(format!(
                    "{command} not found (apt-get install {package})"
                )));
            }
        }
        module_version()
            .map(|_| ())
            .map_err(|e| Unavailable::Missing(e.to_string()))
    }

    /// Boot the guest, run `body` (POSIX shell) as PID 1's payload and return its output.
    ///
    /// The body sees `$IN` (see [`Guest::run_with_inputs`]), `$OUT` (a host directory: files written there come back in
    /// [`GuestOutput::files`]), `$MODDIR` and the shell function `load_modules M…`
    /// (`modprobe -d "$MODDIR"` each, failing loudly). An error means the guest did not
    /// start or did not finish (the message carries the console's tail); a body that
    /// fails is not an error: look at [`GuestOutput::status`].
    pub fn run(&self, body: &str) -> anyhow::Result<GuestOutput> {
        self.run_with_inputs(body, &[])
    }

    /// [`Guest::run`] with input files: each `(name, bytes)` is written to `$IN/name`
    /// before the guest starts.
    pub fn run_with_inputs(
        &self,
        body: &str,
        inputs: &[(&str, &[u8])],
    ) -> anyhow::Result<GuestOutput> {
        Self::check().map_err(|why| anyhow::anyhow!("the guest kernel cannot run here: {why}"))?;
        let version = module_version()?;
        let dir = std::env::temp_dir().join(format!(
            "lbsim-guest-{}-{}",
            std::process::id(),
            RUN_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("out"))
            .with_context(|| format!("creating {}", dir.display()))?;
        std::fs::create_dir_all(dir.join("in"))?;
        for (name, bytes) in inputs {
            std::fs::write(dir.join("in").join(name), bytes)?;
        }
        let result = self.run_in(&dir, &version, body);
        let keep = std::env::var_os("LBSIM_GUEST_KEEP").is_some();
        if result.is_ok() && !keep {
            let _ = std::fs::remove_dir_all(&dir);
        }
        result
    }

    fn run_in(&self, dir: &Path, version: &str, body: &str) -> anyhow::Result<GuestOutput> {
        let script = dir.join("init.sh");
        std::fs::write(&script, init_script(dir, version, body))?;
        set_executable(&script)?;
        let shim = compile_shim(dir)?;
        let console_path = dir.join("console.txt");
        let console = std::fs::File::create(&console_path)?;
        let mut child = Command::new(UML_BINARY)
            .arg(format!("mem={}M", self.memory_mib))
            .args(["root=/dev/root", "rootfstype=hostfs", "rootflags=/", "rw"])
            .arg(format!("init={}", script.display()))
            .args(["con=null", "con0=null,fd:1"])
            .env("LD_PRELOAD", &shim)
            .env("TMPDIR", "/tmp")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(console.try_clone()?)
            .stderr(console)
            .spawn()
            .with_context(|| format!("starting {UML_BINARY} (apt-get install user-mode-linux)"))?;
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break Some(status);
            }
            if started.elapsed() > self.timeout {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let console = std::fs::read_to_string(&console_path).unwrap_or_default();
        let out = dir.join("out");
        let rc = std::fs::read_to_string(dir.join("rc")).ok();
        let Some(rc) = rc else {
            let why = match status {
                None => format!("timed out after {:?}", self.timeout),
                Some(status) => format!("{UML_BINARY} exited ({status}) without a result"),
            };
            bail!(
                "guest kernel run in {}: {why}; console tail:\n{}",
                dir.display(),
                tail(&console, 25)
            );
        };
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        Ok(GuestOutput {
            stdout: read("stdout"),
            stderr: read("stderr"),
            status: rc.trim().parse().unwrap_or(-1),
            console,
            files: read_files(&out)?,
        })
    }
}

fn set_executable(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

fn read_files(dir: &Path) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let mut files = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            let text = String::from_utf8_lossy(&std::fs::read(entry.path())?).into_owned();
            files.insert(entry.file_name().to_string_lossy().into_owned(), text);
        }
    }
    Ok(files)
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("[<"))
        .collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The module version the package ships (the guest's `uname -r`).
pub fn module_version() -> anyhow::Result<String> {
    let entries = std::fs::read_dir(UML_MODULES)
        .with_context(|| format!("{UML_MODULES} missing (apt-get install user-mode-linux)"))?;
    let mut versions: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    versions.sort();
    versions
        .pop()
        .with_context(|| format!("{UML_MODULES} is empty (apt-get install user-mode-linux)"))
}

/// Compile the XSAVE shim into `dir` with the host's C compiler.
fn compile_shim(dir: &Path) -> anyhow::Result<PathBuf> {
    let source = dir.join("xstate_shim.c");
    let library = dir.join("xstate_shim.so");
    std::fs::write(&source, XSTATE_SHIM)?;
    let output = Command::new("cc")
        .args(["-O2", "-shared", "-fPIC", "-o"])
        .arg(&library)
        .arg(&source)
        .output()
        .context("running cc for the guest's XSAVE shim (apt-get install gcc)")?;
    if !output.status.success() {
        bail!(
            "cc failed on {}: {}",
            source.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(library)
}

/// The init script: setup, the body in a subshell with its output captured, power-off.
pub fn init_script(dir: &Path, version: &str, body: &str) -> String {
    let dir = dir.display();
    let mut script = String::new();
    let _ = write!(
        script,
        "#!/bin/sh\n\
         # generated by lbsim (sim/src/kernel/guest/boot.rs)\n\
         export PATH=/usr/sbin:/usr/bin:/sbin:/bin\n\
         export HOME=/root TERM=dumb LC_ALL=C\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sys /sys\n\
         mount -t tmpfs tmpfs /run\n\
         export OUT={dir}/out IN={dir}/in MODDIR=/run/lbsim-modules\n\
         mkdir -p \"$MODDIR/lib/modules\"\n\
         ln -s {UML_MODULES}/{version} \"$MODDIR/lib/modules/{version}\"\n\
         load_modules() {{\n\
         \tfor m in \"$@\"; do modprobe -d \"$MODDIR\" \"$m\" || {{ echo \"modprobe $m failed\" >&2; return 1; }}; done\n\
         }}\n\
         (\n{body}\n) >{dir}/stdout 2>{dir}/stderr </dev/null\n\
         echo $? >{dir}/rc.tmp && mv {dir}/rc.tmp {dir}/rc\n\
         poweroff -f\n"
    );
    script
}
