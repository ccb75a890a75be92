//! A one-node Slurm cluster (Debian's slurm-wlm 22.05) for the prolog tests: a private `munged`
//! (its own key and socket), `slurmctld` and `slurmd` in the foreground on free 127.0.0.1 ports,
//! with state, spool, pid and log files in a temporary directory, and `PrologSlurmctld` set to the
//! script under test. Needs root (the daemons run jobs as the submitting user).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use tempfile::TempDir;

use crate::dockerd::{report, require_root, terminate};
use crate::process::{CommandOutput, LOG_TAIL_BYTES, free_port, log_tail, run_tool, run_with_timeout, spawn_logged};

/// How long the cluster may take to show its node idle.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Deadline for one Slurm command (srun, sbatch --wait, scontrol).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// A running munged, slurmctld and slurmd, stopped on drop.
pub struct SlurmCluster {
    daemons: Vec<(String, Child, PathBuf)>,
    conf: PathBuf,
    dir: TempDir,
}

impl SlurmCluster {
    /// Starts the cluster with `prolog_slurmctld` as its `PrologSlurmctld` and waits until its
    /// node is idle. Panics with the daemons' logs when it does not come up.
    pub fn start(prolog_slurmctld: &Path) -> SlurmCluster {
        require_root();
        let dir = tempfile::Builder::new().prefix("tufa-slurm-").tempdir_in("/tmp").expect("create slurm dir");
        let root = dir.path().to_path_buf();
        for sub in ["munge", "munge-key", "state", "spool", "log"] {
            fs::create_dir_all(root.join(sub)).expect("create a slurm dir");
        }
        // munged insists on a private key directory and a socket directory everyone can enter.
        run_tool(Command::new("chmod").arg("700").arg(root.join("munge-key")));
        run_tool(Command::new("chmod").arg("755").arg(&root).arg(root.join("munge")));
        let key = root.join("munge-key/munge.key");
        run_tool(Command::new("mungekey").arg("--create").arg("--keyfile").arg(&key));
        let munge_socket = root.join("munge/munge.sock");
        let host = run_tool(Command::new("hostname").arg("-s")).stdout.trim().to_owned();
        let conf = root.join("slurm.conf");
        fs::write(&conf, slurm_conf(&root, &host, &munge_socket, prolog_slurmctld)).expect("write slurm.conf");
        let mut cluster = SlurmCluster { daemons: Vec::new(), conf, dir };
        cluster.spawn(
            "munged",
            Command::new("munged")
                .arg("--foreground")
                .arg(format!("--socket={}", munge_socket.display()))
                .arg(format!("--key-file={}", key.display()))
                .arg(format!("--pid-file={}", root.join("munge/munged.pid").display()))
                .arg(format!("--log-file={}", root.join("munge/munged.log").display()))
                .arg(format!("--seed-file={}", root.join("munge/seed").display())),
        );
        wait_for(&mut cluster.daemons, || {
            if munge_socket.exists() { Ok(()) } else { Err("munged has not made its socket yet".to_owned()) }
        });
        let conf_path = cluster.conf.clone();
        cluster.spawn("slurmctld", Command::new("slurmctld").arg("-D").arg("-i").arg("-f").arg(&conf_path));
        cluster.spawn("slurmd", Command::new("slurmd").arg("-D").arg("-N").arg(&host).arg("-f").arg(&conf_path));
        let work = cluster.dir.path().to_path_buf();
        wait_for(&mut cluster.daemons, || {
            let output = run_in(&conf_path, &work, "sinfo", &["--noheader", "--format", "%t"]);
            match output.stdout.trim() {
                "idle" => Ok(()),
                other => Err(format!("the node is {other:?}: {}", output.stderr.trim())),
            }
        });
        cluster
    }

    /// Starts one daemon in the foreground, logging to a file.
    fn spawn(&mut self, name: &str, command: &mut Command) {
        let log = self.dir.path().join("log").join(format!("{name}.out"));
        let child = spawn_logged(command, &log).unwrap_or_else(|error| panic!("{error}"));
        self.daemons.push((name.to_owned(), child, log));
    }

    /// Runs a Slurm client command (`srun`, `sbatch`, `scontrol`, ...) against this cluster.
    pub fn run(&self, program: &str, args: &[&str]) -> CommandOutput {
        run_in(&self.conf, self.dir.path(), program, args)
    }

