//! A small tmpfs mounted for one test (to run a server out of disk space), unmounted on drop,
//! also when the test panics. Mounting needs root, as CI runs; without it the test fails with a
//! message saying so instead of passing without having tested anything.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::process::run_with_timeout;

/// How long `mount` and `umount` may take.
const MOUNT_TIMEOUT: Duration = Duration::from_secs(30);

/// A tmpfs of a fixed size mounted on a fresh temporary directory.
pub struct Tmpfs {
    // Unmounted in `Drop` before the directory is removed.
    dir: TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `kib` KiB (`mount -t tmpfs -o size=<kib>k`). Panics when that fails,
    /// saying that the test needs root.
    pub fn mount(kib: u64) -> Tmpfs {
        let dir = tempfile::Builder::new().prefix("tufa-tmpfs-").tempdir().expect("create mount point");
        let output = run_with_timeout(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={kib}k,mode=0700"), "tmpfs"])
                .arg(dir.path()),
            b"",
            MOUNT_TIMEOUT,
        );
        assert!(
            output.success(),
            "this test needs root to mount a {kib} KiB tmpfs at {} (CI runs the tests as root); mount failed:\n{output}",
            dir.path().display()
        );
        Tmpfs { dir }
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmount = |lazy: bool| {
            let mut command = Command::new("umount");
            if lazy {
                command.arg("-l");
            }
            // Never a panic here: this may run while the test is already unwinding.
            match tufa_testkit::process::run_with_timeout(command.arg(self.dir.path()), b"", MOUNT_TIMEOUT) {
                Ok(output) if output.success() => Ok(()),
                Ok(output) => Err(output.to_string()),
                Err(error) => Err(error.to_string()),
            }
        };
        // A process still holding a file there makes `umount` fail; detach it then.
        if let Err(error) = unmount(false)
            && let Err(lazy) = unmount(true)
        {
            eprintln!("could not unmount the tmpfs at {}:\n{error}\n{lazy}", self.dir.path().display());
        }
    }
}
