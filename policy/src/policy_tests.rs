//! Tests of policy parsing, validation errors and decisions, including the MCR documentation's examples verbatim.

use super::*;

const KEY_A: &str = "0b6101527b2ac766702e4b40aa2391805b70e5031c04714c748f914e89014403";
const KEY_B: &str = "9430d6e31e3b3e240957a1b62bbc2d436aafa33726d0fcb50addbf7e2dfa2168";
const KEY_C: &str = "544cf09f294860f9d5bc953ad80b386063357fd206b37b541bb2c54166f38d08";
const KEY_D: &str = "70eb123c834fd4d2a591fc9a50f4a6d26598fb64a2f37a845296ebbcceae5e24";

fn image(text: &str) -> ImageRef {
    ImageRef::parse(text).unwrap()
}

fn pattern(text: &str) -> Pattern {
    Pattern::parse(text).unwrap()
}

fn ids(list: &[&str]) -> Vec<String> {
    list.iter().map(|id| (*id).to_owned()).collect()
}

/// The error for `text` as (line, column, message).
fn toml_error(text: &str) -> (Option<usize>, Option<usize>, String) {
    let error = Policy::from_toml_str(text).unwrap_err();
    (error.line, error.column, error.message)
}

fn json_error(text: &str) -> (Option<usize>, Option<usize>, String) {
    let error = Policy::from_json_str(text).unwrap_err();
    (error.line, error.column, error.message)
}

// ----- The MCR documentation's examples, verbatim. -----

#[test]
fn mcr_mode_only() {
    let policy = Policy::from_json_str(
        r#"{
    "content-trust": {
        "mode": "enforced"
    }
}"#,
    )
    .unwrap();
    let decision = policy.decide(&image("alpine"));
    assert_eq!(decision.mode, Mode::Enforced);
    assert_eq!(decision.mode_origin, Origin::ContentTrustMode);
    assert_eq!(decision.pin, RootPin::None);
    assert_eq!(decision.pin_origin, Origin::Default);
}

#[test]
fn mcr_official_library_images() {
    let policy = Policy::from_json_str(
        r#"{
  "content-trust": {
    "trust-pinning": {
      "official-library-images": true
    },
    "mode": "enforced"
  }
}"#,
    )
    .unwrap();
    let decision = policy.decide(&image("alpine:3.19"));
    assert_eq!(decision.pin, RootPin::RootKeys(ids(&OFFICIAL_LIBRARY_ROOT_KEYS)));
    assert_eq!(decision.pin_origin, Origin::OfficialLibraryImages);
    assert_eq!(decision.mode, Mode::Enforced);
    // Only docker.io/library/* is pinned.
    assert_eq!(policy.decide(&image("someone/app")).pin, RootPin::None);
    assert_eq!(policy.decide(&image("registry.example.com/library/alpine")).pin, RootPin::None);
}

#[test]
fn mcr_root_keys_with_wildcard() {
    let policy = Policy::from_json_str(
        r#"{
  "content-trust": {
    "trust-pinning": {
      "root-keys": {
         "mydtr/user1/*": [
           "0b6101527b2ac766702e4b40aa2391805b70e5031c04714c748f914e89014403"
         ]
      }
    },
    "mode": "enforced"
  }
}"#,
    )
    .unwrap();
    // The documentation's "mydtr" stands for a registry host; the pattern is compared with whole GUNs.
    assert_eq!(
        policy.root_keys,
        vec![(pattern("mydtr/user1/*"), ids(&[KEY_A]), Origin::RootKeys(pattern("mydtr/user1/*")))]
    );
    assert!(pattern("mydtr/user1/*").matches("mydtr/user1/repo1"));
    assert!(pattern("mydtr/user1/*").matches("mydtr/user1/repo2"));
    // A name Docker puts on docker.io does not match it.
    assert_eq!(policy.decide(&image("mydtr/user1/repo1")).pin, RootPin::None);
}

