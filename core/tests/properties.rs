//! Property tests with a small hand-rolled generator (xorshift, fixed seeds, so every run checks
//! the same cases and a failure names its seed): canonical JSON is idempotent; any changed byte
//! of the signed part of a real signed file breaks its signature or its parse; arbitrary bytes
//! never panic the parsers, the update verifier or the record's readers; the one-pass merge of
//! two targets files agrees with a diff of their parsed maps.
#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test helpers outside #[test] functions fail by panicking"
)]

#[path = "support/repo.rs"]
mod repo;

use std::collections::BTreeMap;

use chrono::{TimeZone as _, Utc};
use serde_json::{Map, Number, Value};
use tufa_core::canonical::to_canonical;
use tufa_core::json;
use tufa_core::keys::PublicKey;
use tufa_core::metadata::envelope;
use tufa_core::metadata::{RoleKeys, Root, Signed, Snapshot, Targets, Timestamp};
use tufa_core::names::{BaseRole, Gun, RoleName};
use tufa_core::record::{ChangeKind, TargetChange, delegation_grants, target_changes, targets_of};
use tufa_core::update::{Limits, RepoState, validate};
use tufa_core::verify::check_threshold;

const ROOT: &[u8] = include_bytes!("data/notary-0.7/root.json");
const TARGETS: &[u8] = include_bytes!("data/notary-0.7/targets.json");
const SNAPSHOT: &[u8] = include_bytes!("data/notary-0.7/snapshot.json");
const TIMESTAMP: &[u8] = include_bytes!("data/notary-0.7/timestamp.json");

/// xorshift64*: small, fast and good enough to spread test cases.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, bound: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(bound.max(1)).unwrap()).unwrap()
    }

    fn byte(&mut self) -> u8 {
        self.next().to_le_bytes()[0]
    }
}

/// A string of characters canonical JSON can carry and JSON readers accept: anything but the
/// control characters (canonical JSON writes those raw, which no JSON reader takes back).
fn string(rng: &mut Rng) -> String {
    const SPECIAL: [char; 12] = ['"', '\\', '/', '<', '>', '&', 'é', '\u{2028}', '\u{FEFF}', '😀', '\u{7F}', ' '];
    (0..rng.below(8))
        .map(|_| match rng.below(3) {
            0 => SPECIAL[rng.below(SPECIAL.len())],
            1 => char::from_u32(u32::try_from(0x20 + rng.below(0x5F)).unwrap()).unwrap(),
            _ => char::from_u32(u32::try_from(0xA0 + rng.below(0x2000)).unwrap()).unwrap_or('x'),
        })
        .collect()
}

fn value(rng: &mut Rng, depth: usize) -> Value {
    let kinds = if depth == 0 { 5 } else { 7 };
    match rng.below(kinds) {
        0 => Value::Null,
        1 => Value::Bool(rng.below(2) == 1),
        2 => {
            let magnitude = i64::try_from(rng.next() >> 11).unwrap(); // below 2^53
            Value::Number(Number::from(if rng.below(2) == 1 { -magnitude } else { magnitude }))
        }
        3 => Value::Number(Number::from(i64::try_from(rng.below(1000)).unwrap())),
        4 => Value::String(string(rng)),
        5 => Value::Array((0..rng.below(5)).map(|_| value(rng, depth - 1)).collect()),
        _ => Value::Object((0..rng.below(5)).map(|_| (string(rng), value(rng, depth - 1))).collect::<Map<_, _>>()),
    }
}

#[test]
fn canonical_json_is_idempotent() {
    for seed in 0..2_000 {
        let mut rng = Rng::new(seed);
        let original = value(&mut rng, 4);
        let once = to_canonical(&original).unwrap();
        let reread: Value = serde_json::from_slice(&once).unwrap_or_else(|error| panic!("seed {seed}: {error}"));
        assert_eq!(reread, original, "seed {seed}");
        assert_eq!(to_canonical(&reread).unwrap(), once, "seed {seed}");
        // The strict scanner accepts canonical output, and finds it canonical.
        assert!(json::scan(&once).is_ok(), "seed {seed}");
        assert!(json::is_canonical_text(&once, &once), "seed {seed}");
    }
}

/// A fixture file: its role, its bytes, and the keys and role its root declares.
type Fixture = (&'static str, &'static [u8], BTreeMap<String, PublicKey>, RoleKeys);

