//! In-process tests of the audit API (`GET /v1/…`): the real router over a real SQLite store,
//! repositories published through it (a delegation added, changed and deleted with the
//! repository), then every endpoint's exact answer, paging, bad parameters, proofs checked
//! against signed checkpoints, and what callers without read access are refused or not shown.
#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test helpers outside #[test] functions fail by panicking"
)]

#[path = "../../core/tests/support/repo.rs"]
mod repo;
#[path = "support/router.rs"]
mod router;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use repo::{GUN, Key, Repo, expires, no_delegations, sign, target};
use router::{Reply, multipart, send};
use serde_json::{Value, json};
use tufa_audit::entry::parse_hash_hex;
use tufa_audit::{CheckpointKey, NewEntry, tree};
use tufa_core::keys::{Algorithm, PublicKey, sha256};
use tufa_core::update::Limits;
use tufa_server::app::{AppState, HttpSettings, router};
use tufa_server::audit::Checkpointer;
use tufa_server::auth::{Authenticator, Builtin};
use tufa_server::config::BuiltinAuthConfig;
use tufa_server::metrics::Metrics;
use tufa_server::service::{Service, ServiceSettings};
use tufa_server::signing::{LocalSigner, SealingKey};
use tufa_store::{ApiToken, Principal, PrincipalKind, Record, Store};

struct Harness {
    app: Router,
    store: Arc<dyn Store>,
    checkpointer: Checkpointer,
    _dir: tempfile::TempDir,
}

async fn harness(builtin: bool) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = tufa_store::open_sqlite(&dir.path().join("tufa.db")).await.unwrap();
    let signer = Arc::new(LocalSigner::new(store.clone(), SealingKey::new("test".into(), &[9; 32]).unwrap()));
    let auth = if builtin {
        let config = BuiltinAuthConfig {
            service: "tufa".into(),
            issuer: "tufa-test".into(),
            public_url: "https://tufa.test".into(),
            realm: "https://tufa.test/auth/token".into(),
            token_ttl: Duration::from_secs(300),
            registries: Vec::new(),
        };
        let key = SealingKey::new("test".into(), &[9; 32]).unwrap();
        Authenticator::Builtin(Arc::new(Builtin::start(config, store.clone(), key).await.unwrap()))
    } else {
        Authenticator::None
    };
    let state = AppState {
        service: Service::new(
            store.clone(),
            signer.clone(),
            ServiceSettings { key_algorithm: Algorithm::Ecdsa, limits: Limits::default() },
        ),
        http: Arc::new(HttpSettings::default()),
        metrics: Arc::new(Metrics::default()),
        auth: Arc::new(auth),
    };
    Harness { app: router(state), checkpointer: Checkpointer::new(store.clone(), signer), store, _dir: dir }
}

impl Harness {
    async fn call(&self, method: Method, path: &str, auth: Option<&str>, body: Option<(String, Vec<u8>)>) -> Reply {
        let mut builder = Request::builder().method(method).uri(path);
        if let Some(auth) = auth {
            builder = builder.header("authorization", auth);
        }
        let body = match body {
            Some((content_type, body)) => {
                builder = builder.header("content-type", content_type);
                Body::from(body)
            }
            None => Body::empty(),
        };
        send(&self.app, builder.body(body).unwrap()).await
    }

    async fn get_as(&self, path: &str, auth: Option<&str>) -> Reply {
        self.call(Method::GET, path, auth, None).await
    }

    /// A GET that must answer 200 with JSON; returns the JSON.
    async fn ok(&self, path: &str) -> Value {
        self.ok_as(path, None).await
    }

    async fn ok_as(&self, path: &str, auth: Option<&str>) -> Value {
        let reply = self.get_as(path, auth).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", String::from_utf8_lossy(&reply.body));
        assert_eq!(reply.headers.get("content-type").unwrap(), "application/json", "{path}");
        reply.json()
    }

    /// A GET that must answer 400 `INVALID_PARAMETERS`; returns the detail.
    async fn bad(&self, path: &str) -> String {
        let reply = self.get_as(path, None).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path}: {}", String::from_utf8_lossy(&reply.body));
        assert_eq!(reply.code(), "INVALID_PARAMETERS", "{path}");
        reply.json()["errors"][0]["detail"].as_str().unwrap().to_owned()
    }

    async fn post(&self, files: &[(&str, &[u8])], auth: Option<&str>) {
        let (content_type, body) = multipart(files);
        let reply = self.call(Method::POST, &format!("/v2/{GUN}/_trust/tuf/"), auth, Some((content_type, body))).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", String::from_utf8_lossy(&reply.body));
    }

    async fn timestamp_key(&self, auth: Option<&str>) -> PublicKey {
        let reply = self.get_as(&format!("/v2/{GUN}/_trust/tuf/timestamp.key"), auth).await;
        assert_eq!(reply.status, StatusCode::OK);
        PublicKey::from_json(&reply.json()).unwrap()
    }

    /// `repo`'s first root, signed, naming the server's timestamp key for the repository (which
    /// it asks for as `auth`); with that key.
    async fn first_root(&self, repo: &Repo, auth: Option<&str>) -> (Vec<u8>, PublicKey) {
        let timestamp = self.timestamp_key(auth).await;
        let mut body = repo.root_body(1);
        body["keys"][timestamp.key_id()] = timestamp.to_json();
        body["roles"]["timestamp"] = json!({"keyids": [timestamp.key_id()], "threshold": 1});
        (sign(&body, &[&repo.root_key]), timestamp)
    }

    /// The times of the log's entries, by position.
    /// The log's first entries, as `audit verify` reads them from the store.
    async fn stored_entries(&self) -> Vec<tufa_store::StoredEntry> {
        self.store.audit_entries(&tufa_store::AuditFilter { limit: 10, ..Default::default() }).await.unwrap()
    }

    async fn entry_times(&self) -> Vec<String> {
        let page = self.ok("/v1/audit?limit=1000").await;
        page["entries"].as_array().unwrap().iter().map(|entry| entry["time"].as_str().unwrap().to_owned()).collect()
    }
}

/// The published repository: its keys, the two delegate keys and the files.
struct Published {
    repo: Repo,
    timestamp: PublicKey,
    first: Key,
    second: Key,
    root: Vec<u8>,
}

fn delegations(keys: &[&Key]) -> Value {
    let mut sorted: Vec<&&Key> = keys.iter().collect();
    sorted.sort_by_key(|key| key.id());
    let map: serde_json::Map<String, Value> = sorted.iter().map(|key| (key.id(), key.public.to_json())).collect();
    let ids: Vec<String> = sorted.iter().map(|key| key.id()).collect();
    json!({"keys": map, "roles": [{"keyids": ids, "name": "targets/releases", "paths": ["release/"], "threshold": 1}]})
}

