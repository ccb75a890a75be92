//! Unit tests of the verification and the decision, on repositories built here with software
//! keys: one test per refusal, and the role rules.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde_json::json;

use super::*;
use crate::testutil::{Delegated, GUN, Repo, digest, key, sign};
use crate::{RoleName, RoleRequirement, RootPin};

fn fresh() -> Freshness {
    Freshness { now: Utc::now(), from_cache: false, allow_expired_cached: false }
}

/// Trusts the root on first use and verifies the files.
fn verify(repo: &Repo) -> Result<TrustData, Refusal> {
    verify_with(repo, &Versions::new(), fresh())
}

fn verify_with(repo: &Repo, seen: &Versions, freshness: Freshness) -> Result<TrustData, Refusal> {
    let (root, files) = repo.build();
    let root = trust_root(GUN, None, &[root], &RootPin::None, seen)?;
    verify_repository(GUN, &root, &files, seen, freshness)
}

fn role(name: &str) -> RoleName {
    RoleName::parse(name).unwrap()
}

#[test]
fn a_signed_tag_is_trusted_with_its_digest_roles_and_keys() {
    let repo = Repo::new();
    let data = verify(&repo).unwrap();
    assert_eq!(data.root_version, 1);
    assert_eq!(data.timestamp_version, 7);
    assert_eq!(
        data.versions,
        BTreeMap::from([
            ("root".to_owned(), 1),
            ("snapshot".to_owned(), 4),
            ("targets".to_owned(), 3),
            ("timestamp".to_owned(), 7),
        ])
    );
    let verdict = decide(&data, Some("v1"), None, &RoleRequirement::Any);
    assert_eq!(
        verdict,
        Verdict {
            trusted: true,
            digest: Some(format!("sha256:{}", digest("v1"))),
            roles: vec!["targets".into()],
            keys: vec![repo.targets_keys[0].key_id().to_owned()],
            reason: format!("tag v1 of {GUN} is signed with digest sha256:{} by targets", digest("v1")),
        }
    );
    // By digest alone, and by tag and digest.
    assert!(decide(&data, None, Some(&digest("v1")), &RoleRequirement::Any).trusted);
    assert!(decide(&data, Some("v1"), Some(&digest("v1")), &RoleRequirement::Any).trusted);
}

#[test]
fn an_unsigned_tag_and_a_wrong_digest_are_untrusted() {
    let data = verify(&Repo::new()).unwrap();
    let unsigned = decide(&data, Some("v9"), None, &RoleRequirement::Any);
    assert_eq!(
        (unsigned.trusted, unsigned.reason.as_str()),
        (false, "tag v9 of registry.example.com/app is not signed")
    );
    let wrong = decide(&data, Some("v1"), Some(&digest("other")), &RoleRequirement::Any);
    assert!(!wrong.trusted);
    assert_eq!(
        wrong.reason,
        format!("tag v1 of {GUN} is signed with digest sha256:{}, not sha256:{}", digest("v1"), digest("other"))
    );
    let unknown = decide(&data, None, Some(&digest("other")), &RoleRequirement::Any);
    assert_eq!(unknown.reason, format!("no signed tag of {GUN} has the digest sha256:{}", digest("other")));
}

#[test]
fn a_bad_signature_is_refused() {
    let repo = Repo::new();
    let (root, files) = repo.build_with(|role, mut bytes| {
        if role == "targets" {
            // Flip one character of the signature's base64 (the last `"sig":"…"` value).
            let text = String::from_utf8(bytes.clone()).unwrap();
            let at = text.rfind("\"sig\":\"").unwrap() + 8;
            bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        }
        bytes
    });
    let root = trust_root(GUN, None, &[root], &RootPin::None, &Versions::new()).unwrap();
    let refusal = verify_repository(GUN, &root, &files, &Versions::new(), fresh()).unwrap_err();
    assert_eq!(
        refusal.to_string(),
        format!(
            "targets metadata of {GUN} is not properly signed: valid signatures did not meet threshold for targets"
        )
    );
}