/// The keys and role of each fixture file, as its root declares them.
fn fixture_roles() -> Vec<Fixture> {
    let root = Root::from_signed(&Signed::parse(ROOT).unwrap()).unwrap();
    [
        ("root", ROOT, BaseRole::Root),
        ("targets", TARGETS, BaseRole::Targets),
        ("snapshot", SNAPSHOT, BaseRole::Snapshot),
        ("timestamp", TIMESTAMP, BaseRole::Timestamp),
    ]
    .into_iter()
    .map(|(name, bytes, role)| (name, bytes, root.keys.clone(), root.role(role).unwrap().clone()))
    .collect()
}

/// Whether `bytes` parses and carries a threshold of valid signatures.
fn verifies(role: &str, bytes: &[u8], keys: &BTreeMap<String, PublicKey>, role_keys: &RoleKeys) -> bool {
    Signed::parse(bytes).is_ok_and(|signed| check_threshold(role, &signed, keys, role_keys).is_ok())
}

#[test]
fn any_changed_byte_of_the_signed_part_breaks_the_signature_or_the_parse() {
    let mut rng = Rng::new(7);
    for (role, bytes, keys, role_keys) in fixture_roles() {
        assert!(verifies(role, bytes, &keys, &role_keys), "{role} must verify unchanged");
        let span = json::scan(bytes).unwrap().signed.unwrap();
        for position in span {
            for flip in [0x01, 0x20, rng.byte() | 1] {
                let mut changed = bytes.to_vec();
                changed[position] ^= flip;
                assert!(
                    !verifies(role, &changed, &keys, &role_keys),
                    "{role}: byte {position} xor {flip:#04x} still verifies"
                );
            }
        }
    }
}

/// Runs every parser and the verifier over `bytes`; they may refuse it but must not panic.
fn parse_everything(bytes: &[u8], now: chrono::DateTime<Utc>) -> bool {
    let _ = json::scan(bytes);
    let parsed = Signed::parse(bytes);
    if let Ok(signed) = &parsed {
        let _ = Root::from_signed(signed);
        let _ = Targets::from_signed(signed, &RoleName::base(BaseRole::Targets));
        let _ = Targets::from_signed(signed, &RoleName::parse("targets/a").unwrap());
        let _ = Snapshot::from_signed(signed);
        let _ = Timestamp::from_signed(signed);
    }
    let _ = targets_of(bytes);
    let _ = target_changes(Some(bytes), TARGETS);
    let _ = target_changes(Some(TARGETS), bytes);
    let _ = delegation_grants(&RoleName::base(BaseRole::Targets), bytes);
    let gun = Gun::parse("example.com/app").unwrap();
    let stored = RepoState::new([("root".to_owned(), ROOT.to_vec()), ("targets".to_owned(), TARGETS.to_vec())]);
    // The verifier only when the parse succeeded: otherwise every role refuses the file at its
    // first step, and checking the stored root each time would only cost time.
    if parsed.is_ok() {
        for role in ["root", "targets", "targets/a", "snapshot"] {
            let uploads = BTreeMap::from([(RoleName::parse(role).unwrap(), bytes.to_vec())]);
            let _ = validate(&gun, &stored, uploads.clone(), now, &Limits::default());
            let _ = validate(&gun, &RepoState::default(), uploads, now, &Limits::default());
        }
    }
    parsed.is_ok()
}

#[test]
fn arbitrary_bytes_never_panic_the_parsers() {
    // The fixtures' own time, so that the stored root is valid and validation goes deep.
    let now = Utc.with_ymd_and_hms(2026, 11, 23, 0, 0, 0).unwrap();
    let mut rng = Rng::new(42);
    // Random bytes: never metadata.
    for _ in 0..300 {
        let bytes: Vec<u8> = (0..rng.below(300)).map(|_| rng.byte()).collect();
        assert!(!parse_everything(&bytes, now), "random bytes parsed: {bytes:?}");
    }
    // Random JSON: never metadata either (no `_type`, no envelope).
    for seed in 0..300 {
        let text = to_canonical(&value(&mut Rng::new(seed), 4)).unwrap();
        assert!(!parse_everything(&text, now), "seed {seed}");
    }
    // Real files edited: bytes replaced, inserted, removed, truncated, or JSON-ish text spliced
    // in. Some edits still parse (for example inside a signature); none may panic.
    const SPLICES: [&[u8]; 8] = [b"{", b"}", b"[", b"\"", b"\\u", b"1e999", b"-0", b"null"];
    let originals = [ROOT, TARGETS, SNAPSHOT, TIMESTAMP];
    let mut parsed = 0;
    for _ in 0..3_000 {
        let mut bytes = originals[rng.below(originals.len())].to_vec();
        for _ in 0..=rng.below(3) {
            let at = rng.below(bytes.len());
            match rng.below(5) {
                0 => bytes[at] = rng.byte(),
                1 => bytes.insert(at, rng.byte()),
                2 => {
                    bytes.remove(at);
                }
                3 => bytes.truncate(at),
                _ => {
                    let splice = SPLICES[rng.below(SPLICES.len())];
                    bytes.splice(at..at, splice.iter().copied());
                }
            }
            if bytes.is_empty() {
                bytes.push(b'{');
            }
        }
        parsed += usize::from(parse_everything(&bytes, now));
    }
    // The edits reach the deep parsers: some of them leave a file that still parses.
    assert!(parsed > 0, "no edited file parsed, so the typed parsers were never reached");
    // And the unedited files pass all the way.
    for original in originals {
        assert!(parse_everything(original, now));
    }
}

