//! Partitioned `sim plan` / `sim check` and their merge, on this machine (the Slurm run is
//! in `shard_slurm.rs`): shards merged equal the single run (deterministic part of plan.json
//! and plan.md, check's text report, JUnit without times, exit code); the merge refuses a
//! missing, duplicated, failed or foreign shard; a seed study of 200 seeds names failure
//! fractions and a worst seed that `sim run --seed` reproduces; the Kubernetes manifest
//! holds what an Indexed Job needs.

mod shard_support;

use std::path::Path;

use shard_support::*;

/// A 12-point sweep of a short synflood run.
const SWEEP: [&str; 8] = [
    "--sweep",
    "flood.rate=20k,50k,100k,200k",
    "--sweep",
    "queues=1..3",
    "--duration",
    "40ms",
    "--cores",
    "2",
];

fn plan_args<'a>(out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["plan", "scenarios/synflood.toml"];
    args.extend(SWEEP);
    args.extend(["--out", out]);
    args.extend(extra);
    args
}

#[test]
fn plan_shards_merge_to_the_single_run_and_bad_sets_are_refused() {
    let dir = scratch("plan");
    let single = dir.join("single");
    let out = sim(&plan_args(single.to_str().unwrap(), &[]));
    assert_ok(&out, "single plan");
    let shards = dir.join("shards");
    for k in 1..=3 {
        let partition = format!("{k}/3");
        let args = plan_args(shards.to_str().unwrap(), &["--partition", &partition]);
        assert_ok(&sim(&args), "plan shard");
    }
    // The engine's variables name the shard too (here Slurm's, with an array from 0).
    let env_shard = dir.join("env-shard");
    let out = sim_env(
        &plan_args(env_shard.to_str().unwrap(), &[]),
        &[
            ("SLURM_ARRAY_TASK_ID", "1"),
            ("SLURM_ARRAY_TASK_MIN", "0"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
        ],
    );
    assert_ok(&out, "plan shard from SLURM_ARRAY_*");
    assert!(
        stderr(&out).contains("partition 2/3 from SLURM_ARRAY_TASK_ID"),
        "{}",
        stderr(&out)
    );
    let read = |path: std::path::PathBuf| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    let from_env = read(env_shard.join("plan-shard-2-of-3.json"));
    let from_flag = read(shards.join("plan-shard-2-of-3.json"));
    assert_eq!(from_env["body"], from_flag["body"]);
    assert_eq!(
        from_env["shard"]["definition"],
        from_flag["shard"]["definition"]
    );
    assert_eq!(from_env["shard"]["items"], 4);

    let merged = dir.join("merged");
    let out = sim(&[
        "plan",
        "merge",
        shards.to_str().unwrap(),
        "--out",
        merged.to_str().unwrap(),
        "--cores",
        "2",
    ]);
    assert_ok(&out, "plan merge");
    assert_same_plan(&single, &merged);

    // A missing shard.
    let two = [
        shards.join("plan-shard-1-of-3.json"),
        shards.join("plan-shard-3-of-3.json"),
    ];
    let error = merge_error(
        "plan",
        &two.iter().map(|p| p.to_str().unwrap()).collect::<Vec<_>>(),
    );
    assert!(
        error.contains("shard 2/3 of `sim plan of scenario `synflood`"),
        "{error}"
    );
    assert!(error.contains("missing"), "{error}");
    // A duplicate shard (the same shard written twice, e.g. a retried task).
    let dup = dir.join("dup");
    std::fs::create_dir_all(&dup).unwrap();
    std::fs::copy(
        shards.join("plan-shard-2-of-3.json"),
        dup.join("again.json"),
    )
    .unwrap();
    let error = merge_error(
        "plan",
        &[
            shards.to_str().unwrap(),
            dup.join("again.json").to_str().unwrap(),
        ],
    );
    assert!(error.contains("shard 2/3 appears twice"), "{error}");
    // A shard of another scenario / sweep.
    let other = dir.join("other");
    let mut args = vec![
        "plan",
        "scenarios/udpflood.toml",
        "--sweep",
        "flood.rate=20k,50k,100k,200k",
        "--sweep",
        "queues=1..3",
    ];
    args.extend([
        "--duration",
        "40ms",
        "--partition",
        "2/3",
        "--out",
        other.to_str().unwrap(),
    ]);
    assert_ok(&sim(&args), "shard of another scenario");
    let error = merge_error(
        "plan",
        &[
            two[0].to_str().unwrap(),
            other.join("plan-shard-2-of-3.json").to_str().unwrap(),
            two[1].to_str().unwrap(),
        ],
    );
    assert!(error.contains("is a shard of other work than"), "{error}");
    assert!(
        error.contains("udpflood") && error.contains("synflood"),
        "{error}"
    );
    // A shard that failed leaves a .failed file the merge names.
    let failed = dir.join("failed");
    std::fs::create_dir_all(&failed).unwrap();
    for k in [1, 3] {
        let name = format!("plan-shard-{k}-of-3.json");
        std::fs::copy(shards.join(&name), failed.join(&name)).unwrap();
    }
    let text = std::fs::read_to_string(shards.join("plan-shard-2-of-3.json")).unwrap();
    let mut file: serde_json::Value = serde_json::from_str(&text).unwrap();
    file["shard"]["error"] = "sweep point 4: out of memory".into();
    file["body"] = serde_json::Value::Null;
    std::fs::write(failed.join("plan-shard-2-of-3.failed"), file.to_string()).unwrap();
    let error = merge_error("plan", &[failed.to_str().unwrap()]);
    assert!(
        error.contains("shard 2/3 failed") && error.contains("out of memory"),
        "{error}"
    );
}

fn merge_error(tool: &str, inputs: &[&str]) -> String {
    let mut args = vec![tool, "merge"];
    args.extend(inputs);
    let out_dir = scratch("merge-refused");
    let out_dir = out_dir.to_str().unwrap();
    if tool == "plan" {
        args.extend(["--out", out_dir]);
    }
    let out = sim(&args);
    assert_eq!(
        out.status.code(),
        Some(2),
        "merge must refuse: {}",
        stderr(&out)
    );
    assert!(!Path::new(out_dir).join("plan.json").exists());
    stderr(&out)
}

#[test]
fn check_shards_merge_to_the_single_run_also_when_a_case_fails() {
    let dir = scratch("check");
    let corpus = copy_corpus(&dir);
    break_one_case(&corpus);
    let corpus = corpus.to_str().unwrap();
    let single_junit = dir.join("single.xml");
    let single = sim(&["check", corpus, "--junit", single_junit.to_str().unwrap()]);
    assert_eq!(single.status.code(), Some(1), "{}", stderr(&single));
    let shards = dir.join("shards");
    let mut sizes = Vec::new();
    for k in 1..=4 {
        let partition = format!("{k}/4");
        let out = sim(&[
            "check",
            corpus,
            "--partition",
            &partition,
            "--shard-out",
            shards.to_str().unwrap(),
        ]);
        assert!(matches!(out.status.code(), Some(0 | 1)), "{}", stderr(&out));
        sizes.push(stdout(&out).lines().count() - 1);
    }
    assert!(
        sizes.iter().all(|&n| n > 10),
        "every shard gets a share of the corpus: {sizes:?}"
    );
    let merged_junit = dir.join("merged.xml");
    let merged = sim(&[
        "check",
        "merge",
        shards.to_str().unwrap(),
        "--junit",
        merged_junit.to_str().unwrap(),
    ]);
    assert_eq!(merged.status.code(), Some(1), "{}", stderr(&merged));
    assert_eq!(stdout(&merged), stdout(&single));
    assert!(stdout(&merged).contains("FAIL"));
    assert_eq!(
        junit_without_times(&merged_junit),
        junit_without_times(&single_junit)
    );
    assert!(
        stderr(&merged).contains("1 FAILED"),
        "the summary names the shard: {}",
        stderr(&merged)
    );

    let error = merge_error(
        "check",
        &[shards.join("check-shard-1-of-4.json").to_str().unwrap()],
    );
    assert!(
        error.contains("shards 2/4, 3/4, 4/4 of `sim check"),
        "{error}"
    );
    // Shards of another corpus (one case fewer) are refused.
    let other = dir.join("other-shards");
    let mut smaller = vec![corpus.to_string() + "/gen"];
    smaller.push(corpus.to_string() + "/real");
    let out = sim(&[
        "check",
        &smaller[0],
        &smaller[1],
        "--partition",
        "2/4",
        "--shard-out",
        other.to_str().unwrap(),
    ]);
    assert!(matches!(out.status.code(), Some(0 | 1)));
    let error = merge_error(
        "check",
        &[
            shards.join("check-shard-1-of-4.json").to_str().unwrap(),
            other.join("check-shard-2-of-4.json").to_str().unwrap(),
        ],
    );
    assert!(error.contains("is a shard of other work"), "{error}");
    let error = merge_error(
        "check",
        &[
            shards.to_str().unwrap(),
            shards.join("check-shard-3-of-4.json").to_str().unwrap(),
        ],
    );
    assert!(error.contains("shard 3/4 appears twice"), "{error}");
}

#[test]
fn a_seed_study_names_failure_fractions_and_a_worst_seed_that_reproduces() {
    let dir = scratch("seeds");
    let out_dir = dir.join("plan");
    let out = sim(&[
        "plan",
        "scenarios/faults.toml",
        "--sweep",
        "seed=1..200",
        "--duration",
        "200ms",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert_ok(&out, "seed study");
    let plan: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("plan.json")).unwrap()).unwrap();
    let group = &plan["deterministic"]["seed_study"]["groups"][0];
    assert_eq!(group["seeds"], 200);
    let checks = group["checks"].as_array().unwrap();
    assert!(!checks.is_empty());
    // At this length some seeds meet the SLO and some do not: the study tells them apart.
    let fraction = group["slo_failure_fraction"].as_f64().unwrap();
    assert!(fraction > 0.0 && fraction < 1.0, "{fraction}");
    for check in checks {
        let fraction = check["failure_fraction"].as_f64().unwrap();
        assert_eq!(fraction, check["failed_seeds"].as_f64().unwrap() / 200.0);
        assert_eq!(check["values"].as_array().unwrap().len(), 200);
        assert!(
            check["min"].as_f64() <= check["p50"].as_f64()
                && check["p99"].as_f64() <= check["max"].as_f64()
        );
    }
    let md = std::fs::read_to_string(out_dir.join("plan.md")).unwrap();
    assert!(md.contains("## Seed study"), "{md}");
    let html = std::fs::read_to_string(out_dir.join("plan.html")).unwrap();
    assert!(html.contains("<h2>Seed study</h2>") && html.contains("seeds at or below"));

    let worst = &group["worst"];
    let seed = worst["seed"].as_u64().unwrap();
    let command = worst["command"].as_str().unwrap();
    assert_eq!(
        command,
        format!("sim run scenarios/faults.toml --seed {seed} --duration 200ms")
    );
    let run_dir = dir.join("worst");
    let mut args: Vec<&str> = command.split(' ').skip(1).collect();
    args.extend(["--out", run_dir.to_str().unwrap()]);
    let run = sim(&args);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("report.json")).unwrap())
            .unwrap();
    let report = &report["report"];
    assert_eq!(report["seed"].as_u64(), Some(seed));
    let point = &plan["deterministic"]["points"][worst["point"].as_u64().unwrap() as usize];
    assert_eq!(point["settings"][0].as_u64(), Some(seed));
    assert_eq!(report["passed"], point["outcome"]["slo_passed"]);
    assert_eq!(
        run.status.code() == Some(0),
        report["passed"] == true,
        "{}",
        stderr(&run)
    );
    let failed: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["passed"] == false)
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    let expected: Vec<&str> = worst["failed_checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(failed, expected);
    for check in report["checks"].as_array().unwrap() {
        let study = checks.iter().find(|c| c["name"] == check["name"]).unwrap();
        assert_eq!(
            study["values"][(seed - 1) as usize],
            check["value"],
            "{}",
            check["name"]
        );
    }
}