#[test]
fn a_threshold_of_two_needs_two_distinct_keys() {
    let mut repo = Repo::new();
    repo.targets_keys = vec![key(), key(), key()];
    repo.targets_threshold = 2;
    repo.targets_signing = 1;
    assert_eq!(
        verify(&repo).unwrap_err(),
        Refusal::Signature {
            gun: GUN.into(),
            role: "targets".into(),
            detail: "valid signatures did not meet threshold for targets".into()
        }
    );
    repo.targets_signing = 2;
    let data = verify(&repo).unwrap();
    let verdict = decide(&data, Some("v1"), None, &RoleRequirement::Any);
    assert!(verdict.trusted);
    assert_eq!(verdict.keys, vec![repo.targets_keys[0].key_id().to_owned(), repo.targets_keys[1].key_id().to_owned()]);
}

#[test]
fn the_root_must_be_signed_by_pinned_keys() {
    let repo = Repo::new();
    let root = repo.root();
    let canonical = repo.root_keys[0].public_key().canonical_id().unwrap();
    let other = key().key_id().to_owned();
    let seen = Versions::new();
    assert_eq!(
        trust_root(GUN, None, std::slice::from_ref(&root), &RootPin::RootKeys(vec![other.clone()]), &seen)
            .unwrap_err()
            .to_string(),
        format!("root key {canonical} is not pinned for {GUN}")
    );
    assert_eq!(
        trust_root(GUN, None, std::slice::from_ref(&root), &RootPin::CertIds(vec![other]), &seen).unwrap_err(),
        Refusal::RootNotPinned { gun: GUN.into(), keys: repo.root_keys[0].key_id().to_owned() }
    );
    trust_root(GUN, None, std::slice::from_ref(&root), &RootPin::RootKeys(vec![canonical.to_uppercase()]), &seen)
        .unwrap();
    trust_root(GUN, None, &[root], &RootPin::CertIds(vec![repo.root_keys[0].key_id().to_owned()]), &seen).unwrap();
}

#[test]
fn a_pinned_key_alone_must_meet_the_root_threshold() {
    let mut repo = Repo::new();
    repo.root_keys = vec![key(), key()];
    repo.root_threshold = 2;
    let root = repo.root();
    let first = repo.root_keys[0].public_key().canonical_id().unwrap();
    let second = repo.root_keys[1].public_key().canonical_id().unwrap();
    let refusal =
        trust_root(GUN, None, std::slice::from_ref(&root), &RootPin::RootKeys(vec![first.clone()]), &Versions::new())
            .unwrap_err();
    assert_eq!(refusal, Refusal::RootNotPinned { gun: GUN.into(), keys: format!("{first}, {second}") });
    trust_root(GUN, None, &[root], &RootPin::RootKeys(vec![first, second]), &Versions::new()).unwrap();
}

#[test]
fn the_root_rotation_chain_is_walked_and_a_broken_link_refused() {
    let mut repo = Repo::new();
    let old_root = repo.root();
    let old_key = repo.root_keys.remove(0);
    let new_key = key();
    repo.root_keys = vec![new_key];
    repo.root_version = 2;
    // Version 2 signed by the old and the new key: a valid rotation.
    let body = repo.root_body();
    repo.extra_root_signers = vec![old_key];
    let rotated = repo.root();
    repo.root_file = Some(rotated.clone());
    let old_key = &repo.extra_root_signers[0];
    let trusted =
        trust_root(GUN, Some(&old_root), std::slice::from_ref(&rotated), &RootPin::None, &Versions::new()).unwrap();
    assert_eq!(trusted.version(), 2);
    assert_eq!(trusted.bytes, rotated);
    // The rest of the repository verifies under the new root.
    let (built_root, files) = repo.build();
    assert_eq!(built_root, rotated);
    let data = verify_repository(GUN, &trusted, &files, &Versions::new(), fresh()).unwrap();
    assert_eq!(data.root_version, 2);
    // Version 2 signed by the new key only: the old root did not sign it.
    let unsigned = sign(&body, &[&repo.root_keys[0]]);
    assert_eq!(
        trust_root(GUN, Some(&old_root), &[unsigned], &RootPin::None, &Versions::new()).unwrap_err().to_string(),
        format!(
            "root version 2 of {GUN} is not signed by the keys of root version 1: \
             valid signatures did not meet threshold for root"
        )
    );
    // Signed by the old key only: the new root does not meet its own threshold.
    let half = sign(&body, &[old_key]);
    assert_eq!(
        trust_root(GUN, Some(&old_root), &[half], &RootPin::None, &Versions::new()).unwrap_err().to_string(),
        format!("root metadata of {GUN} is not properly signed: valid signatures did not meet threshold for root")
    );
    // The snapshot of the new repository lists the new root, so the old one is stale.
    let old = TrustedRoot::from_trusted_bytes(GUN, old_root).unwrap();
    assert_eq!(
        verify_repository(GUN, &old, &files, &Versions::new(), fresh()).unwrap_err(),
        Refusal::StaleRoot(GUN.into())
    );
}