#[test]
fn mcr_cert_ids() {
    let policy = Policy::from_json_str(
        r#"{
  "content-trust": {
    "trust-pinning": {
      "cert-ids": {
         "mydtr/user1/repo1": [
           "9430d6e31e3b3e240957a1b62bbc2d436aafa33726d0fcb50addbf7e2dfa2168"
         ],
         "mydtr/user2/repo1": [
           "544cf09f294860f9d5bc953ad80b386063357fd206b37b541bb2c54166f38d08"
         ]
      }
    },
    "mode": "enforced"
  }
}"#,
    )
    .unwrap();
    assert_eq!(policy.cert_ids.get("mydtr/user1/repo1"), Some(&ids(&[KEY_B])));
    assert_eq!(policy.cert_ids.get("mydtr/user2/repo1"), Some(&ids(&[KEY_C])));
}

/// The offline example as the documentation prints it has a trailing comma, which JSON (and dockerd's own reader)
/// refuses; the error names its line.
#[test]
fn mcr_offline_example_verbatim_and_corrected() {
    let verbatim = r#"{
  "content-trust": {
    "trust-pinning": {
      "official-library-images": true,
      "root-keys": {
         "mydtr/user1/*": [
           "0b6101527b2ac766702e4b40aa2391805b70e5031c04714c748f914e89014403"
         ]
      },
      "cert-ids": {
         "mydtr/user2/repo1": [
           "9430d6e31e3b3e240957a1b62bbc2d436aafa33726d0fcb50addbf7e2dfa2168"
         ],
      }
    },
    "mode": "enforced",
    "allow-expired-cached-trust-data": true
  }
}"#;
    assert_eq!(json_error(verbatim), (Some(14), Some(7), "key must be a string".to_owned()));
    let corrected = verbatim.replace("         ],\n      }", "         ]\n      }");
    let policy = Policy::from_json_str(&corrected).unwrap();
    let decision = policy.decide(&image("alpine"));
    assert!(decision.allow_expired_cached);
    assert_eq!(decision.pin_origin, Origin::OfficialLibraryImages);
    assert_eq!(policy.cert_ids.get("mydtr/user2/repo1"), Some(&ids(&[KEY_B])));
}

/// The configurations of the engine's own trust-pinning integration test.
#[test]
fn engine_integration_test_configs() {
    let enforced = r#"{
                    "content-trust": {
                        "trust-pinning": {
                            "official-library-images":false,
                            "root-keys": {
                                "*":["70eb123c834fd4d2a591fc9a50f4a6d26598fb64a2f37a845296ebbcceae5e24"]
                            }
                        },
                        "mode":"enforced",
                        "allow-expired-cached-trust-data": true
                    }
                }"#;
    let policy = Policy::from_json_str(enforced).unwrap();
    let decision = policy.decide(&image("registry.example.com/anything:v1"));
    assert_eq!(decision.pin, RootPin::RootKeys(ids(&[KEY_D])));
    assert_eq!(decision.pin_origin, Origin::RootKeys(pattern("*")));
    // The engine accepts "abcd" and then fails to match it; Tufa refuses it at load, naming the line.
    let short = enforced.replace(KEY_D, "abcd").replace("\"enforced\"", "\"permissive\"");
    assert_eq!(json_error(&short), (Some(6), Some(38), "\"abcd\" is not a key ID (64 hexadecimal digits)".to_owned()));
}

// ----- Errors that name the line. -----

#[test]
fn empty_root_key_list_is_an_error() {
    let toml = "[content-trust]\nmode = \"enforced\"\n\n[content-trust.trust-pinning.root-keys]\n\"reg.io/*\" = []\n";
    assert_eq!(toml_error(toml), (Some(5), Some(14), "the list of root key IDs cannot be empty".to_owned()));
    let json =
        "{\n  \"content-trust\": {\n    \"trust-pinning\": {\n      \"root-keys\": {\"reg.io/*\": []}\n    }\n  }\n}";
    assert_eq!(json_error(json), (Some(4), Some(33), "the list of root key IDs cannot be empty".to_owned()));
    let cert = "[content-trust.trust-pinning.cert-ids]\n\"reg.io/app\" = []\n";
    assert_eq!(toml_error(cert), (Some(2), Some(16), "the list of certificate IDs cannot be empty".to_owned()));
}