#[test]
fn the_kubernetes_manifest_is_an_indexed_job_with_a_merge() {
    let documents = yaml_documents(&repository().join("deploy/kubernetes/plan-indexed-job.yaml"));
    let Some(documents) = documents else { return };
    let kinds: Vec<&str> = documents
        .iter()
        .map(|d| d["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["PersistentVolumeClaim", "Job", "Job"]);
    let claim = documents[0]["metadata"]["name"].as_str().unwrap();
    let shards = &documents[1];
    let spec = &shards["spec"];
    assert_eq!(shards["apiVersion"], "batch/v1");
    assert_eq!(spec["completionMode"], "Indexed");
    let completions = spec["completions"].as_u64().unwrap();
    let pod = &spec["template"]["spec"];
    assert_eq!(
        pod["restartPolicy"], "Never",
        "podFailurePolicy needs restartPolicy Never"
    );
    assert!(
        spec["backoffLimitPerIndex"].is_u64(),
        "FailIndex needs backoffLimitPerIndex"
    );
    let container = &pod["containers"][0];
    assert_eq!(
        spec["podFailurePolicy"]["rules"][0]["onExitCodes"]["containerName"],
        container["name"]
    );
    let env = container["env"].as_array().unwrap();
    let count = env.iter().find(|e| e["name"] == "JOB_COMPLETIONS").unwrap();
    assert_eq!(
        count["value"].as_str().unwrap().parse::<u64>().unwrap(),
        completions
    );
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let shard_dir = args[args.iter().position(|a| *a == "--shard-out").unwrap() + 1];
    let merge = &documents[2]["spec"]["template"]["spec"];
    let merge_args: Vec<&str> = merge["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(&merge_args[..3], ["plan", "merge", shard_dir]);
    assert!(merge_args.contains(&"--wait"));
    for pod in [pod, merge] {
        assert_eq!(
            pod["volumes"][0]["persistentVolumeClaim"]["claimName"],
            claim
        );
        let mount = pod["containers"][0]["volumeMounts"][0]["mountPath"]
            .as_str()
            .unwrap();
        assert!(
            shard_dir.starts_with(mount),
            "{shard_dir} is on the shared volume {mount}"
        );
    }
    // The shard's command runs as the manifest has it: sim takes shard 1 of `completions`
    // from JOB_COMPLETION_INDEX=0 and JOB_COMPLETIONS (shorter runs, a local directory).
    let local = scratch("k8s-shard");
    let mut run: Vec<&str> = args
        .iter()
        .map(|a| {
            if *a == shard_dir {
                local.to_str().unwrap()
            } else {
                a
            }
        })
        .collect();
    run.extend(["--duration", "10ms"]);
    let completions = completions.to_string();
    let out = sim_env(
        &run,
        &[
            ("JOB_COMPLETION_INDEX", "0"),
            ("JOB_COMPLETIONS", &completions),
        ],
    );
    assert_ok(&out, "the manifest's shard command");
    assert!(
        local
            .join(format!("plan-shard-1-of-{completions}.json"))
            .exists()
    );
}

#[test]
fn the_ci_matrix_example_shards_and_merges_the_corpus() {
    let documents = yaml_documents(&repository().join("deploy/ci/github-actions-check.yml"));
    let Some(documents) = documents else { return };
    let jobs = &documents[0]["jobs"];
    let shards: Vec<u64> = jobs["check"]["strategy"]["matrix"]["shard"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    let count = shards.len() as u64;
    assert_eq!(
        shards,
        (1..=count).collect::<Vec<_>>(),
        "shards 1..=N, each once"
    );
    let partition = jobs["check"]["env"]["LBSIM_PARTITION"].as_str().unwrap();
    assert_eq!(partition, format!("${{{{ matrix.shard }}}}/{count}"));
    let steps = |job: &str| -> Vec<String> {
        jobs[job]["steps"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["run"].as_str().map(String::from))
            .collect()
    };
    assert!(
        steps("check")
            .iter()
            .any(|r| r.contains("sim check pcaps/cases --shard-out shards"))
    );
    assert_eq!(jobs["merge"]["needs"], "check");
    assert_eq!(
        jobs["merge"]["if"], "always()",
        "the merge reports failing shards too"
    );
    assert!(
        steps("merge")
            .iter()
            .any(|r| r.contains("sim check merge shards"))
    );
    // What a matrix job runs, with LBSIM_PARTITION as the matrix sets it.
    let dir = scratch("matrix");
    let out = sim_env(
        &["check", "pcaps/cases", "--shard-out", dir.to_str().unwrap()],
        &[("LBSIM_PARTITION", &format!("{count}/{count}"))],
    );
    assert_ok(&out, "a matrix shard");
    assert!(stderr(&out).contains(&format!("partition {count}/{count} from LBSIM_PARTITION")));
    assert!(
        dir.join(format!("check-shard-{count}-of-{count}.json"))
            .exists()
    );
}