#[test]
fn the_snapshot_listing_another_root_asks_for_a_root_update() {
    let repo = Repo::new();
    let (_, files) = repo.build();
    // The same keys, but a root of another version: the snapshot lists the first.
    let mut other = Repo::new();
    other.root_keys = vec![];
    let mut bumped = repo.root_body();
    bumped["version"] = json!(2);
    let root_v2 = sign(&bumped, &[&repo.root_keys[0]]);
    let trusted = trust_root(GUN, None, &[root_v2], &RootPin::None, &Versions::new()).unwrap();
    assert_eq!(
        verify_repository(GUN, &trusted, &files, &Versions::new(), fresh()).unwrap_err(),
        Refusal::StaleRoot(GUN.into())
    );
}

#[test]
fn expired_data_is_refused_unless_cached_and_allowed() {
    let mut repo = Repo::new();
    repo.timestamp_expires_days = -1;
    let refusal = verify(&repo).unwrap_err();
    let Refusal::Expired { ref role, ref at, .. } = refusal else { panic!("{refusal:?}") };
    assert_eq!(role, "timestamp");
    let expired_timestamp = |refusal: Refusal| matches!(refusal, Refusal::Expired { role, .. } if role == "timestamp");
    assert_eq!(refusal.to_string(), format!("timestamp of {GUN} expired at {at}"));
    let at = DateTime::parse_from_rfc3339(at).unwrap();
    assert!(at < Utc::now() && at > Utc::now() - Duration::days(2));
    // Freshly fetched data never passes expired, whatever the requirement says.
    let allowed_fresh = Freshness { now: Utc::now(), from_cache: false, allow_expired_cached: true };
    assert!(expired_timestamp(verify_with(&repo, &Versions::new(), allowed_fresh).unwrap_err()));
    // Cached data passes expired only when allowed.
    let cached = Freshness { now: Utc::now(), from_cache: true, allow_expired_cached: false };
    assert!(expired_timestamp(verify_with(&repo, &Versions::new(), cached).unwrap_err()));
    let allowed = Freshness { now: Utc::now(), from_cache: true, allow_expired_cached: true };
    assert_eq!(verify_with(&repo, &Versions::new(), allowed).unwrap().timestamp_version, 7);
}

#[test]
fn a_version_below_the_one_seen_is_a_rollback() {
    let repo = Repo::new();
    let mut seen = Versions::new();
    seen.insert("targets".into(), 5);
    assert_eq!(
        verify_with(&repo, &seen, fresh()).unwrap_err().to_string(),
        format!("targets version 3 of {GUN} is older than the 5 already seen (rollback)")
    );
    // Equal versions are fine, and the versions to persist never go down.
    let mut seen = Versions::new();
    seen.insert("targets".into(), 3);
    seen.insert("targets/gone".into(), 9);
    let data = verify_with(&repo, &seen, fresh()).unwrap();
    assert_eq!(data.versions.get("targets/gone"), Some(&9));
    // A delegation's rollback and a root's too.
    let mut repo = Repo::new();
    repo.delegations.push(Delegated::new("targets/releases", vec![("v2", digest("v2"))]));
    let mut seen = Versions::new();
    seen.insert("targets/releases".into(), 2);
    assert_eq!(
        verify_with(&repo, &seen, fresh()).unwrap_err().to_string(),
        format!("targets/releases version 1 of {GUN} is older than the 2 already seen (rollback)")
    );
    let mut seen = Versions::new();
    seen.insert("root".into(), 4);
    assert_eq!(
        verify_with(&repo, &seen, fresh()).unwrap_err().to_string(),
        format!("root version 1 of {GUN} is older than the 4 already seen (rollback)")
    );
}