/// An expected error: line, column and message.
type Expected = (Option<usize>, Option<usize>, &'static str);

#[test]
fn bad_values_name_their_line() {
    let cases: Vec<(&str, Expected)> = vec![
        (
            "[content-trust]\nmode = \"strict\"\n",
            (Some(2), Some(8), "unknown variant `strict`, expected one of `disabled`, `permissive`, `enforced`"),
        ),
        (
            "[content-trust]\nmod = \"enforced\"\n",
            (
                Some(2),
                Some(1),
                "unknown field `mod`, expected one of `mode`, `trust-pinning`, `allow-expired-cached-trust-data`",
            ),
        ),
        (
            "[content-trust.trust-pinning.root-keys]\n\"reg/*/x\" = [\"0b6101527b2ac766702e4b40aa2391805b70e5031c04714c748f914e89014403\"]\n",
            (Some(2), Some(13), "pattern \"reg/*/x\" may only have '*' as its last character"),
        ),
        (
            "[content-trust.trust-pinning.root-keys]\n\"reg/*\" = [\"0b6101527b2ac766702e4b40aa2391805b70e5031c04714c748f914e89014403\", \"xyz\"]\n",
            (Some(2), Some(80), "\"xyz\" is not a key ID (64 hexadecimal digits)"),
        ),
        (
            "[content-trust.trust-pinning.cert-ids]\n\"reg.io/*\" = [\"0b6101527b2ac766702e4b40aa2391805b70e5031c04714c748f914e89014403\"]\n",
            (Some(2), Some(14), "cert-ids names repositories exactly; the wildcard in \"reg.io/*\" is not supported"),
        ),
        (
            "[[rules]]\npattern = \"a/*\"\n\n[[rules]]\npattern = \"a/*\"\n",
            (Some(5), Some(11), "a rule for pattern \"a/*\" is already defined"),
        ),
        (
            "[[rules]]\npattern = \"a/*\"\nrequired-roles = { roles = [\"targets/a\", \"targets/b\"], min = 3 }\n",
            (Some(3), Some(62), "min must be between 1 and the number of roles (2)"),
        ),
        (
            "[[rules]]\npattern = \"a/*\"\nrequired-roles = [\"targets/a\", \"root\"]\n",
            (Some(3), Some(32), "role \"root\" is not \"targets\" or a delegation named \"targets/<name>\""),
        ),
        (
            "[[rules]]\npattern = \"a/*\"\nrequired-roles = \"targets/a\"\n",
            (
                Some(3),
                Some(18),
                "invalid type: string \"targets/a\", expected a list of roles (all required) or a table { roles = [...], min = N }",
            ),
        ),
        (
            "[[rules]]\npattern = \"a/*\"\nrequired-roles = { roles = [\"targets/a\"], minimum = 1 }\n",
            (Some(3), Some(43), "unknown field `minimum`, expected `roles` or `min`"),
        ),
        (
            "[registries]\nallowed = [\"docker.io\", \"not a host\"]\n",
            (Some(2), Some(25), "\"not a host\" is not a registry host[:port] (such as registry.example.com:5000)"),
        ),
        ("[trust-server]\nurl = \"ftp://x\"\n", (Some(2), Some(7), "\"ftp://x\" is not an http:// or https:// URL")),
        ("[trust-server]\nusername = \"ci\"\n", (Some(2), Some(12), "username needs password-file")),
        (
            "[trust-server]\nusername = \"ci\"\npassword-file = \"p\"\ntoken-file = \"t\"\n",
            (Some(4), Some(14), "use either token-file or username with password-file, not both"),
        ),
        ("[cache]\nrefresh-secs = 0\n", (Some(2), Some(16), "refresh-secs must be between 1 and 86400")),
        ("[cache]\nmax-repositories = -1\n", (Some(2), Some(20), "invalid value: integer `-1`, expected usize")),
        (
            "[exemptions]\nnamespaces = [\"Kube_System\"]\n",
            (Some(2), Some(15), "\"Kube_System\" is not a Kubernetes namespace name (a DNS label)"),
        ),
        (
            "[run-options]\ncapabilities = [\"NET_ADMIN\", \"NET_ADMN\"]\n",
            (Some(2), Some(30), "\"NET_ADMN\" is not a Linux capability (such as NET_ADMIN or CAP_NET_ADMIN) or ALL"),
        ),
        ("[run-options]\nbind-mounts = [\"data\"]\n", (Some(2), Some(16), "\"data\" is not an absolute path")),
        (
            "[run-options]\nprivilegd = true\n",
            (
                Some(2),
                Some(1),
                "unknown field `privilegd`, expected one of `privileged`, `host-pid`, `host-ipc`, `host-network`, `host-uts`, `host-userns`, `host-cgroupns`, `bind-mounts`, `seccomp-unconfined`, `apparmor-unconfined`, `selinux-unconfined`, `systempaths-unconfined`, `capabilities`, `devices`, `device-cgroup-rules`, `device-requests`, `load`, `import`, `build`, `privileged-exec`, `swarm`, `plugins`, `fail-open`",
            ),
        ),
        ("[content-trust\n", (Some(1), Some(15), "unclosed table, expected `]`")),
    ];
    for (text, (line, column, message)) in cases {
        assert_eq!(toml_error(text), (line, column, message.to_owned()), "{text}");
    }
}

#[test]
fn json_errors_name_their_line() {
    assert_eq!(
        json_error("{\n  \"content-trust\": {\n    \"mode\": \"enforcd\"\n  }\n}"),
        (
            Some(3),
            Some(21),
            "unknown variant `enforcd`, expected one of `disabled`, `permissive`, `enforced`".to_owned()
        )
    );
    assert_eq!(
        json_error("{\n  \"rules\": [\n    {\"pattern\": \"a/*\", \"required-roles\": [\"x\"]}\n  ]\n}"),
        (Some(3), Some(43), "role \"x\" is not \"targets\" or a delegation named \"targets/<name>\"".to_owned())
    );
    assert_eq!(
        json_error("{\n  \"content-trust\": {\"mode\": \"enforced\"},\n  \"cahce\": {}\n}"),
        (Some(3), Some(12), "unknown field `cahce`; did you mean `cache`?".to_owned())
    );
}

#[test]
fn edit_distances() {
    assert_eq!(edit_distance("cache", "cache"), 0);
    assert_eq!(edit_distance("cahce", "cache"), 2);
    assert_eq!(edit_distance("rule", "rules"), 1);
    assert_eq!(edit_distance("log-level", "cache"), 8);
    assert_eq!(edit_distance("", "abc"), 3);
}

#[test]
fn a_pattern_given_twice_is_an_error() {
    let json = format!(
        "{{\"content-trust\": {{\"trust-pinning\": {{\"root-keys\": {{\n  \"reg.io/*\": [\"{KEY_A}\"],\n  \"reg.io/*\": [\"{KEY_B}\"]\n}}}}}}}}"
    );
    assert_eq!(json_error(&json), (Some(3), Some(12), "\"reg.io/*\" is given twice".to_owned()));
    let toml = format!("[content-trust.trust-pinning.root-keys]\n\"a/*\" = [\"{KEY_A}\"]\n\"a/*\" = [\"{KEY_B}\"]\n");
    assert_eq!(toml_error(&toml).0, Some(3));
}

// ----- daemon.json -----

#[test]
fn whole_daemon_json_reads_only_content_trust() {
    let daemon = r#"{
  "log-level": "info",
  "storage-driver": "vfs",
  "authorization-plugins": ["tufa"],
  "content-trust": {
    "mode": "permissive",
    "trust-pinning": {"cert-ids": {"reg.io/app": ["9430d6e31e3b3e240957a1b62bbc2d436aafa33726d0fcb50addbf7e2dfa2168"]}}
  }
}"#;
    let policy = Policy::from_json_str(daemon).unwrap();
    let decision = policy.decide(&image("reg.io/app:v1"));
    assert_eq!(decision.mode, Mode::Permissive);
    assert_eq!(decision.pin, RootPin::CertIds(ids(&[KEY_B])));
    // Inside content-trust the checks stay strict.
    let typo = daemon.replace("\"mode\"", "\"mdoe\"");
    assert_eq!(json_error(&typo).0, Some(6));
    assert_eq!(
        json_error("{\"log-level\": \"info\"}"),
        (
            Some(1),
            Some(1),
            "this JSON has none of the policy's keys (content-trust, trust-server, cache, registries, rules, \
             exemptions, run-options) and no \"content-trust\" block"
                .to_owned()
        )
    );
    // A Tufa section next to an unknown key is a policy with a typo, not a daemon.json.
    assert_eq!(
        json_error("{\"cache\": {}, \"log-level\": \"info\"}").2,
        "unknown field `log-level`, expected one of `content-trust`, `trust-server`, `cache`, `registries`, `rules`, \
         `exemptions`, `run-options`"
    );
}

