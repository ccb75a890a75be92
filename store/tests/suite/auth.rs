//! Conformance checks for the auth tables: principals, API tokens, role bindings, tombstones
//! and token-signing keys.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use tufa_store::{
    ApiToken, Principal, PrincipalKind, RoleBinding, Store, StoreError, StoredKey, TokenKey, TokenKeyKind, Tombstone,
};

use crate::support::{Repo, change, deletion, file, now, update};

const GUN: &str = "example.com/app";
const OTHER_GUN: &str = "example.com/other";

/// A fixed time `seconds` after a base, with microseconds, so that round trips compare exactly.
fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(1_790_000_000_123_456 + seconds * 1_000_000).expect("time")
}

fn user(name: &str, hash: Option<&str>) -> Principal {
    Principal { name: name.into(), kind: PrincipalKind::User, password_hash: hash.map(Into::into), created_at: at(0) }
}

fn service(name: &str) -> Principal {
    Principal { name: name.into(), kind: PrincipalKind::Service, password_hash: None, created_at: at(1) }
}

fn token(id: &str, principal: &str) -> ApiToken {
    ApiToken {
        id: id.into(),
        principal: principal.into(),
        secret_hash: format!("{:0>64}", hex_of(id)),
        created_at: at(10),
        expires_at: Some(at(10 + 86_400)),
        revoked_at: None,
    }
}

/// Hex of a short text, to give each token a distinct hash-shaped string.
fn hex_of(text: &str) -> String {
    text.bytes().map(|byte| format!("{byte:02x}")).collect()
}

fn token_key(id: &str, kind: TokenKeyKind, created_at: DateTime<Utc>) -> TokenKey {
    TokenKey {
        id: id.into(),
        kind,
        algorithm: "ecdsa-p256".into(),
        certificate: format!("DER of {id}").into_bytes(),
        sealed_private: vec![0, 1, 255, id.len() as u8],
        kek_id: "kek-2026".into(),
        created_at,
        retired_at: None,
    }
}

fn expect_conflict<T: std::fmt::Debug>(result: Result<T, StoreError>, expected: &str) {
    match result {
        Err(StoreError::Conflict(message)) => assert_eq!(message, expected),
        other => panic!("expected Conflict({expected}), got {other:?}"),
    }
}

/// The (principal, role, pattern) triples of bindings, for short assertions.
fn triples(bindings: &[RoleBinding]) -> Vec<(&str, &str, &str)> {
    bindings.iter().map(|b| (b.principal.as_str(), b.role.as_str(), b.pattern.as_str())).collect()
}

fn token_ids(tokens: &[ApiToken]) -> Vec<&str> {
    tokens.iter().map(|token| token.id.as_str()).collect()
}

/// (id, retired) of every token key, in the store's order.
async fn key_states(store: &Arc<dyn Store>) -> Vec<(String, bool)> {
    let keys = store.token_keys().await.expect("token keys");
    keys.into_iter().map(|key| (key.id, key.retired_at.is_some())).collect()
}

/// The ids of the active keys of `kind`.
async fn active_keys(store: &Arc<dyn Store>, kind: TokenKeyKind) -> Vec<String> {
    let keys = store.token_keys().await.expect("token keys");
    keys.into_iter().filter(|key| key.kind == kind && key.retired_at.is_none()).map(|key| key.id).collect()
}

