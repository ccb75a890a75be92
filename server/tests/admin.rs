//! The admin commands as the binary runs them (`config::load_from` then `admin::run`), against a
//! real SQLite database: what they print, what they store, and what they refuse.
#![expect(clippy::unwrap_used, clippy::panic, reason = "test helpers outside #[test] functions fail by panicking")]

use std::path::Path;

use tufa_server::admin::{self, AdminCommand, AdminError};
use tufa_server::config::{self, Config};
use tufa_store::PrincipalKind;

fn config(dir: &Path, args: &[&str]) -> Config {
    let mut argv = vec!["tufa-server", "--data-dir", dir.to_str().unwrap()];
    argv.extend_from_slice(args);
    config::load_from(argv, |_| None).unwrap()
}

/// Runs `tufa-server --data-dir DIR <args>` with `input` on stdin; returns stdout or the error.
async fn run(dir: &Path, args: &[&str], input: &str) -> Result<String, AdminError> {
    let config = config(dir, args);
    let Some(AdminCommand::Admin(command)) = &config.command else { panic!("not an admin command: {args:?}") };
    let mut out = Vec::new();
    admin::run(&config, &command.action, &mut input.as_bytes(), &mut out).await?;
    Ok(String::from_utf8(out).unwrap())
}

async fn store(dir: &Path) -> std::sync::Arc<dyn tufa_store::Store> {
    tufa_store::open_sqlite(&dir.join("tufa.db")).await.unwrap()
}

#[tokio::test]
async fn users_tokens_and_grants_are_stored_as_hashes_and_listed_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    let out = run(path, &["admin", "user", "add", "alice", "--password-stdin"], "s3cret-pass\n").await.unwrap();
    assert_eq!(out, "added user alice\n");
    let out = run(path, &["admin", "user", "add", "ci-bot", "--service"], "").await.unwrap();
    assert_eq!(out, "added service ci-bot (no password: it signs in with API tokens, see `admin token create`)\n");
    let stored = store(path).await.principal("alice").await.unwrap().unwrap();
    let hash = stored.password_hash.unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(tufa_auth::verify_password("s3cret-pass", &hash));
    assert_eq!(store(path).await.principal("ci-bot").await.unwrap().unwrap().kind, PrincipalKind::Service);

    let out = run(path, &["admin", "token", "create", "ci-bot", "--expires", "90d"], "").await.unwrap();
    let token = out.lines().last().unwrap();
    let (id, secret) = tufa_auth::ApiTokenSecret::parse(token).unwrap();
    assert!(out.starts_with(&format!("created token {id} for ci-bot (expires ")), "{out}");
    let stored = store(path).await.api_token(&id).await.unwrap().unwrap();
    assert!(tufa_auth::ApiTokenSecret::hash_matches(&stored.secret_hash, &secret));
    assert!(!stored.secret_hash.contains(&*secret));

    assert_eq!(
        run(path, &["admin", "grant", "ci-bot", "publisher", "example.com/team/*"], "").await.unwrap(),
        "granted: ci-bot publisher example.com/team/*\n"
    );
    assert_eq!(
        run(path, &["admin", "grant", "ci-bot", "publisher", "example.com/team/*"], "").await.unwrap(),
        "already granted: ci-bot publisher example.com/team/*\n"
    );
    assert_eq!(
        run(path, &["admin", "grant", "anonymous", "reader", "public/*"], "").await.unwrap(),
        "granted: anonymous reader public/*\n"
    );
    let listing = run(path, &["admin", "list"], "").await.unwrap();
    assert!(listing.contains(&format!("  {id} ci-bot ")), "{listing}");
    assert!(listing.contains("  ci-bot publisher example.com/team/*\n"), "{listing}");
    assert!(listing.contains("  anonymous reader public/*\n"), "{listing}");
    assert!(!listing.contains(&*secret), "the listing shows a secret");
    assert!(!listing.contains("argon2"), "the listing shows a password hash");

    assert_eq!(run(path, &["admin", "token", "revoke", &id], "").await.unwrap(), format!("revoked token {id}\n"));
    assert!(run(path, &["admin", "list"], "").await.unwrap().contains(&format!("  {id} ci-bot ")));
    assert_eq!(
        run(path, &["admin", "revoke", "ci-bot", "publisher", "example.com/team/*"], "").await.unwrap(),
        "revoked: ci-bot publisher example.com/team/*\n"
    );
    assert_eq!(
        run(path, &["admin", "user", "remove", "alice"], "").await.unwrap(),
        "removed alice with its tokens and role bindings\n"
    );
    assert!(store(path).await.principal("alice").await.unwrap().is_none());
}