// ----- Decisions. -----

fn pinned_policy() -> Policy {
    Policy::from_toml_str(&format!(
        r#"
[content-trust]
mode = "enforced"
[content-trust.trust-pinning]
official-library-images = true
[content-trust.trust-pinning.root-keys]
"*" = ["{KEY_D}"]
"reg.io/*" = ["{KEY_A}"]
"reg.io/team/*" = ["{KEY_B}"]
"reg.io/team/app" = ["{KEY_C}"]
[content-trust.trust-pinning.cert-ids]
"reg.io/team/special" = ["{KEY_C}"]
"#
    ))
    .unwrap()
}

#[test]
fn most_specific_root_keys_win() {
    let policy = pinned_policy();
    let pin = |text: &str| {
        let decision = policy.decide(&image(text));
        (decision.pin, decision.pin_origin)
    };
    assert_eq!(
        pin("reg.io/team/app:v1"),
        (RootPin::RootKeys(ids(&[KEY_C])), Origin::RootKeys(pattern("reg.io/team/app")))
    );
    assert_eq!(
        pin("reg.io/team/other"),
        (RootPin::RootKeys(ids(&[KEY_B])), Origin::RootKeys(pattern("reg.io/team/*")))
    );
    assert_eq!(pin("reg.io/solo"), (RootPin::RootKeys(ids(&[KEY_A])), Origin::RootKeys(pattern("reg.io/*"))));
    assert_eq!(pin("other.io/x"), (RootPin::RootKeys(ids(&[KEY_D])), Origin::RootKeys(pattern("*"))));
    // docker.io/library/* (official) is more specific than "*".
    assert_eq!(pin("alpine").1, Origin::OfficialLibraryImages);
}

