//! Container images for the enforcement tests, made without internet access: a tiny root file
//! system (the host's `/bin/dash` as `/bin/sh` with the libraries `ldd` names, and a marker file)
//! imported and pushed into a local docker-registry by a private dockerd without a plugin; the
//! tag `v1` signed with the real notary CLI against a trust server as `docker trust sign` would
//! (target = the tag, its hash and length the manifest's), the tag `v2` pushed but never signed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use tempfile::TempDir;
use tufa_core::keys::PublicKey;

use crate::dockerd::Dockerd;
use crate::flows::{init_with_server_snapshot, path_arg, publish_target};
use crate::notary::Notary;
use crate::process::run_tool;
use crate::registry::Registry;
use crate::server::Server;

/// The media type of the manifests `docker push` writes.
pub const MANIFEST_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// The repository path of the test images in the registry.
pub const PATH: &str = "tufa/app";

/// A signed and an unsigned tag of one repository in a local registry.
pub struct SignedImages {
    /// `127.0.0.1:<port>/tufa/app`, also the GUN of its trust data.
    pub repository: String,
    /// `<repository>:v1`, signed.
    pub signed: String,
    /// `<repository>:v2`, pushed but not signed.
    pub unsigned: String,
    /// The signed digest of `v1` (`sha256:<hex>`): its manifest's.
    pub digest: String,
    /// The canonical ID of the repository's root key (what `trust-pinning.root-keys` lists).
    pub root_key: String,
    /// `docker save` of the signed image (for `docker load`).
    pub saved: PathBuf,
    dir: TempDir,
}

/// The canonical ID of the root role's (certificate) key in `root`.
pub fn root_canonical_key_id(root: &Value) -> String {
    let id = root["signed"]["roles"]["root"]["keyids"][0].as_str().expect("root.json lists a root key");
    PublicKey::from_json(&root["signed"]["keys"][id])
        .expect("the root key parses")
        .canonical_id()
        .expect("the root key has a canonical ID")
}

/// Copies `file` into `root` at the same absolute path.
fn copy_in(root: &Path, file: &Path) {
    let relative = file.strip_prefix("/").expect("ldd names absolute paths");
    let target = root.join(relative);
    fs::create_dir_all(target.parent().expect("a file has a parent")).expect("create the rootfs dir");
    fs::copy(file, &target).unwrap_or_else(|error| panic!("copy {} into the rootfs: {error}", file.display()));
}

/// A tar of a root file system with `/bin/sh` (the host's dash and its libraries) and `/hello`
/// holding `marker`.
fn rootfs_tar(dir: &Path, name: &str, marker: &str) -> PathBuf {
    let root = dir.join(format!("{name}-root"));
    fs::create_dir_all(root.join("bin")).expect("create the rootfs");
    fs::copy("/bin/dash", root.join("bin/sh")).expect("copy /bin/dash into the rootfs");
    let ldd = run_tool(Command::new("ldd").arg("/bin/dash"));
    for line in ldd.stdout.lines() {
        let path = match line.split_once("=>") {
            Some((_, after)) => after.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(path) = path.filter(|path| path.starts_with('/')) {
            copy_in(&root, Path::new(path));
        }
    }
    fs::write(root.join("hello"), marker).expect("write the marker file");
    let tar = dir.join(format!("{name}.tar"));
    run_tool(Command::new("tar").arg("-C").arg(&root).arg("-cf").arg(&tar).arg("."));
    tar
}

impl SignedImages {
    /// Builds and pushes both images into `registry` and signs `v1` on `server`.
    pub fn publish(server: &Server, registry: &Registry) -> SignedImages {
        let dir = tempfile::Builder::new().prefix("tufa-images-").tempdir().expect("create images dir");
        let repository = format!("{}/{PATH}", registry.host());
        let signed = format!("{repository}:v1");
        let unsigned = format!("{repository}:v2");
        let saved = dir.path().join("saved.tar");
        let pushed = {
            let seed = Dockerd::start("seed", None, None);
            let v1 = rootfs_tar(dir.path(), "v1", "signed\n");
            let v2 = rootfs_tar(dir.path(), "v2", "unsigned\n");
            seed.ok(&["import", path_arg(&v1), &signed]);
            seed.ok(&["import", path_arg(&v2), &unsigned]);
            seed.ok(&["push", &signed]);
            seed.ok(&["push", &unsigned]);
            seed.ok(&["save", "-o", path_arg(&saved), &signed]);
            seed.ok(&["image", "inspect", "--format", "{{index .RepoDigests 0}}", &signed]).stdout.trim().to_owned()
        };
        let manifest =
            registry.request("GET", &format!("/v2/{PATH}/manifests/v1"), None, &[("Accept", MANIFEST_V2)], None);
        assert_eq!(manifest.status, 200, "GET the manifest: {}", String::from_utf8_lossy(&manifest.body));
        let owner = Notary::new(server, "owner");
        init_with_server_snapshot(&owner, &repository);
        let target = publish_target(&owner, &repository, "v1", &manifest.body);
        let digest = format!("sha256:{}", target.digest);
        assert_eq!(pushed, format!("{repository}@{digest}"), "the signed digest is the pushed manifest's");
        let root_key = root_canonical_key_id(&server.metadata_json(&repository, "root"));
        SignedImages { repository, signed, unsigned, digest, root_key, saved, dir }
    }

    /// A policy (TOML) enforcing content trust for the repository's registry with its root key
    /// pinned and `server` as the trust server, followed by `more` (further tables).
    pub fn policy(&self, server: &Server, more: &str) -> String {
        let registry = self.repository.split('/').next().expect("the repository names its registry");
        format!(
            "[content-trust]\nmode = \"enforced\"\n\n[content-trust.trust-pinning.root-keys]\n\"{registry}/*\" = \
             [\"{}\"]\n\n[trust-server]\nurl = \"{}\"\nca = \"{}\"\n\n{more}",
            self.root_key,
            server.url(),
            server.ca_cert().display()
        )
    }

    /// Writes [`SignedImages::policy`] to a file in this fixture's directory and returns its path.
    pub fn write_policy(&self, server: &Server, more: &str) -> PathBuf {
        let path = self.dir.path().join("policy.toml");
        fs::write(&path, self.policy(server, more)).expect("write the policy");
        path
    }

    /// A scratch directory that lives as long as the fixture.
    pub fn scratch_dir(&self) -> &Path {
        self.dir.path()
    }
}
