//! The HPC enforcement points against real trust data (signed with the notary CLI against
//! tufa-server) and a local docker-registry: scripts/hpc/slurm-prolog.sh run the way Slurm runs
//! it (an empty environment with the job's variables) and as the `PrologSlurmctld` of a real
//! one-node Slurm 22.05 cluster under `srun` and `sbatch`; and scripts/hpc/tufa-podman pulling and
//! running images with the real podman 4.3. Needs root.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tufa_tests::dockerd::require_root;
use tufa_tests::flows::path_arg;
use tufa_tests::images::{MANIFEST_V2, PATH, SignedImages};
use tufa_tests::process::{CommandOutput, run_with_timeout};
use tufa_tests::registry::Registry;
use tufa_tests::slurm::SlurmCluster;
use tufa_tests::tufa::{self, Backend};

/// A script of scripts/hpc.
fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("scripts").join("hpc").join(name)
}

/// The denial sentence of `tufa-server verify` for the unsigned tag.
fn not_signed(images: &SignedImages) -> String {
    format!(
        "image {} is not trusted: tag v2 of {} is not signed (mode enforced by content-trust.mode)",
        images.unsigned, images.repository
    )
}

/// Runs the prolog as slurmd or slurmctld would: no inherited environment (not even `PATH`),
/// the job's variables, and the site's `TUFA_*` settings.
fn prolog(vars: &[(&str, &str)]) -> CommandOutput {
    let mut command = Command::new(script("slurm-prolog.sh"));
    command.env_clear().envs(vars.iter().copied());
    run_with_timeout(&mut command, b"", Duration::from_secs(60))
}

/// Prints the image's marker file with the shell's builtins (the test images hold only `/bin/sh`).
const READ_HELLO: &str = "read -r line < /hello; echo \"$line\"";