#[test]
fn cert_ids_take_priority_over_root_keys() {
    let policy = pinned_policy();
    let decision = policy.decide(&image("reg.io/team/special:v1"));
    assert_eq!(decision.pin, RootPin::CertIds(ids(&[KEY_C])));
    assert_eq!(decision.pin_origin, Origin::CertIds("reg.io/team/special".to_owned()));
}

#[test]
fn user_library_keys_override_the_official_ones() {
    let policy = Policy::from_toml_str(&format!(
        "[content-trust.trust-pinning]\nofficial-library-images = true\n[content-trust.trust-pinning.root-keys]\n\"docker.io/library/*\" = [\"{}\"]\n",
        KEY_A.to_uppercase()
    ))
    .unwrap();
    let decision = policy.decide(&image("busybox"));
    // Key IDs are kept in lowercase.
    assert_eq!(decision.pin, RootPin::RootKeys(ids(&[KEY_A])));
    assert_eq!(decision.pin_origin, Origin::RootKeys(pattern("docker.io/library/*")));
    assert_eq!(decision.mode, Mode::Disabled);
}

#[test]
fn rules_registries_and_exemptions() {
    let policy = Policy::from_toml_str(
        r#"
[content-trust]
mode = "permissive"
allow-expired-cached-trust-data = true

[registries]
allowed = ["reg.io", "index.docker.io", "localhost:5000"]

[[rules]]
pattern = "reg.io/*"
required-roles = ["targets/releases"]

[[rules]]
pattern = "reg.io/prod/*"
mode = "enforced"
require-digest = true
required-roles = { roles = ["targets/a", "targets/b", "targets/c"], min = 2 }

[exemptions]
namespaces = ["kube-system"]
images = ["reg.io/debug/*"]
"#,
    )
    .unwrap();
    let prod = policy.decide(&image("reg.io/prod/api:v3"));
    assert_eq!(prod.mode, Mode::Enforced);
    assert_eq!(prod.mode_origin, Origin::Rule(pattern("reg.io/prod/*")));
    assert!(prod.require_digest);
    assert_eq!(prod.rule, Some(pattern("reg.io/prod/*")));
    assert_eq!(
        prod.required,
        RoleRequirement::AtLeast { roles: ids(&["targets/a", "targets/b", "targets/c"]), min: 2 }
    );
    assert_eq!(
        prod.required.check(&["targets/a"]),
        Err("signed by 1 of the roles targets/a, targets/b, targets/c but 2 are required; signed only by targets/a"
            .to_owned())
    );
    assert!(prod.registry_allowed);
    assert!(prod.allow_expired_cached);
    assert_eq!(prod.exempt, None);

    let dev = policy.decide(&image("reg.io/dev/api"));
    assert_eq!((dev.mode, dev.mode_origin), (Mode::Permissive, Origin::ContentTrustMode));
    assert_eq!(dev.required, RoleRequirement::AllOf(ids(&["targets/releases"])));
    assert!(!dev.require_digest);
    assert_eq!(dev.rule, Some(pattern("reg.io/*")));

    let debug = policy.decide(&image("reg.io/debug/shell"));
    assert_eq!(debug.exempt, Some(pattern("reg.io/debug/*")));

    let hub = policy.decide(&image("alpine"));
    assert!(hub.registry_allowed);
    assert_eq!(hub.required, RoleRequirement::Any);
    assert_eq!(hub.rule, None);
    assert!(policy.decide(&image("localhost:5000/x")).registry_allowed);
    assert!(!policy.decide(&image("quay.io/x")).registry_allowed);

    assert!(policy.namespace_exempt("kube-system"));
    assert!(!policy.namespace_exempt("default"));
}