#[test]
fn a_delegation_signs_only_within_its_paths_narrowed_by_its_parent() {
    let mut repo = Repo::new();
    let mut releases = Delegated::new("targets/releases", vec![("v2", digest("v2")), ("other", digest("o"))]);
    releases.paths = vec!["v"];
    repo.delegations.push(releases);
    // A child claiming everything keeps only what its parent allows: here nothing, since ""
    // does not lie within "v" (notary's Restrict).
    let mut nested = Delegated::new("targets/releases/nightly", vec![("v3", digest("v3"))]);
    nested.paths = vec![""];
    repo.delegations.push(nested);
    let mut narrow = Delegated::new("targets/releases/narrow", vec![("v4", digest("v4")), ("x4", digest("x4"))]);
    narrow.paths = vec!["v4", "x"];
    repo.delegations.push(narrow);
    let data = verify(&repo).unwrap();
    let names: Vec<&str> = data.roles.iter().map(|role| role.name.as_str()).collect();
    assert_eq!(names, ["targets", "targets/releases", "targets/releases/nightly", "targets/releases/narrow"]);
    assert!(decide(&data, Some("v2"), None, &RoleRequirement::Any).trusted);
    assert_eq!(
        decide(&data, Some("other"), None, &RoleRequirement::Any).reason,
        format!("tag other of {GUN} is not signed")
    );
    assert_eq!(decide(&data, Some("v3"), None, &RoleRequirement::Any).reason, format!("tag v3 of {GUN} is not signed"));
    let v4 = decide(&data, Some("v4"), None, &RoleRequirement::Any);
    assert_eq!(v4.roles, ["targets/releases/narrow"]);
    assert!(!decide(&data, Some("x4"), None, &RoleRequirement::Any).trusted);
}

#[test]
fn notary_priority_decides_the_digest_of_a_tag() {
    let mut repo = Repo::new();
    repo.targets = vec![];
    repo.delegations.push(Delegated::new("targets/a", vec![("v1", digest("first"))]));
    repo.delegations.push(Delegated::new("targets/b", vec![("v1", digest("second"))]));
    let data = verify(&repo).unwrap();
    let verdict = decide(&data, Some("v1"), None, &RoleRequirement::Any);
    assert_eq!(
        (verdict.digest, verdict.roles),
        (Some(format!("sha256:{}", digest("first"))), vec!["targets/a".to_owned()])
    );
    // A digest lookup follows the same rule: the lower-priority digest is not the tag's.
    let verdict = decide(&data, None, Some(&digest("second")), &RoleRequirement::Any);
    assert_eq!(
        (verdict.trusted, verdict.reason),
        (
            false,
            format!(
                "tag v1 of {GUN} is signed with digest sha256:{}, not sha256:{}",
                digest("first"),
                digest("second")
            )
        )
    );
    // Asking for roles makes the second digest count for targets/b.
    let verdict = decide(&data, None, Some(&digest("second")), &RoleRequirement::AllOf(vec![role("targets/b")]));
    assert_eq!(verdict.roles, ["targets/b"]);
    assert!(verdict.trusted);
}

#[test]
fn required_roles_missing_and_met() {
    let mut repo = Repo::new();
    repo.delegations.push(Delegated::new("targets/releases", vec![("v2", digest("v2"))]));
    repo.delegations.push(Delegated::new("targets/qa", vec![("v1", digest("v1"))]));
    let data = verify(&repo).unwrap();
    let both = RoleRequirement::AllOf(vec![role("targets/releases"), role("targets/qa")]);
    let verdict = decide(&data, Some("v2"), None, &both);
    assert_eq!(
        verdict.reason,
        "tag v2 of registry.example.com/app is not signed by targets/qa; signed only by targets/releases"
    );
    // By digest: the tag carrying it is named.
    let by_digest = decide(&data, None, Some(&digest("v2")), &both);
    assert_eq!(
        (by_digest.trusted, by_digest.reason),
        (
            false,
            format!(
                "tag v2 of {GUN} is not signed with digest sha256:{} by targets/qa; signed only by targets/releases",
                digest("v2")
            )
        )
    );
    assert_eq!((verdict.trusted, verdict.roles), (false, vec!["targets/releases".to_owned()]));
    let repo_keys: Vec<String> =
        repo.delegations.iter().map(|delegation| delegation.keys[0].key_id().to_owned()).collect();
    let mut repo2 = repo;
    repo2.delegations[1].targets.push(("v2", digest("v2")));
    let data = verify(&repo2).unwrap();
    let verdict = decide(&data, Some("v2"), Some(&format!("sha256:{}", digest("v2"))), &both);
    assert!(verdict.trusted, "{verdict:?}");
    assert_eq!(verdict.roles, ["targets/releases", "targets/qa"]);
    assert_eq!(verdict.keys, repo_keys);
    // Roles that disagree on the digest do not add up.
    let mut repo3 = Repo::new();
    repo3.delegations.push(Delegated::new("targets/releases", vec![("v2", digest("v2"))]));
    repo3.delegations.push(Delegated::new("targets/qa", vec![("v2", digest("evil"))]));
    let data = verify(&repo3).unwrap();
    let verdict = decide(&data, Some("v2"), None, &both);
    assert!(!verdict.trusted);
    assert_eq!(
        verdict.reason,
        format!("tag v2 of {GUN} is not signed by targets/qa; signed only by targets/releases, targets/qa")
    );
}