#[test]
fn the_slurm_prolog_fails_jobs_with_untrusted_images() {
    require_root();
    let server = tufa::start(Backend::Sqlite);
    let registry = Registry::start_open();
    let images = SignedImages::publish(&server, &registry);
    let policy = images.write_policy(&server, "");
    let state = tempfile::tempdir().unwrap();
    let tufa_bin = tufa::binary();
    let site = [
        ("TUFA_POLICY", path_arg(&policy)),
        ("TUFA_SERVER_BIN", path_arg(&tufa_bin)),
        ("TUFA_STATE_DIR", path_arg(state.path())),
        ("SLURM_SCRIPT_CONTEXT", "prolog_slurmctld"),
    ];
    let with = |extra: &[(&str, &str)]| {
        let mut vars: Vec<(&str, &str)> = site.to_vec();
        vars.extend_from_slice(extra);
        prolog(&vars)
    };

    // The image from the job's comment (among other words), trusted: exit 0.
    let comment = format!("project=x,image={} note", images.signed);
    let run = with(&[("SLURM_JOB_ID", "7"), ("SLURM_JOB_COMMENT", &comment)]);
    assert_eq!(run.status.and_then(|status| status.code()), Some(0), "{run}");
    assert_eq!(
        run.stderr.trim(),
        format!("tufa-prolog: job 7: trusted: {} is {} signed by targets", images.signed, images.digest)
    );

    // The unsigned tag: exit 1 with the reason.
    let comment = format!("image={}", images.unsigned);
    let run = with(&[("SLURM_JOB_ID", "8"), ("SLURM_JOB_COMMENT", &comment)]);
    assert_eq!(run.status.and_then(|status| status.code()), Some(1), "{run}");
    assert_eq!(run.stderr.trim(), format!("tufa-prolog: job 8: denied: {}", not_signed(&images)));

    // TUFA_IMAGE wins over the comment.
    let run = with(&[("SLURM_JOB_ID", "9"), ("SLURM_JOB_COMMENT", &comment), ("TUFA_IMAGE", &images.signed)]);
    assert_eq!(run.status.and_then(|status| status.code()), Some(0), "{run}");

    // A wrong digest typed by the user.
    let wrong = format!("{}@sha256:{}", images.signed, "0".repeat(64));
    let run = with(&[("SLURM_JOB_ID", "10"), ("TUFA_IMAGE", &wrong)]);
    assert_eq!(run.status.and_then(|status| status.code()), Some(1), "{run}");
    assert!(run.stderr.starts_with("tufa-prolog: job 10: denied: image "), "{run}");

    // No image: not a container job, unless the site requires one.
    let run = with(&[("SLURM_JOB_ID", "11"), ("SLURM_JOB_COMMENT", "just a comment")]);
    assert_eq!((run.status.and_then(|status| status.code()), run.stderr.as_str()), (Some(0), ""), "{run}");
    let run = with(&[("SLURM_JOB_ID", "12"), ("SLURM_JOB_COMMENT", ""), ("TUFA_REQUIRE_IMAGE", "1")]);
    assert_eq!(run.status.and_then(|status| status.code()), Some(1), "{run}");
    assert_eq!(
        run.stderr.trim(),
        "tufa-prolog: job 12: denied: the job names no container image (TUFA_IMAGE or --comment image=...) and \
         TUFA_REQUIRE_IMAGE=1"
    );

    // Trust cannot be decided (the trust server is unreachable and nothing is cached): exit 2.
    let fresh = tempfile::tempdir().unwrap();
    let run = prolog(&[
        ("TUFA_POLICY", path_arg(&policy)),
        ("TUFA_SERVER_BIN", path_arg(&tufa_bin)),
        ("TUFA_STATE_DIR", path_arg(fresh.path())),
        ("TUFA_TRUST_SERVER", "https://127.0.0.1:9"),
        ("SLURM_JOB_ID", "13"),
        ("TUFA_IMAGE", &images.signed),
    ]);
    assert_eq!(run.status.and_then(|status| status.code()), Some(2), "{run}");
    // The verifier's own warnings come first; the prolog's line is the last.
    let last = run.stderr.lines().last().unwrap_or_default();
    let expected = format!(
        "tufa-prolog: job 13: image {0} could not be verified (tufa-server verify exited 2): error: image {0} is not \
         trusted: trust could not be decided: trust server unavailable: root of {1}: ",
        images.signed, images.repository
    );
    assert!(last.starts_with(&expected), "{run}");
    assert!(last.ends_with("(run-options.fail-open is off)"), "{run}");

    // A real Slurm cluster with the prolog as PrologSlurmctld, its settings in a site wrapper
    // (Slurm gives prologs a fixed environment), written once the cluster's slurm.conf exists.
    let site_dir = tempfile::tempdir().unwrap();
    let prolog_log = site_dir.path().join("prolog.log");
    let wrapper = site_dir.path().join("prolog-slurmctld");
    fs::write(&wrapper, "#!/bin/sh\nexit 1\n").unwrap();
    Command::new("chmod").arg("755").arg(&wrapper).status().unwrap();
    let cluster = SlurmCluster::start(&wrapper);
    // `extra` is added to the wrapper's exports.
    let configure = |extra: &str| {
        fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\nexport TUFA_POLICY='{}' TUFA_SERVER_BIN='{}' TUFA_STATE_DIR='{}' TUFA_PROLOG_LOG='{}' \
                 TUFA_CANCEL_DENIED=1 SLURM_CONF='{}'{extra}\nexec '{}'\n",
                policy.display(),
                tufa_bin.display(),
                state.path().display(),
                prolog_log.display(),
                cluster.conf().display(),
                script("slurm-prolog.sh").display()
            ),
        )
        .unwrap();
    };
    configure("");

    let trusted = format!("image={}", images.signed);
    let untrusted = format!("image={}", images.unsigned);
    let run = cluster.run("srun", &["--comment", &trusted, "/bin/echo", "ran trusted"]);
    assert!(run.success(), "{run}");
    assert_eq!(run.stdout.trim(), "ran trusted");
    let run = cluster.run("srun", &["--comment", &untrusted, "/bin/echo", "ran untrusted"]);
    assert!(!run.success(), "{run}");
    assert!(!run.stdout.contains("ran untrusted"), "{run}");
    // srun reports the killed (and, with TUFA_CANCEL_DENIED=1, cancelled) allocation.
    assert!(run.stderr.starts_with("srun: "), "{run}");

    // sbatch: the trusted batch job runs to completion; the untrusted one never runs.
    let out = cluster.work_dir().join("trusted.out");
    let run = cluster
        .run("sbatch", &["--wait", "--comment", &trusted, "--output", path_arg(&out), "--wrap", "echo batch trusted"]);
    assert!(run.success(), "{run}");
    assert_eq!(fs::read_to_string(&out).unwrap().trim(), "batch trusted");
    // Slurm requeues a batch job whose PrologSlurmctld failed; with TUFA_CANCEL_DENIED=1 the
    // prolog cancels it, so it ends without ever running.
    let denied_batch = |name: &str| {
        let out = cluster.work_dir().join(name);
        let run = cluster.run(
            "sbatch",
            &[
                "--wait",
                "--parsable",
                "--comment",
                &untrusted,
                "--output",
                path_arg(&out),
                "--wrap",
                "echo batch untrusted",
            ],
        );
        // Not cut by the command timeout: the job ended.
        assert!(run.status.is_some(), "sbatch --wait did not return: {run}");
        let job = run.stdout.trim().to_owned();
        assert!(!job.is_empty() && job.bytes().all(|byte| byte.is_ascii_digit()), "{run}");
        let shown = cluster.run("scontrol", &["show", "job", "--oneliner", &job]);
        assert!(shown.stdout.contains(" JobState=CANCELLED "), "{shown}");
        assert!(!out.exists(), "the untrusted batch job never ran: {run}");
    };
    denied_batch("untrusted.out");
    // A cancel that reaches slurmctld while the prolog runs can be undone by the requeue that
    // follows the prolog's failure (seen on a loaded machine). Here the prolog's own cancel is
    // lost on purpose (an scancel that does nothing the first time): its watcher cancels the job
    // once it is pending again.
    let lossy = site_dir.path().join("lossy-scancel");
    let lost = site_dir.path().join("lost-once");
    fs::write(
        &lossy,
        format!("#!/bin/sh\nif [ ! -e '{0}' ]; then : > '{0}'; exit 0; fi\nexec scancel \"$@\"\n", lost.display()),
    )
    .unwrap();
    Command::new("chmod").arg("755").arg(&lossy).status().unwrap();
    configure(&format!(" SCANCEL_BIN='{}'", lossy.display()));
    denied_batch("untrusted-lost-cancel.out");
    assert!(lost.exists(), "the first cancel went through the lossy scancel");

    let log = fs::read_to_string(&prolog_log).unwrap();
    let denied = format!("denied: {}", not_signed(&images));
    assert_eq!(log.lines().filter(|line| line.ends_with(&denied)).count(), 3, "{log}");
    assert_eq!(log.lines().filter(|line| line.contains(": trusted: ")).count(), 2, "{log}");
}