/// Publishes: (1) root, targets v2 listing `v1` and delegating `targets/releases` to `first`;
/// (2) `targets/releases` v1 listing `release/a`; (3) targets v3 changing `v1` and adding
/// `second` to the delegation. The log then holds: key.create, publish, publish, publish.
async fn publish_scenario(harness: &Harness, auth: Option<&str>) -> Published {
    let repo = Repo::new();
    let (first, second) = (Key::ecdsa(), Key::ecdsa());
    let (root, timestamp) = harness.first_root(&repo, auth).await;
    let targets = repo.targets(2, json!({"v1": target(b"hello")}), delegations(&[&first]));
    let snapshot = repo.snapshot(2, &[("root", &root), ("targets", &targets)]);
    harness.post(&[("root", &root), ("targets", &targets), ("snapshot", &snapshot)], auth).await;
    let releases = sign(
        &json!({"_type": "Targets", "delegations": no_delegations(), "expires": expires(30),
                "targets": {"release/a": target(b"a")}, "version": 1}),
        &[&first],
    );
    let snapshot = repo.snapshot(3, &[("root", &root), ("targets", &targets), ("targets/releases", &releases)]);
    harness.post(&[("targets/releases", &releases), ("snapshot", &snapshot)], auth).await;
    let targets = repo.targets(3, json!({"v1": target(b"hello again")}), delegations(&[&first, &second]));
    let snapshot = repo.snapshot(4, &[("root", &root), ("targets", &targets), ("targets/releases", &releases)]);
    harness.post(&[("targets", &targets), ("snapshot", &snapshot)], auth).await;
    Published { repo, timestamp, first, second, root }
}

fn key_json(key: &PublicKey, subject: Option<&str>) -> Value {
    json!({"keyid": key.key_id(), "canonical_id": key.canonical_id().unwrap(), "subject": subject})
}

fn sorted_keys(keys: &[&Key]) -> Vec<Value> {
    let mut keys: Vec<Value> = keys.iter().map(|key| key_json(&key.public, None)).collect();
    keys.sort_by(|a, b| a["keyid"].as_str().cmp(&b["keyid"].as_str()));
    keys
}

struct Expected<'a> {
    delegating: &'a str,
    role: &'a str,
    version: i64,
    paths: Value,
    keys: Vec<Value>,
    seq: usize,
    until: Option<usize>,
}

fn grant(expected: Expected<'_>, times: &[String]) -> Value {
    json!({
        "gun": GUN,
        "delegating_role": expected.delegating,
        "role": expected.role,
        "version": expected.version,
        "threshold": 1,
        "paths": expected.paths,
        "keys": expected.keys,
        "principal": null,
        "audit_seq": expected.seq,
        "since": times[expected.seq],
        "until": expected.until.map(|seq| times[seq].clone()),
        "until_seq": expected.until,
    })
}

fn root_grants(published: &Published, times: &[String], until: Option<usize>) -> Vec<Value> {
    let repo = &published.repo;
    let base = |role: &str, keys: Vec<Value>| {
        grant(Expected { delegating: "root", role, version: 1, paths: Value::Null, keys, seq: 1, until }, times)
    };
    vec![
        base("root", vec![key_json(&repo.root_key.public, Some(&format!("CN={GUN}")))]),
        base("snapshot", vec![key_json(&repo.snapshot.public, None)]),
        base("targets", vec![key_json(&repo.targets.public, None)]),
        base("timestamp", vec![key_json(&published.timestamp, None)]),
    ]
}