#[test]
fn k_of_n_roles() {
    let mut repo = Repo::new();
    repo.delegations.push(Delegated::new("targets/a", vec![("v1", digest("v1"))]));
    repo.delegations.push(Delegated::new("targets/b", vec![]));
    repo.delegations.push(Delegated::new("targets/c", vec![("v1", digest("v1"))]));
    let data = verify(&repo).unwrap();
    let roles = vec![role("targets/a"), role("targets/b"), role("targets/c")];
    let two = RoleRequirement::AtLeast { roles: roles.clone(), min: 2 };
    let verdict = decide(&data, Some("v1"), None, &two);
    assert!(verdict.trusted);
    assert_eq!(verdict.roles, ["targets/a", "targets/c"]);
    assert_eq!(
        verdict.reason,
        format!(
            "tag v1 of {GUN} is signed with digest sha256:{} by targets/a, targets/c (2 of the required 2)",
            digest("v1")
        )
    );
    let three = RoleRequirement::AtLeast { roles, min: 3 };
    let verdict = decide(&data, Some("v1"), None, &three);
    assert!(!verdict.trusted);
    assert_eq!(
        verdict.reason,
        format!(
            "tag v1 of {GUN} is signed by 2 of the required 3 of targets/a, targets/b, targets/c; signed only by targets, targets/a, targets/c"
        )
    );
}

#[test]
fn under_signed_and_expired_delegations_are_skipped_and_named() {
    let mut repo = Repo::new();
    let mut qa = Delegated::new("targets/qa", vec![("v1", digest("v1"))]);
    qa.keys.push(key());
    qa.threshold = 2;
    repo.delegations.push(qa);
    let mut old = Delegated::new("targets/old", vec![("v1", digest("v1"))]);
    old.expires_days = -1;
    repo.delegations.push(old);
    let data = verify(&repo).unwrap();
    assert_eq!(data.roles.len(), 1);
    let verdict = decide(&data, Some("v1"), None, &RoleRequirement::AllOf(vec![role("targets/qa")]));
    assert_eq!(
        verdict.reason,
        format!(
            "tag v1 of {GUN} is not signed by targets/qa; signed only by targets \
             (targets/qa is not properly signed: valid signatures did not meet threshold for targets/qa)"
        )
    );
    let old = decide(&data, Some("v1"), None, &RoleRequirement::AllOf(vec![role("targets/old")]));
    assert!(
        old.reason.starts_with(&format!(
            "tag v1 of {GUN} is not signed by targets/old; signed only by targets (targets/old of {GUN} expired at "
        )),
        "{}",
        old.reason
    );
}

#[test]
fn a_file_not_matching_its_listing_is_refused() {
    let repo = Repo::new();
    let (root, mut files) = repo.build();
    files.roles.insert("targets".into(), Repo::new().build().1.roles["targets"].clone());
    let root = trust_root(GUN, None, &[root], &RootPin::None, &Versions::new()).unwrap();
    assert_eq!(
        verify_repository(GUN, &root, &files, &Versions::new(), fresh()).unwrap_err().to_string(),
        format!("targets metadata of {GUN} does not match the hashes snapshot lists")
    );
}

#[test]
fn digests_are_normalized() {
    let hex = digest("x");
    assert_eq!(normalize_digest(&format!("sha256:{}", hex.to_uppercase())), Some(hex.clone()));
    assert_eq!(normalize_digest(&hex), Some(hex));
    assert_eq!(normalize_digest("sha256:abc"), None);
    assert_eq!(normalize_digest("sha512:00"), None);
}