/// Runs `tufa-podman <args>` with podman's storage in `storage` (vfs) and the site settings.
fn tufa_podman(storage: &Path, policy: &Path, state: &Path, args: &[&str]) -> CommandOutput {
    let mut command = Command::new(script("tufa-podman"));
    command
        .args(args)
        .env("CONTAINERS_STORAGE_CONF", storage.join("storage.conf"))
        .env("TUFA_POLICY", policy)
        .env("TUFA_SERVER_BIN", tufa::binary())
        .env("TUFA_STATE_DIR", state);
    if let Some(podman) = std::env::var_os("PODMAN_BIN") {
        command.env("PODMAN_BIN", podman);
    }
    run_with_timeout(&mut command, b"", Duration::from_secs(180))
}

#[test]
fn the_podman_wrapper_runs_trusted_images_pinned_to_the_signed_digest() {
    require_root();
    let server = tufa::start(Backend::Sqlite);
    let registry = Registry::start_open();
    let images = SignedImages::publish(&server, &registry);
    let policy = images.write_policy(&server, "");
    let state = tempfile::tempdir().unwrap();
    let storage = tempfile::Builder::new().prefix("tufa-podman-").tempdir_in("/tmp").unwrap();
    fs::write(
        storage.path().join("storage.conf"),
        format!(
            "[storage]\ndriver = \"vfs\"\nrunroot = \"{0}/run\"\ngraphroot = \"{0}/graph\"\n",
            storage.path().display()
        ),
    )
    .unwrap();
    let podman = |args: &[&str]| tufa_podman(storage.path(), &policy, state.path(), args);
    // Containers here may not raise their rlimits above the test's, so they are set explicitly.
    let run_options = [
        "--rm",
        "--network",
        "none",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
        "--tls-verify=false",
    ];

    // Pull: the signed tag, pinned and tagged with the asked-for name.
    let pull = podman(&["pull", "--tls-verify=false", &images.signed]);
    assert!(pull.success(), "{pull}");
    let listed = podman(&["images", "--format", "{{.Repository}}:{{.Tag}} {{.Digest}}"]);
    assert!(listed.success(), "{listed}");
    assert!(listed.stdout.lines().any(|line| line == format!("{} {}", images.signed, images.digest)), "{listed}");

    // Move the tag v1 in the registry to the unsigned content and forget the local images: the
    // wrapper still runs the signed content, pulled by its digest.
    let removed = podman(&["rmi", "--all", "--force"]);
    assert!(removed.success(), "{removed}");
    let unsigned_manifest =
        registry.request("GET", &format!("/v2/{PATH}/manifests/v2"), None, &[("Accept", MANIFEST_V2)], None);
    assert_eq!(unsigned_manifest.status, 200);
    let moved = registry.request(
        "PUT",
        &format!("/v2/{PATH}/manifests/v1"),
        None,
        &[("Content-Type", MANIFEST_V2)],
        Some(unsigned_manifest.body.clone()),
    );
    assert_eq!(moved.status, 201, "{}", String::from_utf8_lossy(&moved.body));
    let mut args = vec!["run"];
    args.extend(run_options);
    args.extend([images.signed.as_ref(), "/bin/sh", "-c", READ_HELLO]);
    let run = podman(&args);
    assert!(run.success(), "{run}");
    assert_eq!(run.stdout, "signed\n");

    // The unsigned tag: refused before podman runs, with the reason.
    let mut args = vec!["run"];
    args.extend(run_options);
    args.extend([images.unsigned.as_ref(), "/bin/sh", "-c", READ_HELLO]);
    let run = podman(&args);
    assert_eq!(run.status.and_then(|status| status.code()), Some(125), "{run}");
    assert_eq!(run.stdout, "");
    assert_eq!(run.stderr.trim(), format!("tufa-podman: image {} is denied: {}", images.unsigned, not_signed(&images)));
    let pull = podman(&["pull", "--tls-verify=false", &images.unsigned]);
    assert_eq!(pull.status.and_then(|status| status.code()), Some(125), "{pull}");
    let listed = podman(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(!listed.stdout.contains(":v2"), "the unsigned image was never pulled: {listed}");

    // Images that were never signed cannot be brought in another way.
    let load = podman(&["load", "-i", path_arg(&images.saved)]);
    assert_eq!(load.status.and_then(|status| status.code()), Some(125), "{load}");
    assert_eq!(load.stderr.trim(), "tufa-podman: podman load is refused: it makes an image that was never signed");
}
