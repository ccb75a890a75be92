//! Which repository each online key belongs to, and the re-signer's expiring pages.

use std::sync::Arc;

use chrono::{DateTime, Duration};
use tufa_store::{ExpiringCursor, KeyOwner, Store};

use crate::support::{Repo, expiring_at, now};

fn owner(key_id: &str, gun: &str, role: &str, requester: Option<&str>, seconds: i64) -> KeyOwner {
    KeyOwner {
        key_id: key_id.into(),
        gun: gun.into(),
        role: role.into(),
        requester: requester.map(str::to_owned),
        created_at: DateTime::from_timestamp(1_790_000_000 + seconds, 0).expect("time"),
    }
}

pub(crate) async fn key_owners(store: Arc<dyn Store>) {
    let first = owner("k1", "example.com/app", "timestamp", Some("10.0.0.1"), 0);
    assert_eq!(store.record_key_owner(&first).await.expect("record"), first);
    // The first record wins: another repository cannot claim the key later.
    let claim = owner("k1", "evil.com/app", "timestamp", Some("10.0.0.9"), 5);
    assert_eq!(store.record_key_owner(&claim).await.expect("record again"), first);
    assert_eq!(store.key_owner("k1").await.expect("owner"), Some(first.clone()));
    assert_eq!(store.key_owner("nope").await.expect("owner"), None);

    // Pending: keys a requester asked for whose repository has no current files.
    for (index, gun) in ["a/one", "a/two", "a/three"].iter().enumerate() {
        let seconds = i64::try_from(index).expect("small") + 10;
        store
            .record_key_owner(&owner(&format!("p{index}"), gun, "timestamp", Some("10.0.0.2"), seconds))
            .await
            .expect("record");
    }
    store.record_key_owner(&owner("q0", "b/one", "snapshot", Some("10.0.0.3"), 20)).await.expect("record");
    let published = Repo::new(1, "v1");
    store.update(published.first_publish("a/two")).await.expect("publish a/two");
    let pending: Vec<String> =
        store.pending_keys("10.0.0.2").await.expect("pending").into_iter().map(|owner| owner.key_id).collect();
    assert_eq!(pending, ["p0", "p2"]);
    assert_eq!(store.drop_keys(&["p0".to_owned(), "unknown".to_owned()]).await.expect("drop"), 1);
    assert_eq!(store.key_owner("p0").await.expect("owner"), None);
    let pending: Vec<String> =
        store.pending_keys("10.0.0.2").await.expect("pending").into_iter().map(|owner| owner.key_id).collect();
    assert_eq!(pending, ["p2"]);
    assert_eq!(store.drop_keys(&[]).await.expect("drop nothing"), 0);
}

pub(crate) async fn expiring_pages(store: Arc<dyn Store>) {
    let now = now();
    let at = |hours: i64| now + Duration::hours(hours);
    for (gun, hours) in [("d", -3), ("b", -2), ("c", -2), ("a", -1), ("late", 100)] {
        let mut repo = Repo::new(1, gun);
        repo.timestamp = expiring_at(repo.timestamp, at(hours));
        repo.snapshot.expires = Some(at(500));
        store.update(repo.first_publish(gun)).await.expect("publish");
    }
    let page = store.expiring_page(at(1), None, 2).await.expect("first page");
    let guns: Vec<&str> = page.iter().map(|cursor| cursor.gun.as_str()).collect();
    assert_eq!(guns, ["d", "b"]);
    let next = store.expiring_page(at(1), page.last(), 2).await.expect("second page");
    let guns: Vec<&str> = next.iter().map(|cursor| cursor.gun.as_str()).collect();
    assert_eq!(guns, ["c", "a"]);
    let last = store.expiring_page(at(1), next.last(), 2).await.expect("third page");
    assert!(last.is_empty(), "{last:?}");
    let after_all = ExpiringCursor { expires: at(50), gun: String::new() };
    assert!(store.expiring_page(at(1000), Some(&after_all), 10).await.expect("tail").iter().all(|c| c.gun == "late"));
    assert!(store.expiring_page(at(1), None, 0).await.expect("empty").is_empty());
}