#[tokio::test]
async fn bad_admin_input_is_refused_with_a_clear_message_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    let message = |result: Result<String, AdminError>| result.unwrap_err().to_string();
    assert_eq!(
        run(path, &["admin", "user", "add", "robot"], "").await.unwrap(),
        "added service robot (no password: it signs in with API tokens, see `admin token create`)\n"
    );
    assert_eq!(
        message(run(path, &["admin", "user", "add", "alice", "--password-stdin"], "\n").await),
        "the password on standard input is empty"
    );
    assert_eq!(
        message(run(path, &["admin", "user", "add", "anonymous", "--service"], "").await),
        "\"anonymous\" is reserved for unauthenticated callers"
    );
    assert!(
        message(run(path, &["admin", "user", "add", "bad name", "--service"], "").await)
            .starts_with("\"bad name\" is not a valid name")
    );
    run(path, &["admin", "user", "add", "alice", "--password-stdin"], "pw\n").await.unwrap();
    assert_eq!(
        message(run(path, &["admin", "user", "add", "alice", "--service"], "").await),
        "\"alice\" already exists"
    );
    assert_eq!(
        message(run(path, &["admin", "grant", "anonymous", "publisher", "pub/*"], "").await),
        "anonymous may only be granted reader: unauthenticated callers must never publish or delete"
    );
    assert_eq!(
        message(run(path, &["admin", "grant", "nobody", "reader", "pub/*"], "").await),
        "there is no user or service account \"nobody\"; add it with `tufa-server admin user add` (or grant to \
         anonymous)"
    );
    let error = run(path, &["admin", "grant", "alice", "owner", "pub/*"], "").await.unwrap_err();
    assert_eq!(error.exit_code(), 2);
    let error = run(path, &["admin", "grant", "alice", "reader", "pub/*/x"], "").await.unwrap_err();
    assert_eq!(error.exit_code(), 2);
    assert_eq!(
        message(run(path, &["admin", "token", "create", "alice", "--expires", "10"], "").await),
        format!("--expires \"10\": {}", tufa_auth::parse_duration("10").unwrap_err())
    );
    assert_eq!(
        message(run(path, &["admin", "token", "create", "nobody"], "").await),
        "there is no user or service account \"nobody\"; add it with `tufa-server admin user add`"
    );
    assert_eq!(
        message(run(path, &["admin", "token", "revoke", "000000000000"], "").await),
        "there is no unrevoked token \"000000000000\""
    );
    assert_eq!(message(run(path, &["admin", "tombstone", "clear", "a/b"], "").await), "\"a/b\" has no tombstone");
    assert_eq!(
        message(run(path, &["admin", "token-signer", "bundle"], "").await),
        "there is no token CA yet: start the server once with --auth builtin"
    );
    // Nothing of the refused commands was stored.
    let listing = run(path, &["admin", "list"], "").await.unwrap();
    assert_eq!(
        listing
            .lines()
            .filter(|line| line.starts_with("  "))
            .map(|line| line.split(' ').nth(2).unwrap())
            .collect::<Vec<_>>(),
        vec!["alice", "robot"]
    );
}

#[tokio::test]
async fn the_token_signer_bundle_survives_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    let config = config(path, &["--auth", "builtin"]);
    let store = store(path).await;
    let kek = tufa_server::signing::load_checked_kek(store.as_ref(), &config).await.unwrap();
    tufa_server::auth::keys::ensure(store.as_ref(), &kek).await.unwrap();
    let bundle = run(path, &["admin", "token-signer", "bundle"], "").await.unwrap();
    assert!(bundle.starts_with("-----BEGIN CERTIFICATE-----\n"), "{bundle}");
    let before = store.token_keys().await.unwrap();
    let out = run(path, &["admin", "token-signer", "rotate"], "").await.unwrap();
    let after = store.token_keys().await.unwrap();
    let active: Vec<_> = after.iter().filter(|key| key.retired_at.is_none()).collect();
    assert_eq!(active.len(), 2, "one CA and one signing key stay active");
    let signing = active.iter().find(|key| key.kind == tufa_store::TokenKeyKind::Signing).unwrap();
    assert_eq!(out, format!("the token-signing key is now {}; servers switch within seconds\n", signing.id));
    assert_eq!(after.len(), before.len() + 1);
    assert_eq!(run(path, &["admin", "token-signer", "bundle"], "").await.unwrap(), bundle);
}
