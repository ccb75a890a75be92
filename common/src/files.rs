//! Owner-only files and directories: creating them (directories 0700, secret files 0600) and
//! refusing secret files that group or others may read. Every error names the path and, for a
//! permission problem, says what to change.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// What went wrong with a file or directory.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// An operating-system error.
    #[error("cannot {action} {path}: {}", explain(source, hint), path = path.display())]
    Io {
        /// What was being done, e.g. "create directory" or "read".
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
        /// What to change when the error is a permission problem.
        hint: String,
    },
    /// A secret file that group or others may read.
    #[error(
        "{what} {path} is readable by group or others (mode {mode:03o}); restrict it with `chmod 600 {path}`",
        path = path.display()
    )]
    TooOpen {
        /// What the file holds, e.g. "key-encryption key file".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A file larger than the limit for what it holds (or a device or pipe that never ends).
    #[error("{what} {path} is larger than {max_bytes} bytes", path = path.display())]
    TooLarge {
        /// What the file holds, e.g. "config file".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The limit.
        max_bytes: u64,
    },
}

fn explain(source: &io::Error, hint: &str) -> String {
    if source.kind() == io::ErrorKind::PermissionDenied {
        format!("permission denied; {hint}")
    } else {
        source.to_string()
    }
}

impl FileError {
    /// An operating-system error while doing `action` on `path`, with the default advice for a
    /// permission problem.
    pub fn io(action: &'static str, path: &Path, source: io::Error) -> Self {
        let hint = "fix the owner or mode of the directory holding it, or choose another path".to_owned();
        Self::Io { action, path: path.to_path_buf(), source, hint }
    }

    /// Replaces the advice given for a permission problem, e.g. with the setting to change.
    pub fn with_hint(self, new_hint: impl Into<String>) -> Self {
        match self {
            Self::Io { action, path, source, .. } => Self::Io { action, path, source, hint: new_hint.into() },
            other => other,
        }
    }

    /// The operating-system error kind, if this is one.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            Self::Io { source, .. } => Some(source.kind()),
            Self::TooOpen { .. } | Self::TooLarge { .. } => None,
        }
    }
}

/// Who may read a file written by [`write_new_file`] or [`replace_file`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Owner only (0600): private keys, key-encryption keys.
    Private,
    /// Everyone may read (0644): certificates.
    Public,
}

impl Access {
    /// The Unix mode bits.
    pub fn mode(self) -> u32 {
        match self {
            Self::Private => 0o600,
            Self::Public => 0o644,
        }
    }
}

/// Creates `dir` and missing parents with mode 0700. An existing directory is left as it is.
pub fn create_private_dir(dir: &Path) -> Result<(), FileError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|source| FileError::io("create directory", dir, source))
}

/// Reads the whole of `path`, at most `max_bytes` of it: the limit is enforced on the bytes read,
/// not on what the metadata says, so a device, a pipe or a growing file cannot make the read
/// unbounded. The bytes are zeroized when dropped (the file may hold a key or a password).
pub fn read_limited(what: &'static str, path: &Path, max_bytes: u64) -> Result<Zeroizing<Vec<u8>>, FileError> {
    let file = fs::File::open(path).map_err(|source| FileError::io("read", path, source))?;
    read_limited_from(what, path, file, max_bytes)
}

/// [`read_limited`] for a file that is already open (e.g. by [`open_owner_only`]).
pub fn read_limited_from(
    what: &'static str,
    path: &Path,
    file: fs::File,
    max_bytes: u64,
) -> Result<Zeroizing<Vec<u8>>, FileError> {
    use std::io::Read as _;
    // Reserve what the file says it holds (plus one byte to detect more), so that reading a
    // secret never reallocates and leaves an unzeroized copy behind.
    let announced = file.metadata().map(|metadata| metadata.len()).unwrap_or(0);
    let capacity = usize::try_from(announced.min(max_bytes).saturating_add(1)).unwrap_or(0);
    let mut bytes = Zeroizing::new(Vec::with_capacity(capacity));
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|source| FileError::io("read", path, source))?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > max_bytes {
        return Err(FileError::TooLarge { what, path: path.to_path_buf(), max_bytes });
    }
    Ok(bytes)
}

/// [`read_limited`] for a text file: the bytes must be UTF-8.
pub fn read_limited_text(what: &'static str, path: &Path, max_bytes: u64) -> Result<Zeroizing<String>, FileError> {
    let bytes = read_limited(what, path, max_bytes)?;
    match std::str::from_utf8(&bytes) {
        Ok(text) => Ok(Zeroizing::new(text.to_owned())),
        Err(_) => Err(FileError::io("read", path, io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"))),
    }
}

/// Refuses a secret file that group or others may read (any of the 0o077 bits).
pub fn check_owner_only(what: &'static str, path: &Path, metadata: &fs::Metadata) -> Result<(), FileError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(FileError::TooOpen { what, path: path.to_path_buf(), mode });
        }
    }
    #[cfg(not(unix))]
    let _ = (what, path, metadata);
    Ok(())
}

/// Opens a secret regular file for reading after checking that only its owner may read it.
pub fn open_owner_only(what: &'static str, path: &Path) -> Result<fs::File, FileError> {
    let file = fs::File::open(path).map_err(|source| FileError::io("read", path, source))?;
    let metadata = file.metadata().map_err(|source| FileError::io("read", path, source))?;
    if !metadata.is_file() {
        return Err(FileError::io("read", path, io::Error::other("not a regular file")));
    }
    check_owner_only(what, path, &metadata)?;
    Ok(file)
}

