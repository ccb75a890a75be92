//! Signed Notary metadata for the benchmarks that publish through the HTTP API (upload-bench,
//! audit-bench, verify-bench): client keys, signing, `meta` entries and the multipart body of an
//! update, written once and included by each of them with `#[path]`.

use base64::Engine as _;
use serde_json::{Value, json};
use tufa_core::canonical::to_canonical;
use tufa_core::keys::{Algorithm, KeyType, PrivateKey, PublicKey};
use tufa_core::metadata::{Signature, envelope};

/// A client key: the private half signs, the public half goes into metadata.
pub(crate) struct Key {
    pub(crate) private: PrivateKey,
    pub(crate) public: PublicKey,
}

impl Key {
    /// A new ECDSA key.
    pub(crate) fn ecdsa() -> Result<Key, String> {
        let private = new_private()?;
        let public = private.public_key();
        Ok(Key { private, public })
    }

    /// `private` as a root key of `gun`, the way the notary client makes it: a self-signed
    /// certificate whose common name is the GUN.
    pub(crate) fn root_for(private: &PrivateKey, gun: &str) -> Result<Key, String> {
        let pkcs8 = private.pkcs8();
        let pair = rcgen::KeyPair::try_from(pkcs8.as_slice()).map_err(|error| error.to_string())?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|error| error.to_string())?;
        params.distinguished_name.push(rcgen::DnType::CommonName, gun);
        let certificate = params.self_signed(&pair).map_err(|error| error.to_string())?;
        let public = PublicKey::new(KeyType::EcdsaX509, certificate.pem().into_bytes());
        let private = PrivateKey::from_pkcs8(Algorithm::Ecdsa, &pkcs8).map_err(|error| error.to_string())?;
        Ok(Key { private, public })
    }

    /// The key ID as metadata lists it.
    pub(crate) fn id(&self) -> String {
        self.public.key_id()
    }
}

/// A repository's first root (version 1, expiring in ten years): `root` holds the root role and
/// signs it, `targets`, `snapshot` and `timestamp` hold theirs, one key each, threshold 1.
pub(crate) fn first_root(
    root: &Key,
    targets: &PublicKey,
    snapshot: &PublicKey,
    timestamp: &PublicKey,
) -> Result<Vec<u8>, String> {
    let mut keys = serde_json::Map::new();
    for key in [&root.public, targets, snapshot, timestamp] {
        keys.insert(key.key_id(), key.to_json());
    }
    sign(
        &json!({"_type": "Root", "consistent_snapshot": false, "expires": expires(3650), "version": 1, "keys": keys,
        "roles": {
            "root": {"keyids": [root.id()], "threshold": 1},
            "targets": {"keyids": [targets.key_id()], "threshold": 1},
            "snapshot": {"keyids": [snapshot.key_id()], "threshold": 1},
            "timestamp": {"keyids": [timestamp.key_id()], "threshold": 1},
        }}),
        &[root],
    )
}

/// The timestamp key the server at `url` holds for `gun` (created by the first request).
pub(crate) async fn timestamp_key(client: &reqwest::Client, url: &str, gun: &str) -> Result<PublicKey, String> {
    let key: Value = client
        .get(format!("{url}/v2/{gun}/_trust/tuf/timestamp.key"))
        .send()
        .await
        .map_err(|error| error.to_string())?
        .json()
        .await
        .map_err(|error| error.to_string())?;
    PublicKey::from_json(&key).map_err(|error| error.to_string())
}

/// A new ECDSA private key.
pub(crate) fn new_private() -> Result<PrivateKey, String> {
    PrivateKey::generate(Algorithm::Ecdsa).map_err(|error| error.to_string())
}

/// RFC 3339 time `days` from now, as metadata writes `expires`.
pub(crate) fn expires(days: i64) -> String {
    tufa_core::time::format(chrono::Utc::now() + chrono::Duration::days(days))
}

/// A signed file: `body` canonicalised and signed by `keys`.
pub(crate) fn sign(body: &Value, keys: &[&Key]) -> Result<Vec<u8>, String> {
    let canonical = to_canonical(body).map_err(|error| error.to_string())?;
    let mut signatures = Vec::new();
    for key in keys {
        let sig = key.private.sign(&canonical).map_err(|error| error.to_string())?;
        signatures.push(Signature { keyid: key.id(), method: key.private.method().to_owned(), sig });
    }
    Ok(envelope(&canonical, &signatures))
}

/// The `meta` entry (length and SHA-256) of `bytes`.
pub(crate) fn meta(bytes: &[u8]) -> Value {
    let digest = tufa_core::keys::sha256(bytes);
    json!({"length": bytes.len(), "hashes": {"sha256": base64::engine::general_purpose::STANDARD.encode(digest)}})
}

/// The multipart body of an update of `files` (role, bytes) and its content type.
pub(crate) fn multipart<N: AsRef<str>, B: AsRef<[u8]>>(files: &[(N, B)]) -> (String, Vec<u8>) {
    let boundary = "tufa-bench-boundary-7d1";
    let mut body = Vec::new();
    for (name, content) in files {
        let name = name.as_ref();
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n\r\n")
                .as_bytes(),
        );
        body.extend_from_slice(content.as_ref());
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}