#[tokio::test]
async fn grants_changes_history_and_key_grants_are_exactly_what_was_published() {
    let harness = harness(false).await;
    let published = publish_scenario(&harness, None).await;
    let times = harness.entry_times().await;
    let kinds: Vec<Value> = harness.ok("/v1/audit").await["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["kind"].clone())
        .collect();
    assert_eq!(kinds, vec![json!("key.create"), json!("publish"), json!("publish"), json!("publish")]);
    let releases = |version: i64, keys: Vec<Value>, seq: usize, until: Option<usize>| {
        let paths = json!(["release/"]);
        grant(Expected { delegating: "targets", role: "targets/releases", version, paths, keys, seq, until }, &times)
    };
    let first_only = sorted_keys(&[&published.first]);
    let both = sorted_keys(&[&published.first, &published.second]);

    // Now: root's four grants from publish 1 and the delegation as changed by publish 3.
    let mut now = root_grants(&published, &times, None);
    now.push(releases(3, both.clone(), 3, None));
    let answer = harness.ok(&format!("/v1/repositories/{GUN}/grants")).await;
    assert_eq!(answer, json!({"gun": GUN, "at": null, "grants": now}));
    // At the time of publish 2: the delegation to the first key only.
    let at = &times[2];
    let mut then = root_grants(&published, &times, None);
    then.push(releases(2, first_only.clone(), 1, Some(3)));
    let answer = harness.ok(&format!("/v1/repositories/{GUN}/grants?at={at}")).await;
    assert_eq!(answer, json!({"gun": GUN, "at": at, "grants": then}));
    // Before anything was published: nothing.
    let answer = harness.ok(&format!("/v1/repositories/{GUN}/grants?at=2000-01-01T00:00:00Z")).await;
    assert_eq!(answer["grants"], json!([]));

    // Where the first delegate key is trusted: both versions of the delegation.
    let answer = harness.ok(&format!("/v1/keys/{}/grants", published.first.id())).await;
    assert_eq!(
        answer,
        json!({"key_id": published.first.id(), "grants": [releases(2, first_only.clone(), 1, Some(3)),
                                                          releases(3, both.clone(), 3, None)], "next": null})
    );
    // A root certificate is found by its canonical ID too.
    let canonical = published.repo.root_key.public.canonical_id().unwrap();
    let answer = harness.ok(&format!("/v1/keys/{canonical}/grants")).await;
    assert_eq!(answer["grants"], json!([root_grants(&published, &times, None)[0]]));
    assert_eq!(harness.ok(&format!("/v1/keys/{}/grants", "0".repeat(64))).await["grants"], json!([]));

    // Every version of the tags.
    let hex = |bytes: &[u8]| hex::encode(sha256(bytes));
    let answer = harness.ok(&format!("/v1/repositories/{GUN}/targets/v1/history")).await;
    let event = |change: &str, content: &[u8], version: i64, seq: usize| {
        json!({"gun": GUN, "name": "v1", "change": change, "sha256": hex(content), "length": content.len(),
               "role": "targets", "version": version, "signer_keys": [published.repo.targets.id()],
               "signer_canonical_ids": [published.repo.targets.id()], "principal": null, "audit_seq": seq, "time": times[seq]})
    };
    let (added, changed) = (event("added", b"hello", 2, 1), event("changed", b"hello again", 3, 3));
    assert_eq!(answer, json!({"gun": GUN, "name": "v1", "history": [added.clone(), changed.clone()], "next": null}));
    // The lists come in windows: `offset` skips, `limit` bounds, `next` is the following offset.
    let path = format!("/v1/repositories/{GUN}/targets/v1/history");
    let answer = harness.ok(&format!("{path}?limit=1")).await;
    assert_eq!((answer["history"].clone(), answer["next"].clone()), (json!([added]), json!(1)));
    let answer = harness.ok(&format!("{path}?limit=1&offset=1")).await;
    assert_eq!((answer["history"].clone(), answer["next"].clone()), (json!([changed]), json!(null)));
    let answer = harness.ok(&format!("{path}?offset=9223372036854775807")).await;
    assert_eq!((answer["history"].clone(), answer["next"].clone()), (json!([]), json!(null)));
    let answer = harness.ok(&format!("/v1/keys/{}/grants?offset=1&limit=1", published.first.id())).await;
    assert_eq!(
        (answer["grants"].clone(), answer["next"].clone()),
        (json!([releases(3, both.clone(), 3, None)]), json!(null))
    );
    let answer = harness.ok(&format!("/v1/repositories/{GUN}/targets/release%2Fa/history")).await;
    assert_eq!(
        answer,
        json!({"gun": GUN, "name": "release/a", "history": [{
            "gun": GUN, "name": "release/a", "change": "added", "sha256": hex(b"a"), "length": 1,
            "role": "targets/releases", "version": 1, "signer_keys": [published.first.id()],
            "signer_canonical_ids": [published.first.id()], "principal": null, "audit_seq": 2, "time": times[2]}], "next": null})
    );
    let answer = harness.ok(&format!("/v1/repositories/{GUN}/targets/nothing/history")).await;
    assert_eq!(answer, json!({"gun": GUN, "name": "nothing", "history": [], "next": null}));

    // Deleting the repository ends every grant; the changes name each step.
    let reply = harness.call(Method::DELETE, &format!("/v2/{GUN}/_trust/tuf/"), None, None).await;
    assert_eq!(reply.status, StatusCode::OK);
    let times = harness.entry_times().await;
    assert_eq!(times.len(), 5);
    assert_eq!(harness.ok(&format!("/v1/repositories/{GUN}/grants")).await["grants"], json!([]));
    // The deletion's entry names the five grants it ended; one revived behind the server's back
    // is reported at the deletion.
    let entries = harness.ok("/v1/audit").await["entries"].as_array().unwrap().clone();
    assert_eq!(
        (entries[4]["kind"].clone(), entries[4]["details"]["ended_grants"]["count"].clone()),
        (json!("delete"), json!(5))
    );
    let stored = harness.stored_entries().await;
    let history = harness.store.history_of_entries(0, 4).await.unwrap();
    let made = harness.store.grants_of_entries(0, 4).await.unwrap();
    let ended = harness.store.grants_ended_by_entries(0, 4).await.unwrap();
    assert_eq!(ended.iter().filter(|grant| grant.superseded_seq == Some(4)).count(), 5);
    assert_eq!(tufa_server::audit::check_history(&stored, &history, &made, &ended), vec![]);
    let revived: Vec<tufa_store::Grant> =
        ended.iter().filter(|grant| grant.grant.delegated_role != "snapshot").cloned().collect();
    let mut made_revived = made.clone();
    for grant in made_revived.iter_mut().filter(|grant| grant.grant.delegated_role == "snapshot") {
        (grant.superseded_at, grant.superseded_seq) = (None, None);
    }
    let problems = tufa_server::audit::check_history(&stored, &history, &made_revived, &revived);
    assert_eq!(problems.iter().map(|problem| problem.position).collect::<Vec<_>>(), vec![Some(4)]);
    let change = |change: &str, delegating: &str, role: &str, seq: usize, version: Option<i64>, body: &Value| {
        json!({"change": change, "time": times[seq], "principal": null, "audit_seq": seq,
               "delegating_role": delegating, "role": role, "version": version,
               "threshold": 1, "paths": body["paths"], "keys": body["keys"], "previous": null})
    };
    let releases = |version: i64, keys: Vec<Value>, seq: usize, until: Option<usize>| {
        let paths = json!(["release/"]);
        grant(Expected { delegating: "targets", role: "targets/releases", version, paths, keys, seq, until }, &times)
    };
    let roots = root_grants(&published, &times, Some(4));
    let first_grant = releases(2, sorted_keys(&[&published.first]), 1, Some(3));
    let second_grant = releases(3, sorted_keys(&[&published.first, &published.second]), 3, Some(4));
    let mut changed = change("changed", "targets", "targets/releases", 3, Some(3), &second_grant);
    changed["previous"] = json!({"version": 2, "threshold": 1, "paths": ["release/"], "keys": first_grant["keys"]});
    let mut expected = Vec::new();
    for (role, grant) in ["root", "snapshot", "targets", "timestamp"].iter().zip(&roots) {
        expected.push(change("added", "root", role, 1, Some(1), grant));
    }
    expected.push(change("added", "targets", "targets/releases", 1, Some(2), &first_grant));
    expected.push(changed);
    for (role, grant) in ["root", "snapshot", "targets", "timestamp"].iter().zip(&roots) {
        expected.push(change("removed", "root", role, 4, None, grant));
    }
    expected.push(change("removed", "targets", "targets/releases", 4, None, &second_grant));
    let answer = harness.ok(&format!("/v1/repositories/{GUN}/grants/changes")).await;
    assert_eq!(answer, json!({"gun": GUN, "changes": expected, "next": null}));
    let answer = harness.ok(&format!("/v1/repositories/{GUN}/grants/changes?offset=10&limit=1")).await;
    assert_eq!((answer["changes"].clone(), answer["next"].clone()), (json!([expected[10]]), json!(null)));
    let answer = harness.ok(&format!("/v1/repositories/{GUN}/grants/changes?offset=2&limit=3")).await;
    assert_eq!((answer["changes"].clone(), answer["next"].clone()), (json!(expected[2..5]), json!(5)));
    // The republished repository's grants are added again after the removal.
    let root = &published.root;
    let targets = published.repo.targets(4, json!({}), no_delegations());
    let snapshot = published.repo.snapshot(5, &[("root", root), ("targets", &targets)]);
    harness.post(&[("root", root), ("targets", &targets), ("snapshot", &snapshot)], None).await;
    let answer = harness.ok(&format!("/v1/repositories/{GUN}/grants/changes")).await;
    let added: Vec<(Value, Value, Value)> = answer["changes"].as_array().unwrap()[11..]
        .iter()
        .map(|change| (change["change"].clone(), change["role"].clone(), change["audit_seq"].clone()))
        .collect();
    assert_eq!(
        added,
        ["root", "snapshot", "targets", "timestamp"].map(|role| (json!("added"), json!(role), json!(5))).to_vec()
    );
}

/// The digest a publish entry records over its target changes, written out here from its
/// definition: each change's role, name, change, sha256 and length, each followed by a newline.
/// A history row as the test compares it: role, name, change, length, entry.
type Row = (String, String, String, Option<i64>, Option<i64>);

fn changes_digest(changes: &[(&str, String, &str, Vec<u8>)]) -> String {
    let mut text = String::new();
    for (role, name, change, content) in changes {
        for field in [
            role.to_string(),
            name.clone(),
            change.to_string(),
            hex::encode(sha256(content)),
            content.len().to_string(),
        ] {
            text.push_str(&field);
            text.push('\n');
        }
    }
    hex::encode(sha256(text.as_bytes()))
}

#[tokio::test]
async fn a_large_publish_records_counts_and_a_digest_and_writes_every_change() {
    let harness = harness(false).await;
    let repo = Repo::new();
    let (root, _) = harness.first_root(&repo, None).await;
    // 1,250 tags (more than one chunk of the store's inserts), then a version that changes one,
    // removes 150 and adds 60: 211 changes, beyond the 100 an entry lists.
    let name = |index: usize| format!("tag-{index:05}");
    let content = |index: usize, round: u8| format!("{index}-{round}").into_bytes();
    let first: serde_json::Map<String, Value> =
        (0..1250).map(|index| (name(index), target(&content(index, 0)))).collect();
    let targets = repo.targets(2, Value::Object(first), no_delegations());
    let snapshot = repo.snapshot(2, &[("root", &root), ("targets", &targets)]);
    harness.post(&[("root", &root), ("targets", &targets), ("snapshot", &snapshot)], None).await;
    let second: serde_json::Map<String, Value> =
        (150..1310).map(|index| (name(index), target(&content(index, u8::from(index == 700))))).collect();
    let targets = repo.targets(3, Value::Object(second), no_delegations());
    let snapshot = repo.snapshot(3, &[("root", &root), ("targets", &targets)]);
    harness.post(&[("targets", &targets), ("snapshot", &snapshot)], None).await;

    let mut added: Vec<(&str, String, &str, Vec<u8>)> =
        (0..1250).map(|index| ("targets", name(index), "added", content(index, 0))).collect();
    let mut changes: Vec<(&str, String, &str, Vec<u8>)> =
        (0..150).map(|index| ("targets", name(index), "removed", content(index, 0))).collect();
    changes.push(("targets", name(700), "changed", content(700, 1)));
    changes.extend((1250..1310).map(|index| ("targets", name(index), "added", content(index, 0))));
    let entries = harness.ok("/v1/audit").await["entries"].as_array().unwrap().clone();
    assert_eq!(entries.len(), 3, "key.create and two publishes");
    assert_eq!(
        entries[1]["details"]["targets"],
        json!({"count": 1250, "added": 1250, "changed": 0, "removed": 0, "sha256": changes_digest(&added)})
    );
    assert_eq!(
        entries[2]["details"]["targets"],
        json!({"count": 211, "added": 60, "changed": 1, "removed": 150, "sha256": changes_digest(&changes)})
    );
    // Every change is in the history, in the order of the digest, each under its entry.
    let rows = |events: &[tufa_store::TargetEvent]| -> Vec<Row> {
        events
            .iter()
            .map(|event| {
                let e = &event.event;
                (e.role.clone(), e.name.clone(), e.change.clone(), e.length, event.audit_seq)
            })
            .collect()
    };
    let expected = |changes: &[(&str, String, &str, Vec<u8>)], seq: i64| -> Vec<Row> {
        changes
            .iter()
            .map(|(role, name, change, content)| {
                (
                    role.to_string(),
                    name.clone(),
                    change.to_string(),
                    Some(i64::try_from(content.len()).unwrap()),
                    Some(seq),
                )
            })
            .collect()
    };
    let history = harness.store.history_of_entries(1, 2).await.unwrap();
    added.extend(changes.iter().cloned());
    let mut want = expected(&added[..1250], 1);
    want.extend(expected(&changes, 2));
    assert_eq!(rows(&history), want);
    let tag = harness.ok(&format!("/v1/repositories/{GUN}/targets/{}/history", name(700))).await;
    let digests: Vec<Value> = tag["history"].as_array().unwrap().iter().map(|event| event["sha256"].clone()).collect();
    assert_eq!(
        digests,
        vec![json!(hex::encode(sha256(&content(700, 0)))), json!(hex::encode(sha256(&content(700, 1))))]
    );
    // What `audit verify` checks: the rows match what the entries recorded.
    let stored = harness.stored_entries().await;
    let grants = harness.store.grants_of_entries(0, 2).await.unwrap();
    let ended = harness.store.grants_ended_by_entries(0, 2).await.unwrap();
    assert_eq!(tufa_server::audit::check_history(&stored, &history, &grants, &ended), vec![]);
}

#[tokio::test]
async fn an_entry_lists_up_to_100_changes_and_counts_more_across_its_files() {
    let harness = harness(false).await;
    let repo = Repo::new();
    let first = Key::ecdsa();
    let (root, _) = harness.first_root(&repo, None).await;
    let tags = |prefix: &str, count: usize| -> Value {
        Value::Object((0..count).map(|index| (format!("{prefix}{index:03}"), target(prefix.as_bytes()))).collect())
    };
    // Exactly 100 changes: the entry lists them.
    let targets = repo.targets(2, tags("t", 100), delegations(&[&first]));
    let snapshot = repo.snapshot(2, &[("root", &root), ("targets", &targets)]);
    harness.post(&[("root", &root), ("targets", &targets), ("snapshot", &snapshot)], None).await;
    // 101 changes over two files, more than the first file's 60: counted over both.
    let targets = repo.targets(3, tags("t", 160), delegations(&[&first]));
    let releases = sign(
        &json!({"_type": "Targets", "delegations": no_delegations(), "expires": expires(30),
                "targets": tags("release/", 41), "version": 1}),
        &[&first],
    );
    let snapshot = repo.snapshot(3, &[("root", &root), ("targets", &targets), ("targets/releases", &releases)]);
    harness.post(&[("targets", &targets), ("targets/releases", &releases), ("snapshot", &snapshot)], None).await;

    let entries = harness.ok("/v1/audit").await["entries"].as_array().unwrap().clone();
    let listed = entries[1]["details"]["targets"].as_array().expect("100 changes are listed").clone();
    assert_eq!(listed.len(), 100);
    assert_eq!((listed[0]["name"].clone(), listed[99]["change"].clone()), (json!("t000"), json!("added")));
    let mut changes: Vec<(&str, String, &str, Vec<u8>)> =
        (100..160).map(|index| ("targets", format!("t{index:03}"), "added", b"t".to_vec())).collect();
    changes.extend(
        (0..41).map(|index| ("targets/releases", format!("release/{index:03}"), "added", b"release/".to_vec())),
    );
    assert_eq!(
        entries[2]["details"]["targets"],
        json!({"count": 101, "added": 101, "changed": 0, "removed": 0, "sha256": changes_digest(&changes)})
    );
    let history = harness.store.history_of_entries(1, 2).await.unwrap();
    assert_eq!(history.len(), 201);
    assert!(history[100..].iter().all(|event| event.audit_seq == Some(2)), "the streamed rows are the entry's");
    let stored = harness.stored_entries().await;
    let grants = harness.store.grants_of_entries(0, 2).await.unwrap();
    let ended = harness.store.grants_ended_by_entries(0, 2).await.unwrap();
    assert_eq!(tufa_server::audit::check_history(&stored, &history, &grants, &ended), vec![]);
}

#[tokio::test]
async fn a_file_of_many_delegations_records_every_grant_with_its_paths() {
    let harness = harness(false).await;
    let repo = Repo::new();
    let (root, _) = harness.first_root(&repo, None).await;
    // 70 delegations: more than the store writes with the entry, so their paths are read from
    // the file as each grant is written.
    let delegate = Key::ecdsa();
    let name = |index: usize| format!("targets/r{index:02}");
    let paths = |index: usize| json!([format!("r{index}/"), format!("shared/{index}\"q")]);
    let roles: Vec<Value> = (0..70)
        .map(|index| json!({"keyids": [delegate.id()], "name": name(index), "paths": paths(index), "threshold": 1}))
        .collect();
    // Targets version `version` delegating `roles` to the delegate, with its snapshot (and the root
    // on the first publish).
    let publish = |version: i64, roles: &[Value]| {
        let delegations = json!({"keys": {delegate.id(): delegate.public.to_json()}, "roles": roles});
        let targets = repo.targets(version, json!({}), delegations);
        let snapshot = repo.snapshot(version, &[("root", &root), ("targets", &targets)]);
        (targets, snapshot)
    };
    let (targets, snapshot) = publish(2, &roles);
    harness.post(&[("root", &root), ("targets", &targets), ("snapshot", &snapshot)], None).await;

    let answer = harness.ok(&format!("/v1/repositories/{GUN}/grants")).await;
    let grants = answer["grants"].as_array().unwrap();
    assert_eq!(grants.len(), 74, "four base roles and 70 delegations");
    let delegated: Vec<(Value, Value, Value)> = grants
        .iter()
        .filter(|grant| grant["delegating_role"] == json!("targets"))
        .map(|grant| (grant["role"].clone(), grant["paths"].clone(), grant["keys"][0]["keyid"].clone()))
        .collect();
    let expected: Vec<(Value, Value, Value)> =
        (0..70).map(|index| (json!(name(index)), paths(index), json!(delegate.id()))).collect();
    assert_eq!(delegated, expected);
    let entries = harness.ok("/v1/audit").await["entries"].as_array().unwrap().clone();
    assert_eq!(entries[1]["details"]["grants"]["count"], json!(74));
    // What `audit verify` checks: the grant rows match the digest the entry recorded.
    let stored = harness.stored_entries().await;
    let rows = harness.store.grants_of_entries(0, 1).await.unwrap();
    assert_eq!(rows.len(), 74);
    assert_eq!(tufa_server::audit::check_history(&stored, &[], &rows, &[]), vec![]);
    assert_eq!(
        entries[1]["details"]["grants"]["sha256"],
        json!(tufa_server::audit::grants_digest(&rows.iter().map(|row| row.grant.clone()).collect::<Vec<_>>()))
    );

    // Version 3 removes r00, changes r01's paths, adds r70 and leaves the other 68 as they were:
    // only the changes are recorded, the unchanged grants stay in force from version 2.
    let mut roles = roles;
    roles.remove(0);
    roles[0]["paths"] = json!(["r1/only/"]);
    roles.push(json!({"keyids": [delegate.id()], "name": name(70), "paths": paths(70), "threshold": 1}));
    let (targets, snapshot) = publish(3, &roles);
    harness.post(&[("targets", &targets), ("snapshot", &snapshot)], None).await;
    let entries = harness.ok("/v1/audit").await["entries"].as_array().unwrap().clone();
    assert_eq!(entries[2]["details"]["grants"]["count"], json!(2), "r01 changed and r70 added");
    let answer = harness.ok(&format!("/v1/repositories/{GUN}/grants")).await;
    let versions: Vec<(Value, Value)> = answer["grants"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|grant| grant["delegating_role"] == json!("targets"))
        .map(|grant| (grant["role"].clone(), grant["version"].clone()))
        .collect();
    let expected: Vec<(Value, Value)> =
        (1..=70).map(|index| (json!(name(index)), json!(if index == 1 || index == 70 { 3 } else { 2 }))).collect();
    assert_eq!(versions, expected);

    // Version 4 only removes r70: the removal is attributed to that publish and its version.
    roles.pop();
    let (targets, snapshot) = publish(4, &roles);
    harness.post(&[("targets", &targets), ("snapshot", &snapshot)], None).await;
    let changes = harness.ok(&format!("/v1/repositories/{GUN}/grants/changes?offset=74")).await;
    let summary: Vec<(Value, Value, Value, Value)> = changes["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|change| {
            (change["change"].clone(), change["role"].clone(), change["version"].clone(), change["audit_seq"].clone())
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (json!("removed"), json!(name(0)), json!(3), json!(2)),
            (json!("changed"), json!(name(1)), json!(3), json!(2)),
            (json!("added"), json!(name(70)), json!(3), json!(2)),
            (json!("removed"), json!(name(70)), json!(4), json!(3)),
        ]
    );
    let entries = harness.ok("/v1/audit").await["entries"].as_array().unwrap().clone();
    assert_eq!(entries[3]["details"]["grants"]["count"], json!(0));
    // The record still checks: each entry's grant rows match its digest.
    let stored = harness.stored_entries().await;
    let rows = harness.store.grants_of_entries(0, 3).await.unwrap();
    assert_eq!(rows.len(), 76);
    let ended = harness.store.grants_ended_by_entries(0, 3).await.unwrap();
    let ended_by: Vec<(Option<i64>, String)> =
        ended.iter().map(|grant| (grant.superseded_seq, grant.grant.delegated_role.clone())).collect();
    assert_eq!(ended_by, vec![(Some(2), name(0)), (Some(2), name(1)), (Some(3), name(70))]);
    assert_eq!(entries[2]["details"]["ended_grants"]["count"], json!(2));
    assert_eq!(tufa_server::audit::check_history(&stored, &[], &rows, &ended), vec![]);

    // What `audit verify` reports when grant ends are edited behind the server's back, each at the
    // entry concerned.
    let positions = |problems: Vec<tufa_audit::Problem>| -> Vec<Option<u64>> {
        problems.into_iter().map(|problem| problem.position).collect()
    };
    // A removed delegate revived: r00 no longer ended by entry 2.
    let revived: Vec<tufa_store::Grant> = ended.iter().skip(1).cloned().collect();
    let mut rows_revived = rows.clone();
    for grant in rows_revived.iter_mut().filter(|grant| grant.grant.delegated_role == name(0)) {
        (grant.superseded_at, grant.superseded_seq) = (None, None);
    }
    assert_eq!(positions(tufa_server::audit::check_history(&stored, &[], &rows_revived, &revived)), vec![Some(2)]);
    // A delegate in force removed by a publish that did not remove it.
    let mut faked = ended.clone();
    let mut victim = rows
        .iter()
        .find(|grant| grant.grant.delegated_role == name(5) && grant.superseded_seq.is_none())
        .unwrap()
        .clone();
    victim.superseded_seq = Some(3);
    victim.superseded_at = faked[2].superseded_at;
    faked.push(victim.clone());
    let mut rows_faked = rows.clone();
    for grant in rows_faked.iter_mut().filter(|grant| grant.id == victim.id) {
        *grant = victim.clone();
    }
    assert_eq!(positions(tufa_server::audit::check_history(&stored, &[], &rows_faked, &faked)), vec![Some(3)]);
    // An end time without the entry that ended it: reported at the entry that made the grant.
    let mut rows_timed = rows.clone();
    for grant in rows_timed.iter_mut().filter(|grant| grant.grant.delegated_role == name(7)) {
        grant.superseded_at = victim.superseded_at;
    }
    assert_eq!(positions(tufa_server::audit::check_history(&stored, &[], &rows_timed, &ended)), vec![Some(1)]);
}