/// Creates a new file with mode 0600; fails if it exists (`io_kind() == AlreadyExists`).
pub fn create_private_file(path: &Path) -> Result<fs::File, FileError> {
    open_for_write(path, Access::Private, false)
}

fn open_for_write(path: &Path, access: Access, overwrite: bool) -> Result<fs::File, FileError> {
    let mut options = fs::OpenOptions::new();
    options.write(true);
    if overwrite {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(access.mode());
    }
    let file = options.open(path).map_err(|source| FileError::io("create", path, source))?;
    // An overwritten file keeps its old mode; set it explicitly.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(access.mode()))
            .map_err(|source| FileError::io("set the mode of", path, source))?;
    }
    #[cfg(not(unix))]
    let _ = access;
    Ok(file)
}

/// Writes `contents` to a new file (or over an existing one when `overwrite`) with `access`,
/// synced to disk. A failed write removes the partial file.
pub fn write_new_file(path: &Path, contents: &[u8], access: Access, overwrite: bool) -> Result<(), FileError> {
    let mut file = open_for_write(path, access, overwrite)?;
    if let Err(source) = file.write_all(contents).and_then(|()| file.sync_all()) {
        drop(file);
        let _ = fs::remove_file(path);
        return Err(FileError::io("write", path, source));
    }
    Ok(())
}

/// Replaces `path` atomically: writes a fresh `<path>.tmp` with `access`, syncs it, renames it.
pub fn replace_file(path: &Path, contents: &[u8], access: Access) -> Result<(), FileError> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    match fs::remove_file(&temporary) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(FileError::io("remove", &temporary, source)),
    }
    write_new_file(&temporary, contents, access, false)?;
    fs::rename(&temporary, path).map_err(|source| FileError::io("replace", path, source))
}

#[cfg(test)]
#[cfg(unix)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn reads_are_bounded_by_the_bytes_read_not_the_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let exact = dir.path().join("exact");
        fs::write(&exact, b"0123456789").unwrap();
        assert_eq!(read_limited("test file", &exact, 10).unwrap().as_slice(), b"0123456789");
        assert_eq!(
            read_limited("test file", &exact, 9).unwrap_err().to_string(),
            format!("test file {} is larger than 9 bytes", exact.display())
        );
        // A device reports length 0 and never ends: the limit still holds.
        assert_eq!(
            read_limited("config file", Path::new("/dev/zero"), 4096).unwrap_err().to_string(),
            "config file /dev/zero is larger than 4096 bytes"
        );
        let binary = dir.path().join("binary");
        fs::write(&binary, [0xff, 0xfe]).unwrap();
        assert_eq!(
            read_limited_text("test file", &binary, 10).unwrap_err().to_string(),
            format!("cannot read {}: not UTF-8 text", binary.display())
        );
        let missing = dir.path().join("missing");
        assert_eq!(
            read_limited("test file", &missing, 10).unwrap_err().to_string(),
            format!("cannot read {}: No such file or directory (os error 2)", missing.display())
        );
    }

    #[test]
    fn directories_and_secret_files_are_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        create_private_dir(&nested).unwrap();
        assert_eq!(mode(&nested), 0o700);
        assert_eq!(mode(&dir.path().join("a")), 0o700);
        create_private_dir(&nested).unwrap();

        let secret = nested.join("kek.key");
        write_new_file(&secret, b"x", Access::Private, false).unwrap();
        assert_eq!(mode(&secret), 0o600);
        let error = write_new_file(&secret, b"y", Access::Private, false).unwrap_err();
        assert_eq!(error.io_kind(), Some(io::ErrorKind::AlreadyExists));
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o644)).unwrap();
        write_new_file(&secret, b"z", Access::Private, true).unwrap();
        assert_eq!((mode(&secret), fs::read(&secret).unwrap()), (0o600, b"z".to_vec()));

        let public = nested.join("ca.crt");
        replace_file(&public, b"cert", Access::Public).unwrap();
        replace_file(&public, b"cert2", Access::Public).unwrap();
        assert_eq!((mode(&public), fs::read(&public).unwrap()), (0o644, b"cert2".to_vec()));
        assert!(!nested.join("ca.crt.tmp").exists());
    }

    #[test]
    fn a_group_readable_secret_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pin");
        fs::write(&path, "1234").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let error = open_owner_only("PKCS#11 PIN file", &path).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "PKCS#11 PIN file {0} is readable by group or others (mode 640); restrict it with `chmod 600 {0}`",
                path.display()
            )
        );
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        assert!(open_owner_only("PKCS#11 PIN file", &path).is_ok());
        let error = open_owner_only("PKCS#11 PIN file", dir.path()).unwrap_err();
        assert_eq!(error.to_string(), format!("cannot read {}: not a regular file", dir.path().display()));
    }

    #[test]
    fn permission_errors_name_the_path_and_the_fix() {
        let denied = io::Error::from(io::ErrorKind::PermissionDenied);
        let error = FileError::io("create directory", Path::new("/x/tufa-data"), denied);
        assert_eq!(
            error.to_string(),
            "cannot create directory /x/tufa-data: permission denied; fix the owner or mode of the directory \
             holding it, or choose another path"
        );
        let error = error.with_hint("choose a writable --data-dir or fix the directory's owner");
        assert_eq!(
            error.to_string(),
            "cannot create directory /x/tufa-data: permission denied; choose a writable --data-dir or fix the \
             directory's owner"
        );
        let missing = FileError::io("read", Path::new("/x/pin"), io::Error::from(io::ErrorKind::NotFound));
        assert_eq!(missing.to_string(), format!("cannot read /x/pin: {}", io::Error::from(io::ErrorKind::NotFound)));
    }
}