pub(crate) async fn principals(store: Arc<dyn Store>) {
    assert_eq!(store.principals().await.expect("list"), Vec::new());
    assert_eq!(store.principal("alice").await.expect("get"), None);

    let alice = user("alice", Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g"));
    store.add_principal(&service("zeta-ci"), &change()).await.expect("add service");
    store.add_principal(&alice, &change()).await.expect("add alice");
    store.add_principal(&user("bob", None), &change()).await.expect("add bob");
    assert_eq!(store.principal("alice").await.expect("get"), Some(alice.clone()));
    assert_eq!(store.principal("zeta-ci").await.expect("get"), Some(service("zeta-ci")));
    // Names compare exactly.
    assert_eq!(store.principal("Alice").await.expect("get"), None);

    let names: Vec<String> = store.principals().await.expect("list").into_iter().map(|p| p.name).collect();
    assert_eq!(names, ["alice", "bob", "zeta-ci"]);

    // A second principal of the same name, whatever its kind, is refused and changes nothing.
    expect_conflict(store.add_principal(&service("alice"), &change()).await, "principal \"alice\" already exists");
    assert_eq!(store.principal("alice").await.expect("get"), Some(alice.clone()));
    assert_eq!(store.principals().await.expect("list").len(), 3);

    // Passwords are set, replaced and removed as opaque strings.
    assert!(store.set_password_hash("bob", Some("$argon2id$new"), &change()).await.expect("set"));
    let bob = store.principal("bob").await.expect("get").expect("bob");
    assert_eq!(bob.password_hash.as_deref(), Some("$argon2id$new"));
    assert_eq!((bob.kind, bob.created_at), (PrincipalKind::User, at(0)));
    assert!(store.set_password_hash("alice", None, &change()).await.expect("clear"));
    assert_eq!(store.principal("alice").await.expect("get").expect("alice").password_hash, None);
    assert!(!store.set_password_hash("nobody", Some("x"), &change()).await.expect("set unknown"));
    assert_eq!(store.principal("nobody").await.expect("get"), None);

    // An empty name is refused by the schema.
    let refused = store.add_principal(&user("", None), &change()).await;
    assert!(matches!(refused, Err(StoreError::Internal(_))), "{refused:?}");
    assert_eq!(store.principals().await.expect("list").len(), 3);
}

pub(crate) async fn api_tokens(store: Arc<dyn Store>) {
    store.add_principal(&user("bob", None), &change()).await.expect("add bob");
    store.add_principal(&user("alice", None), &change()).await.expect("add alice");
    assert_eq!(store.api_tokens().await.expect("list"), Vec::new());

    // A token for a principal that does not exist is refused and not stored.
    match store.insert_api_token(&token("0000000000aa", "carol"), &change()).await {
        Err(StoreError::NotFound(message)) => assert_eq!(message, "no principal \"carol\""),
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert_eq!(store.api_token("0000000000aa").await.expect("get"), None);

    for (id, principal) in [("bbbbbbbbbbbb", "bob"), ("cccccccccccc", "alice"), ("aaaaaaaaaaaa", "bob")] {
        store.insert_api_token(&token(id, principal), &change()).await.expect("insert");
    }
    let mut forever = token("000000000000", "bob");
    forever.expires_at = None;
    store.insert_api_token(&forever, &change()).await.expect("insert a token that never expires");

    assert_eq!(store.api_token("cccccccccccc").await.expect("get"), Some(token("cccccccccccc", "alice")));
    assert_eq!(store.api_token("000000000000").await.expect("get"), Some(forever));
    assert_eq!(store.api_token("dddddddddddd").await.expect("get"), None);
    let all = store.api_tokens().await.expect("list");
    assert_eq!(token_ids(&all), ["cccccccccccc", "000000000000", "aaaaaaaaaaaa", "bbbbbbbbbbbb"]);

    // The same id twice is refused, even for another principal, and the first is kept.
    expect_conflict(
        store.insert_api_token(&token("aaaaaaaaaaaa", "alice"), &change()).await,
        "API token \"aaaaaaaaaaaa\" already exists",
    );
    assert_eq!(store.api_token("aaaaaaaaaaaa").await.expect("get"), Some(token("aaaaaaaaaaaa", "bob")));

    // Revocation happens once; the first time is kept.
    assert!(store.revoke_api_token("aaaaaaaaaaaa", at(100), &change()).await.expect("revoke"));
    assert!(!store.revoke_api_token("aaaaaaaaaaaa", at(200), &change()).await.expect("revoke again"));
    assert!(!store.revoke_api_token("ffffffffffff", at(100), &change()).await.expect("revoke unknown"));
    let revoked = store.api_token("aaaaaaaaaaaa").await.expect("get").expect("kept");
    assert_eq!(revoked, ApiToken { revoked_at: Some(at(100)), ..token("aaaaaaaaaaaa", "bob") });
    let other = store.api_token("bbbbbbbbbbbb").await.expect("get").expect("kept");
    assert_eq!(other.revoked_at, None);
}

/// Removing a principal removes its tokens and bindings and nothing else; removing a name that
/// is not a principal changes nothing.
pub(crate) async fn principal_removal_cascades(store: Arc<dyn Store>) {
    for name in ["alice", "bob"] {
        store.add_principal(&user(name, Some("$argon2id$x")), &change()).await.expect("add");
    }
    store.insert_api_token(&token("a1a1a1a1a1a1", "alice"), &change()).await.expect("token");
    store.insert_api_token(&token("a2a2a2a2a2a2", "alice"), &change()).await.expect("token");
    store.insert_api_token(&token("b1b1b1b1b1b1", "bob"), &change()).await.expect("token");
    for (principal, role, pattern) in [
        ("alice", "admin", "team/*"),
        ("alice", "reader", "*"),
        ("bob", "publisher", "team/app"),
        ("anonymous", "reader", "pub/*"),
        ("alicex", "reader", "*"),
    ] {
        assert!(store.add_binding(principal, role, pattern, &change()).await.expect("bind"));
    }

    assert!(store.remove_principal("alice", &change()).await.expect("remove"));
    assert_eq!(store.principal("alice").await.expect("get"), None);
    assert_eq!(token_ids(&store.api_tokens().await.expect("list")), ["b1b1b1b1b1b1"]);
    assert_eq!(store.api_token("a1a1a1a1a1a1").await.expect("get"), None);
    assert_eq!(
        triples(&store.bindings().await.expect("bindings")),
        [("alicex", "reader", "*"), ("anonymous", "reader", "pub/*"), ("bob", "publisher", "team/app")]
    );
    assert_eq!(store.principal("bob").await.expect("get").map(|p| p.name), Some("bob".into()));

    // Gone: a second removal reports it.
    assert!(!store.remove_principal("alice", &change()).await.expect("remove again"));
    // `anonymous` is not a principal: removing it fails and keeps its bindings.
    assert!(!store.remove_principal("anonymous", &change()).await.expect("remove anonymous"));
    assert_eq!(
        triples(&store.bindings_for(&["anonymous"]).await.expect("bindings")),
        [("anonymous", "reader", "pub/*")]
    );
    assert_eq!(store.bindings().await.expect("bindings").len(), 3);

    // The name can be added again and starts with nothing.
    store.add_principal(&user("alice", None), &change()).await.expect("re-add");
    assert_eq!(store.bindings_for(&["alice"]).await.expect("bindings"), Vec::new());
    store.insert_api_token(&token("a3a3a3a3a3a3", "alice"), &change()).await.expect("token for the new alice");
}

pub(crate) async fn role_bindings(store: Arc<dyn Store>) {
    assert_eq!(store.bindings().await.expect("bindings"), Vec::new());
    assert_eq!(store.bindings_for(&["alice"]).await.expect("bindings"), Vec::new());

    let before = Utc::now() - Duration::seconds(1);
    // Bindings need no stored principal, and the store does not interpret roles or patterns.
    for (principal, role, pattern) in [
        ("bob", "reader", "*"),
        ("alice", "reader", "team/app"),
        ("alice", "admin", "team/*"),
        ("anonymous", "reader", "pub/*"),
        ("alice", "admin", "team/app"),
        ("carol", "no-such-role", "**odd pattern**"),
    ] {
        assert!(
            store.add_binding(principal, role, pattern, &change()).await.expect("bind"),
            "{principal} {role} {pattern}"
        );
    }
    let after = Utc::now() + Duration::seconds(1);
    let all = store.bindings().await.expect("bindings");
    assert_eq!(
        triples(&all),
        [
            ("alice", "admin", "team/*"),
            ("alice", "admin", "team/app"),
            ("alice", "reader", "team/app"),
            ("anonymous", "reader", "pub/*"),
            ("bob", "reader", "*"),
            ("carol", "no-such-role", "**odd pattern**"),
        ]
    );
    assert!(all.iter().all(|binding| before <= binding.created_at && binding.created_at <= after), "{all:?}");

    // The same triple again is reported and leaves the first binding as it was.
    let first = all.iter().find(|b| b.principal == "bob").expect("bob's binding").clone();
    assert!(!store.add_binding("bob", "reader", "*", &change()).await.expect("bind again"));
    let again = store.bindings_for(&["bob"]).await.expect("bindings");
    assert_eq!(again, [first]);

    // Only the named principals, in one list, ordered like `bindings`.
    assert_eq!(
        triples(&store.bindings_for(&["anonymous", "alice"]).await.expect("bindings")),
        [
            ("alice", "admin", "team/*"),
            ("alice", "admin", "team/app"),
            ("alice", "reader", "team/app"),
            ("anonymous", "reader", "pub/*"),
        ]
    );
    assert_eq!(store.bindings_for(&["nobody", "Alice"]).await.expect("bindings"), Vec::new());
    assert_eq!(store.bindings_for(&[]).await.expect("bindings"), Vec::new());

    // Removal needs the exact triple.
    assert!(!store.remove_binding("alice", "reader", "team/*", &change()).await.expect("remove"));
    assert!(!store.remove_binding("alice", "admin", "team", &change()).await.expect("remove"));
    assert!(store.remove_binding("alice", "admin", "team/*", &change()).await.expect("remove"));
    assert!(!store.remove_binding("alice", "admin", "team/*", &change()).await.expect("remove again"));
    assert_eq!(
        triples(&store.bindings_for(&["alice"]).await.expect("bindings")),
        [("alice", "admin", "team/app"), ("alice", "reader", "team/app")]
    );
    assert_eq!(store.bindings().await.expect("bindings").len(), 5);
}

/// `delete_gun` keeps the GUN's last current root; only an update that stores a root (or an
/// explicit clear) removes it.
pub(crate) async fn tombstones(store: Arc<dyn Store>) {
    assert_eq!(store.tombstones().await.expect("tombstones"), Vec::new());
    // Deleting a GUN that never existed writes no tombstone.
    assert!(!store.delete_gun(GUN, deletion(GUN)).await.expect("delete nothing"));
    assert_eq!(store.tombstone(GUN).await.expect("tombstone"), None);

    // The current root is kept, not the newest stored one and not another GUN's.
    let v1 = Repo::new(1, "v1");
    store.update(v1.first_publish(GUN)).await.expect("publish v1");
    let root2 = file("root", 2, "rotated");
    let v2 = Repo::new(2, "v2");
    let current = [&root2, &v2.targets, &v2.snapshot, &v2.timestamp];
    store.update(update(GUN, &current, &current, Some(1))).await.expect("publish a new root");
    store.update(Repo::new(1, "other").first_publish(OTHER_GUN)).await.expect("publish other");

    let before = now();
    assert!(store.delete_gun(GUN, deletion(GUN)).await.expect("delete"));
    let after = Utc::now();
    let tombstone = store.tombstone(GUN).await.expect("tombstone").expect("written by the deletion");
    assert_eq!((tombstone.gun.as_str(), &tombstone.root), (GUN, &root2.data));
    assert!(before <= tombstone.deleted_at && tombstone.deleted_at <= after, "{tombstone:?}");
    // The deletion's changefeed record and the tombstone carry the same time.
    let feed = store.changefeed(Some(GUN), -1, -1).await.expect("feed");
    assert_eq!(feed.iter().map(|change| change.created_at).collect::<Vec<_>>(), [tombstone.deleted_at]);
    assert_eq!(store.tombstone(OTHER_GUN).await.expect("tombstone"), None);

    // An update without a root (or a failed one with a root) leaves the tombstone.
    let v3 = Repo::new(3, "v3");
    let rootless = [&v3.targets, &v3.snapshot, &v3.timestamp];
    store.update(update(GUN, &rootless, &rootless, None)).await.expect("publish without a root");
    assert_eq!(store.tombstone(GUN).await.expect("tombstone").as_ref(), Some(&tombstone));
    let stale_root = file("root", 5, "stale");
    let stale = update(GUN, &[&stale_root], &[&stale_root], Some(1));
    assert!(matches!(store.update(stale).await, Err(StoreError::OldVersion { .. })));
    assert_eq!(store.tombstone(GUN).await.expect("tombstone").as_ref(), Some(&tombstone));

    // Deleting again replaces the tombstone only when there is a current root: this GUN has
    // files but no current root now, so the old tombstone stays as it was.
    assert!(store.delete_gun(GUN, deletion(GUN)).await.expect("delete rootless"));
    assert_eq!(store.tombstone(GUN).await.expect("tombstone").as_ref(), Some(&tombstone));

    // An update that stores a root clears it, in the same transaction.
    store.update(v1.first_publish(GUN)).await.expect("re-create");
    assert_eq!(store.tombstone(GUN).await.expect("tombstone"), None);

    // A second deletion writes a fresh tombstone; the list is ordered by GUN.
    assert!(store.delete_gun(OTHER_GUN, deletion(OTHER_GUN)).await.expect("delete other"));
    assert!(store.delete_gun(GUN, deletion(GUN)).await.expect("delete again"));
    let all = store.tombstones().await.expect("tombstones");
    let summary: Vec<(&str, &[u8])> = all.iter().map(|t| (t.gun.as_str(), t.root.as_slice())).collect();
    assert_eq!(summary, [(GUN, v1.root.data.as_slice()), (OTHER_GUN, Repo::new(1, "other").root.data.as_slice())]);
    assert!(all.iter().all(|t| t.deleted_at >= tombstone.deleted_at));

    // An explicit clear, once.
    assert!(store.clear_tombstone(GUN, &change()).await.expect("clear"));
    assert!(!store.clear_tombstone(GUN, &change()).await.expect("clear again"));
    assert!(!store.clear_tombstone("never/deleted", &change()).await.expect("clear unknown"));
    let left: Vec<Tombstone> = store.tombstones().await.expect("tombstones");
    assert_eq!(left.iter().map(|t| t.gun.as_str()).collect::<Vec<_>>(), [OTHER_GUN]);
}

pub(crate) async fn token_keys(store: Arc<dyn Store>) {
    assert_eq!(store.token_keys().await.expect("keys"), Vec::new());

    let ca = token_key("ca-1", TokenKeyKind::Ca, at(0));
    assert!(store.insert_token_key(&ca).await.expect("insert CA"));
    // A second active CA is refused; the caller re-reads the first.
    assert!(!store.insert_token_key(&token_key("ca-2", TokenKeyKind::Ca, at(1))).await.expect("second CA"));
    // A key of the other kind is independent, and a retired key never competes.
    let signing = token_key("sig-1", TokenKeyKind::Signing, at(0));
    assert!(store.insert_token_key(&signing).await.expect("insert signing"));
    let mut old = token_key("ca-0", TokenKeyKind::Ca, at(-10));
    old.retired_at = Some(at(-1));
    assert!(store.insert_token_key(&old).await.expect("insert a retired CA"));
    // A used id is a conflict, whatever the kind.
    let mut reused = token_key("ca-1", TokenKeyKind::Signing, at(5));
    reused.retired_at = Some(at(6));
    expect_conflict(store.insert_token_key(&reused).await, "token key \"ca-1\" already exists");

    // Ordered by creation time, then id; stored exactly.
    assert_eq!(store.token_keys().await.expect("keys"), [old.clone(), ca.clone(), signing.clone()]);

    // Rotation retires the active key of the new key's kind at `at` and activates the new one.
    let signing2 = token_key("sig-2", TokenKeyKind::Signing, at(20));
    store.rotate_token_key(&signing2, at(21), &change()).await.expect("rotate");
    assert_eq!(
        store.token_keys().await.expect("keys"),
        [old.clone(), ca.clone(), TokenKey { retired_at: Some(at(21)), ..signing.clone() }, signing2.clone()]
    );
    assert_eq!(active_keys(&store, TokenKeyKind::Signing).await, ["sig-2"]);
    assert_eq!(active_keys(&store, TokenKeyKind::Ca).await, ["ca-1"]);

    // A rotation that fails changes nothing: the old key stays active.
    let clash = token_key("sig-1", TokenKeyKind::Signing, at(30));
    expect_conflict(store.rotate_token_key(&clash, at(31), &change()).await, "token key \"sig-1\" already exists");
    assert_eq!(active_keys(&store, TokenKeyKind::Signing).await, ["sig-2"]);
    let mut retired = token_key("sig-3", TokenKeyKind::Signing, at(30));
    retired.retired_at = Some(at(30));
    match store.rotate_token_key(&retired, at(31), &change()).await {
        Err(StoreError::Internal(message)) => {
            assert_eq!(message, "token key \"sig-3\" is retired, so it cannot become the active signing key")
        }
        other => panic!("expected Internal, got {other:?}"),
    }
    assert_eq!(store.token_keys().await.expect("keys").len(), 4);

    // Rotating a kind with no active key just activates the new one.
    let ca_only = token_key("ca-9", TokenKeyKind::Ca, at(40));
    store.rotate_token_key(&ca_only, at(41), &change()).await.expect("rotate CA");
    assert_eq!(
        key_states(&store).await,
        [
            ("ca-0".to_string(), true),
            ("ca-1".to_string(), true),
            ("sig-1".to_string(), true),
            ("sig-2".to_string(), false),
            ("ca-9".to_string(), false),
        ]
    );
}

/// The KEK ids the database needs are those of server keys and token keys together.
pub(crate) async fn kek_ids_include_token_keys(store: Arc<dyn Store>) {
    let mut ca = token_key("ca-1", TokenKeyKind::Ca, at(0));
    ca.kek_id = "kek-c".into();
    assert!(store.insert_token_key(&ca).await.expect("insert"));
    assert_eq!(store.kek_ids().await.expect("kek ids"), ["kek-c"]);
    // Token keys are not server keys.
    assert_eq!(store.key_sealed_with("kek-c").await.expect("by kek"), None);

    let mut old = token_key("sig-0", TokenKeyKind::Signing, at(0));
    old.kek_id = "kek-a".into();
    old.retired_at = Some(at(1));
    assert!(store.insert_token_key(&old).await.expect("insert a retired key"));
    for (id, kek) in [("k1", "kek-b"), ("k2", "kek-c"), ("k3", "kek-b")] {
        let key = StoredKey {
            key_id: id.into(),
            gun: GUN.into(),
            role: "timestamp".into(),
            algorithm: "ecdsa".into(),
            public: id.as_bytes().to_vec(),
            sealed_private: vec![1, 2, 3],
            kek_id: kek.into(),
            created_at: at(0),
            last_used: None,
        };
        store.insert_key(&key).await.expect("insert server key");
    }
    // Ascending and distinct; retired token keys still count (their ciphertext is stored).
    assert_eq!(store.kek_ids().await.expect("kek ids"), ["kek-a", "kek-b", "kek-c"]);
}

/// Racers on `stores` (one store, or several on one database, as several server processes)
/// each try to create the first active key of a kind: exactly one succeeds. Then concurrent
/// rotations are serialised: all succeed and exactly one key of the kind stays active.
pub(crate) async fn token_key_race(stores: &[Arc<dyn Store>]) {
    const RACERS: usize = 8;
    let pick = |racer: usize| stores.get(racer % stores.len()).expect("a store").clone();
    let mut racers = Vec::new();
    for racer in 0..RACERS {
        let store = pick(racer);
        let key = token_key(&format!("ca-{racer}"), TokenKeyKind::Ca, at(racer as i64));
        racers.push(tokio::spawn(async move { (racer, store.insert_token_key(&key).await) }));
    }
    let mut winners = Vec::new();
    for racer in racers {
        let (racer, result) = racer.await.expect("racer task");
        if result.unwrap_or_else(|error| panic!("racer {racer}: {error:?}")) {
            winners.push(racer);
        }
    }
    assert_eq!(winners.len(), 1, "winners {winners:?}");
    let winner = format!("ca-{}", winners.first().expect("a winner"));
    let first = pick(0);
    assert_eq!(key_states(&first).await, [(winner.clone(), false)]);

    let mut rotations = Vec::new();
    for racer in 0..RACERS {
        let store = pick(racer);
        let key = token_key(&format!("rot-{racer}"), TokenKeyKind::Ca, at(100 + racer as i64));
        rotations.push(tokio::spawn(async move { store.rotate_token_key(&key, at(200), &change()).await }));
    }
    for rotation in rotations {
        rotation.await.expect("rotation task").expect("rotate");
    }
    let keys = first.token_keys().await.expect("keys");
    assert_eq!(keys.len(), RACERS + 1);
    let active: Vec<&TokenKey> = keys.iter().filter(|key| key.retired_at.is_none()).collect();
    assert_eq!(active.len(), 1, "{keys:?}");
    assert!(keys.iter().filter(|key| key.retired_at.is_some()).all(|key| key.retired_at == Some(at(200))));
}

/// [`token_key_race`] on one store (its connection pool).
pub(crate) async fn token_key_race_in_one_store(store: Arc<dyn Store>) {
    token_key_race(&[store]).await;
}