    /// The cluster's slurm.conf (what `SLURM_CONF` must name for Slurm commands).
    pub fn conf(&self) -> &Path {
        &self.conf
    }

    /// A directory the jobs can write to.
    pub fn work_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The slurmctld log so far.
    pub fn slurmctld_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("log/slurmctld.log")).unwrap_or_default()
    }
}

/// Polls `ready` until it succeeds; panics with every daemon's log after [`STARTUP_TIMEOUT`]
/// or when a daemon exited.
fn wait_for(daemons: &mut [(String, Child, PathBuf)], mut ready: impl FnMut() -> Result<(), String>) {
    let started = std::time::Instant::now();
    let mut problem = String::new();
    while started.elapsed() < STARTUP_TIMEOUT {
        for (name, child, log) in daemons.iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("{name} exited with {status} while Slurm was starting:\n{}", log_tail(log, LOG_TAIL_BYTES));
            }
        }
        match ready() {
            Ok(()) => return,
            Err(text) => problem = text,
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let logs: Vec<String> =
        daemons.iter().map(|(name, _, log)| format!("--- {name} ---\n{}", log_tail(log, LOG_TAIL_BYTES))).collect();
    panic!("Slurm did not come up within {STARTUP_TIMEOUT:?}: {problem}\n{}", logs.join("\n"));
}

/// Runs a Slurm client command with `SLURM_CONF=<conf>` in `dir` (no other Slurm setting leaks in).
fn run_in(conf: &Path, dir: &Path, program: &str, args: &[&str]) -> CommandOutput {
    let mut command = Command::new(program);
    command.args(args).current_dir(dir);
    for (key, _) in std::env::vars_os() {
        let text = key.to_string_lossy();
        if text.starts_with("SLURM_") || text.starts_with("SBATCH_") || text.starts_with("SRUN_") {
            command.env_remove(&key);
        }
    }
    command.env("SLURM_CONF", conf);
    run_with_timeout(&mut command, b"", COMMAND_TIMEOUT)
}

/// The cluster's slurm.conf: one node `host` at 127.0.0.1, one partition, root as SlurmUser, no
/// accounting, no cgroups, and `prolog` as PrologSlurmctld.
fn slurm_conf(root: &Path, host: &str, munge_socket: &Path, prolog: &Path) -> String {
    let ctld_port = free_port();
    let slurmd_port = free_port();
    let path = |name: &str| root.join(name).display().to_string();
    format!(
        "ClusterName=tufa\n\
         SlurmctldHost={host}(127.0.0.1)\n\
         SlurmUser=root\n\
         SlurmdUser=root\n\
         SlurmctldPort={ctld_port}\n\
         SlurmdPort={slurmd_port}\n\
         AuthType=auth/munge\n\
         AuthInfo=socket={munge}\n\
         CredType=cred/munge\n\
         StateSaveLocation={state}\n\
         SlurmdSpoolDir={spool}\n\
         SlurmctldPidFile={ctld_pid}\n\
         SlurmdPidFile={slurmd_pid}\n\
         SlurmctldLogFile={ctld_log}\n\
         SlurmdLogFile={slurmd_log}\n\
         ProctrackType=proctrack/linuxproc\n\
         TaskPlugin=task/none\n\
         SwitchType=switch/none\n\
         MpiDefault=none\n\
         SchedulerType=sched/builtin\n\
         SelectType=select/cons_tres\n\
         SelectTypeParameters=CR_CPU\n\
         ReturnToService=2\n\
         JobCompType=jobcomp/none\n\
         AccountingStorageType=accounting_storage/none\n\
         JobAcctGatherType=jobacct_gather/none\n\
         PrologSlurmctld={prolog}\n\
         NodeName={host} NodeAddr=127.0.0.1 CPUs=1 State=UNKNOWN\n\
         PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP\n",
        munge = munge_socket.display(),
        state = path("state"),
        spool = path("spool"),
        ctld_pid = path("slurmctld.pid"),
        slurmd_pid = path("slurmd.pid"),
        ctld_log = path("log/slurmctld.log"),
        slurmd_log = path("log/slurmd.log"),
        prolog = prolog.display(),
    )
}

impl Drop for SlurmCluster {
    fn drop(&mut self) {
        // slurmd and slurmctld first, munged last.
        while let Some((name, mut child, log)) = self.daemons.pop() {
            terminate(&mut child, Duration::from_secs(20));
            report(&name, &log, &mut self.dir);
        }
    }
}