#[test]
fn defaults_without_a_policy_body() {
    let policy = Policy::from_toml_str("").unwrap();
    let decision = policy.decide(&image("alpine"));
    assert_eq!(
        decision,
        Decision {
            gun: "docker.io/library/alpine".to_owned(),
            mode: Mode::Disabled,
            mode_origin: Origin::ContentTrustMode,
            pin: RootPin::None,
            pin_origin: Origin::Default,
            required: RoleRequirement::Any,
            require_digest: false,
            rule: None,
            registry_allowed: true,
            exempt: None,
            allow_expired_cached: false,
        }
    );
    assert_eq!(policy.cache(), &CacheSettings::default());
    assert_eq!(policy.run_options(), &RunOptions::default());
    assert_eq!(policy.trust_server_url("docker.io"), "https://notary.docker.io");
    assert_eq!(policy.trust_server_url("reg.io:5000"), "https://reg.io:5000");
}

#[test]
fn trust_server_and_cache_with_paths_relative_to_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.toml");
    std::fs::write(
        &path,
        r#"
[trust-server]
url = "https://trust.example.com:4443"
ca = "ca.pem"
token-file = "/etc/tufa/token"

[trust-server.registries]
"reg.io" = "https://notary.reg.io"

[cache]
max-repositories = 10
refresh-secs = 30
max-staleness-secs = 600
state-dir = "state"
"#,
    )
    .unwrap();
    let policy = Policy::load(&path).unwrap();
    assert_eq!(
        policy.trust_server(),
        &TrustServer {
            url: Some("https://trust.example.com:4443".to_owned()),
            ca: Some(dir.path().join("ca.pem")),
            credentials: Credentials::Token { token_file: PathBuf::from("/etc/tufa/token") },
            registries: BTreeMap::from([("reg.io".to_owned(), "https://notary.reg.io".to_owned())]),
        }
    );
    assert_eq!(
        policy.cache(),
        &CacheSettings {
            max_repositories: 10,
            refresh_secs: 30,
            max_staleness_secs: 600,
            state_dir: Some(dir.path().join("state")),
        }
    );
    assert_eq!(policy.trust_server_url("reg.io"), "https://notary.reg.io");
    assert_eq!(policy.trust_server_url("docker.io"), "https://trust.example.com:4443");

    let password = Policy::from_toml_str("[trust-server]\nusername = \"ci\"\npassword-file = \"pw\"\n").unwrap();
    assert_eq!(
        password.trust_server().credentials,
        Credentials::Password { username: "ci".to_owned(), password_file: PathBuf::from("pw") }
    );
}

#[test]
fn load_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = dir.path().join("policy.yaml");
    std::fs::write(&yaml, "").unwrap();
    assert_eq!(
        Policy::load(&yaml).unwrap_err().to_string(),
        format!("{}: the policy file name must end in .toml or .json", yaml.display())
    );
    let toml = dir.path().join("policy.toml");
    std::fs::write(&toml, "[content-trust]\nmode = 1\n").unwrap();
    assert_eq!(
        Policy::load(&toml).unwrap_err().to_string(),
        format!("{}: line 2, column 8: wanted string or table", toml.display())
    );
    let daemon = dir.path().join("daemon.json");
    std::fs::write(&daemon, "{\"storage-driver\": \"vfs\", \"content-trust\": {\"mode\": \"permissive\"}}").unwrap();
    assert_eq!(Policy::load(&daemon).unwrap().mode(), Mode::Permissive);
    let missing = dir.path().join("missing.json");
    let error = Policy::load(&missing).unwrap_err();
    assert_eq!((error.file, error.line), (Some(missing), None));
}