/// A target entry: a SHA-256 (or, one time in four, only a SHA-512) of a few possible digests, a
/// few possible lengths, sometimes a `custom` value; so that two entries are often equal.
fn target_entry(rng: &mut Rng) -> Value {
    use base64::Engine as _;
    let encode = |bytes: &[u8]| Value::String(base64::engine::general_purpose::STANDARD.encode(bytes));
    let fill = u8::try_from(rng.below(3)).unwrap();
    let mut hashes = Map::new();
    if rng.below(4) == 0 {
        hashes.insert("sha512".into(), encode(&[fill; 64]));
    } else {
        hashes.insert("sha256".into(), encode(&[fill; 32]));
    }
    let mut entry = Map::new();
    entry.insert("hashes".into(), Value::Object(hashes));
    entry.insert("length".into(), Value::from(rng.below(3)));
    if rng.below(4) == 0 {
        entry.insert("custom".into(), Value::String(string(rng)));
    }
    Value::Object(entry)
}

/// A targets file listing `targets`, unsigned (the record's readers do not check signatures).
fn targets_file(targets: &Map<String, Value>) -> Vec<u8> {
    let mut body = Map::new();
    body.insert("_type".into(), Value::String("Targets".into()));
    body.insert("expires".into(), Value::String("2030-01-01T00:00:00Z".into()));
    body.insert("targets".into(), Value::Object(targets.clone()));
    body.insert("version".into(), Value::from(1));
    envelope(&to_canonical(&Value::Object(body)).unwrap(), &[])
}

/// The change the naive diff expects for `entry`, read from its JSON.
fn expected_change(name: &str, kind: ChangeKind, entry: &Value) -> TargetChange {
    use base64::Engine as _;
    let sha256 = entry["hashes"]
        .get("sha256")
        .and_then(Value::as_str)
        .map(|digest| hex::encode(base64::engine::general_purpose::STANDARD.decode(digest).unwrap()));
    TargetChange {
        name: name.to_owned(),
        kind,
        sha256,
        length: entry["length"].as_i64(),
        previous_sha256: None,
        previous_length: None,
    }
}

#[test]
fn the_one_pass_merge_of_two_targets_files_agrees_with_a_diff_of_their_maps() {
    for seed in 0..500 {
        let mut rng = Rng::new(seed);
        // Names from a small pool (so both files often share them) plus arbitrary ones.
        let mut names: Vec<String> = (0..rng.below(6)).map(|_| string(&mut rng)).collect();
        names.extend(["a", "a/b", "b", "é"].map(str::to_owned));
        let pick = |rng: &mut Rng| -> Map<String, Value> {
            (0..rng.below(8)).map(|_| (names[rng.below(names.len())].clone(), target_entry(rng))).collect()
        };
        let (before, after) = (pick(&mut rng), pick(&mut rng));
        let all: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
        let mut expected = Vec::new();
        for name in all {
            match (before.get(name), after.get(name)) {
                (None, Some(entry)) => expected.push(expected_change(name, ChangeKind::Added, entry)),
                (Some(entry), None) => expected.push(expected_change(name, ChangeKind::Removed, entry)),
                (Some(old), Some(new)) if old != new => {
                    let previous = expected_change(name, ChangeKind::Changed, old);
                    let mut change = expected_change(name, ChangeKind::Changed, new);
                    change.previous_sha256 = previous.sha256;
                    change.previous_length = previous.length;
                    expected.push(change);
                }
                _ => {}
            }
        }
        let (old_file, new_file) = (targets_file(&before), targets_file(&after));
        assert_eq!(target_changes(Some(&old_file), &new_file), Ok(expected), "seed {seed}");
        let all_added: Vec<TargetChange> =
            after.iter().map(|(name, entry)| expected_change(name, ChangeKind::Added, entry)).collect();
        assert_eq!(targets_of(&new_file), Ok(all_added), "seed {seed}");
    }
}