#[tokio::test]
async fn the_log_pages_with_a_cursor_and_filters() {
    let harness = harness(false).await;
    let records: Vec<Record> = (0..5)
        .map(|index| {
            let gun = if index % 2 == 0 { "a.example/one" } else { "b.example/two" };
            let mut record = Record::new(NewEntry::new("publish", json!({"n": index})).gun(gun));
            record.entry = record.entry.by(Some(if index < 3 { "alice" } else { "bob" }));
            record.keys = vec![format!("key{index}")];
            record
        })
        .collect();
    harness.store.append_audit_batch(records).await.unwrap();
    let seqs = |page: &Value| -> Vec<u64> {
        page["entries"].as_array().unwrap().iter().map(|entry| entry["seq"].as_u64().unwrap()).collect()
    };
    let page = harness.ok("/v1/audit?limit=2").await;
    assert_eq!((seqs(&page), page["next"].clone()), (vec![0, 1], json!(1)));
    let page = harness.ok("/v1/audit?limit=2&after=1").await;
    assert_eq!((seqs(&page), page["next"].clone()), (vec![2, 3], json!(3)));
    let page = harness.ok("/v1/audit?limit=2&after=3").await;
    assert_eq!((seqs(&page), page["next"].clone()), (vec![4], json!(null)));
    let page = harness.ok("/v1/audit").await;
    assert_eq!((seqs(&page), page["next"].clone()), (vec![0, 1, 2, 3, 4], json!(null)));
    assert_eq!(seqs(&harness.ok("/v1/audit?gun=a.example%2Fone").await), vec![0, 2, 4]);
    assert_eq!(seqs(&harness.ok("/v1/audit?gun=b.example/two&principal=bob").await), vec![3]);
    assert_eq!(seqs(&harness.ok("/v1/audit?key=key2").await), vec![2]);
    assert_eq!(seqs(&harness.ok("/v1/audit?after=9223372036854775807").await), Vec::<u64>::new());
    assert_eq!(
        seqs(&harness.ok("/v1/audit?since=2000-01-01T00:00:00%2B01:00&until=2000-01-02T00:00:00Z").await),
        Vec::<u64>::new()
    );
    assert_eq!(seqs(&harness.ok("/v1/audit?since=2000-01-01T00:00:00Z").await), vec![0, 1, 2, 3, 4]);
    let entry = harness.ok("/v1/audit/entries/3").await;
    assert_eq!(
        (entry["seq"].clone(), entry["gun"].clone(), entry["principal"].clone(), entry["details"].clone()),
        (json!(3), json!("b.example/two"), json!("bob"), json!({"n": 3}))
    );
    let stored = harness.stored_entries().await;
    assert_eq!(entry["leaf_hash"], json!(tufa_audit::entry::hash_hex(&stored[3].entry.leaf_hash())));

    // Bad parameters: 400 with a message naming the problem.
    for (query, detail) in [
        ("limit=0", "invalid limit: \"0\" is not an integer from 1 to 1000"),
        ("limit=1001", "invalid limit: \"1001\" is not an integer from 1 to 1000"),
        ("limit=ten", "invalid limit: \"ten\" is not an integer from 1 to 1000"),
        ("after=-1", "invalid after: \"-1\" is not an integer from 0 to 9223372036854775807"),
        (
            "after=9223372036854775808",
            "invalid after: \"9223372036854775808\" is not an integer from 0 to 9223372036854775807",
        ),
        ("since=yesterday", "invalid since: \"yesterday\" is not an RFC 3339 time such as 2026-01-02T03:04:05Z"),
        (
            "until=2026-13-01T00:00:00Z",
            "invalid until: \"2026-13-01T00:00:00Z\" is not an RFC 3339 time such as 2026-01-02T03:04:05Z",
        ),
        (
            "colour=red",
            "unknown parameter \"colour\"; this endpoint accepts: gun, principal, key, since, until, after, limit",
        ),
        ("gun=a&gun=b", "parameter gun is given more than once"),
        ("gun=%ZZ", "malformed percent-encoding in \"gun=%ZZ\""),
    ] {
        assert_eq!(harness.bad(&format!("/v1/audit?{query}")).await, detail, "{query}");
    }
    let long = "9".repeat(100);
    assert_eq!(
        harness.bad(&format!("/v1/audit?after={long}")).await,
        format!("invalid after: {:?}... is not an integer from 0 to 9223372036854775807", "9".repeat(64))
    );
    assert_eq!(
        harness.bad("/v1/audit/entries/x").await,
        "invalid entry position: \"x\" is not an integer from 0 to 9223372036854775807"
    );
    assert_eq!(harness.bad("/v1/audit/entries/0?x=1").await, "unknown parameter \"x\"; this endpoint accepts: none");
    let reply = harness.get_as("/v1/audit/entries/5", None).await;
    assert_eq!((reply.status, reply.code()), (StatusCode::NOT_FOUND, "METADATA_NOT_FOUND".to_owned()));
    assert_eq!(
        harness.bad(&format!("/v1/repositories/{GUN}/grants?at=now")).await,
        "invalid at: \"now\" is not an RFC 3339 time such as 2026-01-02T03:04:05Z"
    );
    assert_eq!(
        harness.bad("/v1/keys/not-hex/grants").await,
        "invalid key ID \"not-hex\": expected 1 to 128 hexadecimal digits"
    );
    assert_eq!(harness.bad(&format!("/v1/repositories/{GUN}/targets//history")).await, "the target name is empty");
    for (path, detail) in [
        ("targets/v1/history?offset=-1", "invalid offset: \"-1\" is not an integer from 0 to 9223372036854775807"),
        ("targets/v1/history?limit=0", "invalid limit: \"0\" is not an integer from 1 to 1000"),
        ("grants/changes?limit=1001", "invalid limit: \"1001\" is not an integer from 1 to 1000"),
        ("grants/changes?at=2026-01-01T00:00:00Z", "unknown parameter \"at\"; this endpoint accepts: offset, limit"),
        ("grants?offset=1", "unknown parameter \"offset\"; this endpoint accepts: at"),
    ] {
        assert_eq!(harness.bad(&format!("/v1/repositories/{GUN}/{path}")).await, detail, "{path}");
    }
    assert_eq!(
        harness.bad("/v1/keys/ab/grants?offset=x").await,
        "invalid offset: \"x\" is not an integer from 0 to 9223372036854775807"
    );
    let reply = harness.get_as("/v1/repositories/../x/grants", None).await;
    assert_eq!((reply.status, reply.code()), (StatusCode::BAD_REQUEST, "INVALID_GUN".to_owned()));
}