/// The commented example in docs/policy.md parses and means what the document says.
#[test]
fn documented_example_parses() {
    let document = include_str!("../../docs/policy.md");
    let start = document.find("```toml\n").unwrap() + "```toml\n".len();
    let length = document[start..].find("```").unwrap();
    let policy = Policy::from_toml_str(&document[start..start + length]).unwrap();
    let decision = policy.decide(&image("registry.example.com/prod/api:v2"));
    assert_eq!(decision.mode, Mode::Enforced);
    assert!(decision.require_digest);
    assert_eq!(decision.required, RoleRequirement::AllOf(ids(&["targets/releases", "targets/qa"])));
    assert!(matches!(decision.pin, RootPin::RootKeys(_)));
    assert!(policy.namespace_exempt("kube-system"));
    assert!(!policy.run_options().privileged);
    assert!(!policy.run_options().fail_open);
}

#[test]
fn origins_read_well_in_reasons() {
    let cases = [
        (Origin::Default, "the default"),
        (Origin::ContentTrustMode, "content-trust.mode"),
        (Origin::Rule(pattern("reg.io/prod/*")), "rule \"reg.io/prod/*\""),
        (Origin::RootKeys(pattern("*")), "trust-pinning.root-keys \"*\""),
        (Origin::CertIds("reg.io/app".to_owned()), "trust-pinning.cert-ids \"reg.io/app\""),
        (Origin::OfficialLibraryImages, "trust-pinning.official-library-images"),
        (Origin::Exemption(pattern("reg.io/debug/*")), "exemptions.images \"reg.io/debug/*\""),
    ];
    for (origin, text) in cases {
        assert_eq!(origin.to_string(), text);
    }
    assert_eq!(Mode::Permissive.to_string(), "permissive");
}

#[test]
fn a_rule_can_switch_checks_off_for_its_pattern() {
    let policy = Policy::from_toml_str(
        "[content-trust]\nmode = \"enforced\"\n[[rules]]\npattern = \"reg.io/lab/*\"\nmode = \"disabled\"\n",
    )
    .unwrap();
    let lab = policy.decide(&image("reg.io/lab/x"));
    assert_eq!((lab.mode, lab.mode_origin), (Mode::Disabled, Origin::Rule(pattern("reg.io/lab/*"))));
    assert_eq!(policy.decide(&image("reg.io/prod/x")).mode, Mode::Enforced);
}

#[test]
fn prechecks_and_missing_pins() {
    let policy = Policy::from_toml_str(&format!(
        r#"
[content-trust.trust-pinning.root-keys]
"reg.io/*" = ["{KEY_A}"]
[registries]
allowed = ["reg.io"]
[[rules]]
pattern = "reg.io/prod/*"
require-digest = true
[exemptions]
images = ["quay.io/debug/*"]
"#
    ))
    .unwrap();
    let check = |text: &str| {
        let reference = image(text);
        policy.decide(&reference).precheck(&reference)
    };
    assert_eq!(check("reg.io/dev/api:v1"), Ok(()));
    assert_eq!(check(&format!("reg.io/prod/api@sha256:{}", "a".repeat(64))), Ok(()));
    assert_eq!(
        check("reg.io/prod/api:v1"),
        Err("rule \"reg.io/prod/*\" requires reg.io/prod/api to be named by digest (@sha256:…); reg.io/prod/api:v1 \
             names none"
            .to_owned())
    );
    assert_eq!(check("quay.io/x"), Err("registry quay.io is not in registries.allowed".to_owned()));
    assert_eq!(check("quay.io/debug/shell"), Ok(()));
    assert_eq!(policy.decide(&image("reg.io/x")).missing_pin_reason(), None);
    assert_eq!(
        policy.decide(&image("alpine")).missing_pin_reason(),
        Some(
            "no root key is pinned for docker.io/library/alpine: no trust-pinning.cert-ids or \
             trust-pinning.root-keys entry matches it"
                .to_owned()
        )
    );
}
