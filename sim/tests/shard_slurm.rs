//! `sim plan` and `sim check` sharded over a real single-node Slurm: the test installs
//! slurm-wlm and munge when missing (root, apt), starts `munged` (as munge), `slurmctld` and
//! `slurmd` with a one-node configuration in a scratch directory (own ports and munge socket,
//! no cgroups, no systemd), submits with `deploy/slurm/submit` (array job + afterany merge
//! job), and stops the daemons by pid at the end. A 12-point sweep as a 3-task array equals
//! the single-machine plan; the corpus as 4 shards equals the single run's report, JUnit and
//! exit code, with all cases passing and with one failing.
//!
//! Not root, or no Slurm and no apt: skipped with the reason; under CI=true that is a failure.

mod shard_support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use shard_support::*;

const DAEMONS: [&str; 4] = [
    "/usr/sbin/munged",
    "/usr/sbin/slurmctld",
    "/usr/sbin/slurmd",
    "/usr/bin/sbatch",
];

/// A running one-node Slurm; dropping it stops the daemons by pid.
struct Slurm {
    dir: PathBuf,
    pids: Vec<i32>,
}

impl Drop for Slurm {
    fn drop(&mut self) {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        // slurmd, slurmctld, then munged (the others talk to it while stopping).
        for &pid in self.pids.iter().rev() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            let started = Instant::now();
            while Path::new(&format!("/proc/{pid}")).exists() {
                if started.elapsed() > Duration::from_secs(10) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run(program: &str, args: &[&str]) -> Result<Output, String> {
    Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))
}

fn checked(program: &str, args: &[&str]) -> Result<String, String> {
    let out = run(program, args)?;
    if !out.status.success() {
        return Err(format!(
            "{program} {args:?}: {}{}",
            stdout(&out),
            stderr(&out)
        ));
    }
    Ok(stdout(&out))
}

/// Slurm and munge present, installing them with apt when missing (root).
fn ensure_installed() -> Result<(), String> {
    if DAEMONS.iter().all(|d| Path::new(d).exists()) {
        return Ok(());
    }
    if !Path::new("/usr/bin/apt-get").exists() {
        return Err("slurm-wlm/munge are missing and there is no apt-get".into());
    }
    let out = Command::new("apt-get")
        .args(["install", "-y", "-q", "slurm-wlm", "munge"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .map_err(|e| format!("apt-get: {e}"))?;
    if !out.status.success() || !DAEMONS.iter().all(|d| Path::new(d).exists()) {
        return Err(format!(
            "apt-get install slurm-wlm munge failed: {}",
            stderr(&out)
        ));
    }
    Ok(())
}

fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

fn read_pid(path: &Path) -> Result<i32, String> {
    let started = Instant::now();
    loop {
        if let Some(pid) = std::fs::read_to_string(path)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            return Ok(pid);
        }
        if started.elapsed() > Duration::from_secs(10) {
            return Err(format!("{} never appeared", path.display()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn slurm_conf(dir: &Path, host: &str) -> Result<String, String> {
    let d = dir.display();
    let (ctld, slurmd) = (free_port()?, free_port()?);
    Ok(format!(
        "ClusterName=lbsimtest\nSlurmctldHost={host}(127.0.0.1)\nSlurmctldPort={ctld}\n\
         SlurmdPort={slurmd}\nAuthType=auth/munge\nAuthInfo=socket={d}/munge/sock\n\
         CredType=cred/munge\nSlurmUser=root\nSlurmdUser=root\nStateSaveLocation={d}/state\n\
         SlurmdSpoolDir={d}/spool\nSlurmctldPidFile={d}/slurmctld.pid\n\
         SlurmdPidFile={d}/slurmd.pid\nSlurmctldLogFile={d}/slurmctld.log\n\
         SlurmdLogFile={d}/slurmd.log\nProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\n\
         SelectType=select/cons_tres\nSelectTypeParameters=CR_Core\n\
         SchedulerParameters=batch_sched_delay=0\nJobCompType=jobcomp/none\n\
         AccountingStorageType=accounting_storage/none\nMpiDefault=none\nReturnToService=2\n\
         NodeName={host} NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN\n\
         PartitionName=lbsim Nodes={host} Default=YES MaxTime=INFINITE State=UP\n"
    ))
}

/// Start munged, slurmctld and slurmd in a scratch directory.
fn start() -> Result<Slurm, String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("not root".into());
    }
    ensure_installed()?;
    let dir = scratch("slurm");
    let mut slurm = Slurm {
        dir: dir.clone(),
        pids: Vec::new(),
    };
    let munge = dir.join("munge");
    for sub in ["state", "spool"] {
        std::fs::create_dir_all(dir.join(sub)).map_err(|e| e.to_string())?;
    }
    std::fs::create_dir_all(&munge).map_err(|e| e.to_string())?;
    let key = munge.join("key");
    std::fs::copy("/etc/munge/munge.key", &key).map_err(|e| format!("munge key: {e}"))?;
    let m = munge.display().to_string();
    checked("chown", &["-R", "munge:munge", &m])?;
    checked("chmod", &["0711", &m])?;
    checked("chmod", &["0400", &format!("{m}/key")])?;
    checked(
        "runuser",
        &[
            "-u",
            "munge",
            "--",
            DAEMONS[0],
            &format!("--socket={m}/sock"),
            &format!("--key-file={m}/key"),
            &format!("--pid-file={m}/pid"),
            &format!("--log-file={m}/log"),
            &format!("--seed-file={m}/seed"),
        ],
    )?;
    slurm.pids.push(read_pid(&munge.join("pid"))?);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_err(|e| format!("hostname: {e}"))?
        .trim()
        .split('.')
        .next()
        .unwrap_or("localhost")
        .to_string();
    let conf = dir.join("slurm.conf");
    std::fs::write(&conf, slurm_conf(&dir, &host)?).map_err(|e| e.to_string())?;
    let conf = conf.display().to_string();
    checked(DAEMONS[1], &["-f", &conf])?;
    slurm.pids.push(read_pid(&dir.join("slurmctld.pid"))?);
    checked(DAEMONS[2], &["-f", &conf, "-N", &host])?;
    slurm.pids.push(read_pid(&dir.join("slurmd.pid"))?);
    let started = Instant::now();
    loop {
        let state = Command::new("sinfo")
            .args(["-h", "-o", "%T"])
            .env("SLURM_CONF", &conf)
            .output()
            .map(|o| stdout(&o))
            .unwrap_or_default();
        if state.trim() == "idle" {
            return Ok(slurm);
        }
        if started.elapsed() > Duration::from_secs(20) {
            let log = std::fs::read_to_string(dir.join("slurmd.log")).unwrap_or_default();
            return Err(format!(
                "the node never came up (sinfo: {state:?}); slurmd.log:\n{log}"
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Slurm {
    fn conf(&self) -> String {
        self.dir.join("slurm.conf").display().to_string()
    }

    /// `deploy/slurm/submit TASKS OUT ARGS…`; waits for the merge job; its exit code.
    fn submit(&self, tasks: usize, out: &Path, args: &[&str]) -> i32 {
        let submit = repository().join("deploy/slurm/submit");
        let output = Command::new(&submit)
            .arg(tasks.to_string())
            .arg(out)
            .args(args)
            .current_dir(repository())
            .env("SLURM_CONF", self.conf())
            .env("SIM", sim_binary())
            .output()
            .unwrap();
        assert_ok(&output, "deploy/slurm/submit");
        let ids = stdout(&output);
        let (array, merge) = ids.trim().split_once(' ').expect("two job ids");
        let state = self.wait(merge);
        assert!(
            state.contains("JobState=COMPLETED") || state.contains("JobState=FAILED"),
            "{state}"
        );
        let tasks_state = self.job(array);
        assert_eq!(
            tasks_state.lines().count(),
            tasks,
            "one line per array task: {tasks_state}"
        );
        state
            .split_whitespace()
            .find_map(|f| f.strip_prefix("ExitCode="))
            .and_then(|c| c.split(':').next())
            .and_then(|c| c.parse().ok())
            .expect("ExitCode=")
    }

    fn job(&self, id: &str) -> String {
        let out = Command::new("scontrol")
            .args(["show", "job", id, "-o"])
            .env("SLURM_CONF", self.conf())
            .output()
            .unwrap();
        stdout(&out)
    }

    fn wait(&self, id: &str) -> String {
        let started = Instant::now();
        loop {
            let state = self.job(id);
            let done = ["COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"]
                .iter()
                .any(|s| state.contains(&format!("JobState={s} ")));
            if done {
                return state;
            }
            assert!(
                started.elapsed() < Duration::from_secs(300),
                "job {id} did not end: {state}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn slurm_or_skip() -> Option<Slurm> {
    match start() {
        Ok(slurm) => Some(slurm),
        Err(reason) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true and Slurm cannot start: {reason}"
            );
            eprintln!("skipped: Slurm cannot start: {reason}");
            None
        }
    }
}

#[test]
fn a_sweep_and_the_corpus_sharded_over_slurm_equal_the_single_runs() {
    let Some(slurm) = slurm_or_skip() else { return };
    let dir = scratch("slurm-runs");
    let sweep = [
        "plan",
        "scenarios/synflood.toml",
        "--sweep",
        "flood.rate=20k,50k,100k,200k",
        "--sweep",
        "queues=1..3",
        "--duration",
        "40ms",
    ];
    let single = dir.join("plan-single");
    let mut args = sweep.to_vec();
    args.extend(["--cores", "2", "--out", single.to_str().unwrap()]);
    assert_ok(&sim(&args), "single plan");
    let sharded = dir.join("plan-slurm");
    let code = slurm.submit(3, &sharded, &sweep);
    let log = std::fs::read_to_string(sharded.join("logs/merge.out")).unwrap_or_default();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("merged 3 shards, 12 points"), "{log}");
    assert_same_plan(&single, &sharded);

    let corpus = copy_corpus(&dir);
    for broken in [false, true] {
        if broken {
            break_one_case(&corpus);
        }
        let name = if broken { "broken" } else { "clean" };
        let junit = dir.join(format!("{name}-single.xml"));
        let single = sim(&[
            "check",
            corpus.to_str().unwrap(),
            "--junit",
            junit.to_str().unwrap(),
        ]);
        assert_eq!(
            single.status.code(),
            Some(i32::from(broken)),
            "{}",
            stderr(&single)
        );
        let out = dir.join(format!("check-{name}"));
        let code = slurm.submit(4, &out, &["check", corpus.to_str().unwrap()]);
        assert_eq!(code, i32::from(broken), "merge job exit code");
        let report = std::fs::read_to_string(out.join("logs/merge.out")).unwrap();
        assert!(report.starts_with(&stdout(&single)), "{report}");
        assert_eq!(
            junit_without_times(&out.join("junit.xml")),
            junit_without_times(&junit)
        );
        for k in 1..=4 {
            assert!(
                out.join(format!("shards/check-shard-{k}-of-4.json"))
                    .exists()
            );
        }
    }
    drop(slurm);
}