fn hashes(value: &Value) -> Vec<tufa_audit::Hash> {
    value.as_array().unwrap().iter().map(|hash| parse_hash_hex(hash.as_str().unwrap()).unwrap()).collect()
}

#[tokio::test]
async fn proofs_check_against_signed_checkpoints() {
    let harness = harness(false).await;
    let reply = harness.get_as("/v1/audit/checkpoint", None).await;
    assert_eq!((reply.status, reply.code()), (StatusCode::NOT_FOUND, "METADATA_NOT_FOUND".to_owned()));
    publish_scenario(&harness, None).await;
    // The checkpoint key's creation (entry 4) is covered by the first checkpoint.
    assert_eq!(harness.checkpointer.checkpoint().await.unwrap(), Some(5));
    let first = harness.ok("/v1/audit/checkpoint").await;
    let key = CheckpointKey::from_vkey(first["vkey"].as_str().unwrap()).unwrap();
    let head = tufa_audit::checkpoint::open(first["note"].as_str().unwrap(), &key).unwrap();
    assert_eq!(first["size"], json!(5));
    assert_eq!((head.size, tufa_audit::entry::hash_hex(&head.root)), (5, first["root"].as_str().unwrap().to_owned()));
    assert_eq!(
        (first["origin"].as_str().unwrap(), first["time"].clone()),
        (key.name(), json!(tufa_audit::entry::format_time(head.time)))
    );

    // Every entry's inclusion in the checkpoint's tree.
    for index in 0..5 {
        let entry = harness.ok(&format!("/v1/audit/entries/{index}")).await;
        let leaf = parse_hash_hex(entry["leaf_hash"].as_str().unwrap()).unwrap();
        let proof = harness.ok(&format!("/v1/audit/proof/inclusion?index={index}&size=5")).await;
        assert_eq!(proof["leaf_hash"], entry["leaf_hash"]);
        assert_eq!(proof["root"], first["root"]);
        tree::check_inclusion(&hashes(&proof["proof"]), index, 5, leaf, head.root).unwrap();
        // The proof does not show another leaf.
        let other = parse_hash_hex(&"00".repeat(32)).unwrap();
        assert_eq!(
            tree::check_inclusion(&hashes(&proof["proof"]), index, 5, other, head.root),
            Err(tree::TreeError::InvalidProof)
        );
    }

    // The log grows; the new checkpoint's tree extends the old one.
    harness.store.append_audit(Record::new(NewEntry::new("principal.add", json!({"name": "x"})))).await.unwrap();
    let reply = harness.call(Method::DELETE, &format!("/v2/{GUN}/_trust/tuf/"), None, None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(harness.checkpointer.checkpoint().await.unwrap(), Some(7));
    let second = harness.ok("/v1/audit/checkpoint").await;
    let second_head = tufa_audit::checkpoint::open(second["note"].as_str().unwrap(), &key).unwrap();
    assert_eq!(second_head.size, 7);
    let proof = harness.ok("/v1/audit/proof/consistency?old=5&new=7").await;
    assert_eq!((proof["old_root"].clone(), proof["new_root"].clone()), (first["root"].clone(), second["root"].clone()));
    tree::check_consistency(&hashes(&proof["proof"]), 5, head.root, 7, second_head.root).unwrap();
    let proof = harness.ok("/v1/audit/proof/consistency?old=7&new=7").await;
    assert_eq!(proof["proof"], json!([]));
    let proof = harness.ok("/v1/audit/proof/inclusion?index=6&size=7").await;
    let leaf = parse_hash_hex(harness.ok("/v1/audit/entries/6").await["leaf_hash"].as_str().unwrap()).unwrap();
    tree::check_inclusion(&hashes(&proof["proof"]), 6, 7, leaf, second_head.root).unwrap();

    for (query, detail) in [
        ("inclusion?index=7&size=7", "index 7 must be below size 7"),
        ("inclusion?index=0&size=8", "size 8 exceeds the log's 7 entries"),
        ("inclusion?index=0&size=0", "index 0 must be below size 0"),
        ("inclusion?size=3", "parameter index is required"),
        ("inclusion?index=1", "parameter size is required"),
        (
            "inclusion?index=1&size=18446744073709551616",
            "invalid size: \"18446744073709551616\" is not an integer from 0 to 9223372036854775807",
        ),
        ("inclusion?index=1&size=3&old=2", "unknown parameter \"old\"; this endpoint accepts: index, size"),
        ("consistency?old=0&new=3", "need 1 <= old <= new; got old 0, new 3"),
        ("consistency?old=4&new=3", "need 1 <= old <= new; got old 4, new 3"),
        ("consistency?old=1&new=9223372036854775807", "new 9223372036854775807 exceeds the log's 7 entries"),
        ("consistency?old=x&new=3", "invalid old: \"x\" is not an integer from 0 to 9223372036854775807"),
        ("consistency?new=3", "parameter old is required"),
    ] {
        assert_eq!(harness.bad(&format!("/v1/audit/proof/{query}")).await, detail, "{query}");
    }
}

async fn add_user(store: &dyn Store, name: &str) -> String {
    let principal =
        Principal { name: name.into(), kind: PrincipalKind::User, password_hash: None, created_at: chrono::Utc::now() };
    store.add_principal(&principal, &test_change()).await.unwrap();
    let (id, text, secret_hash) = tufa_auth::ApiTokenSecret::generate().unwrap();
    let token = ApiToken {
        id,
        principal: name.into(),
        secret_hash,
        created_at: chrono::Utc::now(),
        expires_at: None,
        revoked_at: None,
    };
    store.insert_api_token(&token, &test_change()).await.unwrap();
    format!("Bearer {}", text.as_str())
}

#[tokio::test]
async fn callers_see_only_what_they_may_read() {
    let harness = harness(true).await;
    let store = harness.store.as_ref();
    let alice = add_user(store, "alice").await;
    assert!(store.add_binding("alice", "publisher", "example.com/*", &test_change()).await.unwrap());
    let bob = add_user(store, "bob").await;
    assert!(store.add_binding("bob", "reader", "other.example/*", &test_change()).await.unwrap());
    let root = add_user(store, "root").await;
    assert!(store.add_binding("root", "admin", "*", &test_change()).await.unwrap());
    let nobody = add_user(store, "nobody").await;
    // The account set-up above is recorded too (entries about no repository, for admins only).
    let base = store.audit_size().await.unwrap();
    let published = publish_scenario(&harness, Some(&alice)).await;
    // An account change: an entry about no repository.
    store
        .append_audit(Record::new(NewEntry::new("principal.add", json!({"name": "carol"})).by(Some("root"))))
        .await
        .unwrap();
    other_entry(store).await;
    harness.checkpointer.checkpoint().await.unwrap();
    let seqs = |page: &Value| -> Vec<u64> {
        page["entries"].as_array().unwrap().iter().map(|entry| entry["seq"].as_u64().unwrap()).collect()
    };
    let range = |from: u64, to: u64| (base + from..=base + to).collect::<Vec<u64>>();
    // The checkpoint key's creation is recorded as the last entry (about no published repository).
    assert_eq!(seqs(&harness.ok_as("/v1/audit?limit=1000", Some(&root)).await), (0..=base + 6).collect::<Vec<u64>>());
    assert_eq!(seqs(&harness.ok_as("/v1/audit", Some(&alice)).await), range(0, 3));
    assert_eq!(seqs(&harness.ok_as("/v1/audit", Some(&bob)).await), vec![base + 5]);
    assert_eq!(seqs(&harness.ok_as("/v1/audit", Some(&nobody)).await), Vec::<u64>::new());
    // Hidden entries still move the cursor, so paging ends.
    let page = harness.ok_as(&format!("/v1/audit?limit=3&after={}", base - 1), Some(&bob)).await;
    assert_eq!((seqs(&page), page["next"].clone()), (vec![], json!(base + 2)));
    let page = harness.ok_as(&format!("/v1/audit?limit=3&after={}", base + 2), Some(&bob)).await;
    assert_eq!((seqs(&page), page["next"].clone()), (vec![base + 5], json!(base + 5)));
    let page = harness.ok_as(&format!("/v1/audit?limit=3&after={}", base + 5), Some(&bob)).await;
    assert_eq!((seqs(&page), page["next"].clone()), (vec![], json!(null)));

    // A repository's grants and history need pull on it: the same 401 as its metadata.
    for path in [
        format!("/v1/repositories/{GUN}/grants"),
        format!("/v1/repositories/{GUN}/grants/changes"),
        format!("/v1/repositories/{GUN}/targets/v1/history"),
    ] {
        let reply = harness.get_as(&path, Some(&bob)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(
            reply.challenge(),
            format!(
                "Bearer realm=\"https://tufa.test/auth/token\",service=\"tufa\",scope=\"repository:{GUN}:pull\",\
                 error=\"insufficient_scope\""
            )
        );
        harness.ok_as(&path, Some(&alice)).await;
    }
    // Key grants are filtered to readable repositories.
    let path = format!("/v1/keys/{}/grants", published.first.id());
    assert_eq!(harness.ok_as(&path, Some(&alice)).await["grants"].as_array().unwrap().len(), 2);
    assert_eq!(harness.ok_as(&path, Some(&bob)).await["grants"], json!([]));
    // A single entry: refused when hidden.
    let reply = harness.get_as("/v1/audit/entries/1", Some(&bob)).await;
    assert_eq!((reply.status, reply.code()), (StatusCode::FORBIDDEN, "DENIED".to_owned()));
    let reply = harness.get_as("/v1/audit/entries/4", Some(&alice)).await;
    assert_eq!((reply.status, reply.code()), (StatusCode::FORBIDDEN, "DENIED".to_owned()));
    assert_eq!(harness.ok_as("/v1/audit/entries/4", Some(&root)).await["kind"], json!("principal.add"));
    // Checkpoints and proofs: anyone who may read something; not a caller without any role.
    harness.ok_as("/v1/audit/checkpoint", Some(&bob)).await;
    harness.ok_as("/v1/audit/proof/inclusion?index=0&size=6", Some(&bob)).await;
    for path in ["/v1/audit/checkpoint", "/v1/audit/proof/inclusion?index=0&size=6", "/v1/audit/entries/5"] {
        let reply = harness.get_as(path, Some(&nobody)).await;
        assert_eq!((reply.status, reply.code()), (StatusCode::FORBIDDEN, "DENIED".to_owned()), "{path}");
    }
    // Without credentials: the catalog's challenge, as for the global changefeed.
    let reply = harness.get_as("/v1/audit", None).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        reply.challenge(),
        "Bearer realm=\"https://tufa.test/auth/token\",service=\"tufa\",scope=\"registry:catalog:*\""
    );
}

/// An entry about a repository only bob may read.
async fn other_entry(store: &dyn Store) {
    store.append_audit(Record::new(NewEntry::new("delete", json!({})).gun("other.example/app"))).await.unwrap();
}

/// An audit record for changes a test writes straight into the store.
fn test_change() -> tufa_store::Record {
    tufa_store::Record::new(tufa_audit::NewEntry::new("principal.add", serde_json::json!({"test": true})))
}

/// `POST /v1/verify` with `body` as `auth`.
async fn verify_as(harness: &Harness, body: &str, auth: Option<&str>) -> Reply {
    harness.call(Method::POST, "/v1/verify", auth, Some(("application/json".into(), body.as_bytes().to_vec()))).await
}

#[tokio::test]
async fn verify_answers_from_the_servers_own_store() {
    let harness = harness(false).await;
    let published = publish_scenario(&harness, None).await;
    let digest = format!("sha256:{}", hex::encode(sha256(b"hello again")));
    let reply = verify_as(&harness, &json!({"image": format!("{GUN}:v1")}).to_string(), None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", String::from_utf8_lossy(&reply.body));
    let answer = reply.json();
    assert_eq!(
        (
            &answer["image"],
            &answer["trusted"],
            &answer["allowed"],
            &answer["digest"],
            &answer["roles"],
            &answer["keys"]
        ),
        (
            &json!(format!("{GUN}:v1")),
            &json!(true),
            &json!(true),
            &json!(digest),
            &json!(["targets"]),
            &json!([published.repo.targets.id()])
        )
    );
    // By digest too; a digest that is not the signed one, and a tag that is not signed, are denied.
    let by_digest = verify_as(&harness, &json!({"image": format!("{GUN}@{digest}")}).to_string(), None).await.json();
    assert_eq!((&by_digest["trusted"], &by_digest["digest"]), (&json!(true), &json!(digest)));
    let other = format!("sha256:{}", "0".repeat(64));
    let wrong = verify_as(&harness, &json!({"image": format!("{GUN}:v1@{other}")}).to_string(), None).await.json();
    assert_eq!((&wrong["trusted"], &wrong["allowed"]), (&json!(false), &json!(false)), "{wrong}");
    let unsigned = verify_as(&harness, &json!({"image": format!("{GUN}:v9")}).to_string(), None).await.json();
    assert_eq!((&unsigned["trusted"], &unsigned["allowed"]), (&json!(false), &json!(false)), "{unsigned}");
    assert!(unsigned["reason"].as_str().unwrap().contains("v9"), "{unsigned}");
    // A repository this server does not hold is not trusted.
    let absent = verify_as(&harness, &json!({"image": "example.com/absent:v1"}).to_string(), None).await.json();
    assert_eq!((&absent["trusted"], &absent["allowed"]), (&json!(false), &json!(false)), "{absent}");
    // Malformed requests: 400 with the reason, never a 500.
    for (body, expected) in [
        ("not json", "the body must be {\"image\": \"<reference>\"}"),
        ("{\"image\": \"Upper/Case\"}", "image \"Upper/Case\""),
        ("{\"image\": \"a\", \"extra\": 1}", "the body must be {\"image\": \"<reference>\"}"),
    ] {
        let reply = verify_as(&harness, body, None).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(reply.json()["error"].as_str().unwrap().starts_with(expected), "{body}: {}", reply.json());
    }
    let big = json!({"image": "a".repeat(20_000)}).to_string();
    assert_eq!(verify_as(&harness, &big, None).await.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn verify_needs_pull_on_the_repository() {
    let harness = harness(true).await;
    let store = harness.store.as_ref();
    let alice = add_user(store, "alice").await;
    assert!(store.add_binding("alice", "publisher", "example.com/*", &test_change()).await.unwrap());
    let bob = add_user(store, "bob").await;
    assert!(store.add_binding("bob", "reader", "other.example/*", &test_change()).await.unwrap());
    publish_scenario(&harness, Some(&alice)).await;
    let body = json!({"image": format!("{GUN}:v1")}).to_string();
    let reply = verify_as(&harness, &body, None).await;
    assert_eq!((reply.status, reply.code()), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED".to_owned()));
    let reply = verify_as(&harness, &body, Some(&bob)).await;
    assert_eq!((reply.status, reply.code()), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED".to_owned()));
    let reply = verify_as(&harness, &body, Some(&alice)).await;
    assert_eq!((reply.status, reply.json()["trusted"].clone()), (StatusCode::OK, json!(true)));
}
