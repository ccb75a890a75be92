//! The Docker Engine authorization plugin's decision: an `AuthZPlugin.AuthZReq` request in, an allow or a denial
//! naming the rule and the reason out, as a pure function of the request, the policy, the verifier and what the
//! daemon says about local images ([`decide`]).
//!
//! Routes checked (after the `/v1.NN` prefix is removed and the path decoded and cleaned as the daemon's router
//! sees it): `POST /images/create` (a pull of `fromImage`/`tag` is verified; without `fromImage` it is an import),
//! `POST /containers/create` (run options, then the image by tag, digest or local image ID), `POST
//! /containers/{id}/start` with a body (API versions below 1.24 still take a HostConfig there), `POST
//! /containers/{id}/exec`, `POST /volumes/create`, `POST /images/load`, and `POST /build`, `/session` and `/grpc`
//! (BuildKit's ways in). Everything else is allowed. A route that needs its body is denied when the daemon did not forward it (it forwards only JSON bodies
//! under 1 MiB).

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tufa_policy::{
    Denial, ImageRef, Policy, check_container_create, check_exec_create, check_service_spec, check_volume_create,
};

use crate::gate::{self, Failure, Judgement};
use crate::{DaemonClient, ImageVerifier, Verdict};

/// An `AuthZPlugin.AuthZReq` (or `AuthZRes`) request as dockerd sends it; fields it leaves out or sends as `null`
/// are `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct AuthzRequest {
    /// The authenticated user (empty without TLS client authentication).
    #[serde(rename = "User", default)]
    pub user: Option<String>,
    /// How the user was authenticated.
    #[serde(rename = "UserAuthNMethod", default)]
    pub user_authn_method: Option<String>,
    /// The HTTP method.
    #[serde(rename = "RequestMethod", default)]
    pub request_method: Option<String>,
    /// The request URI as sent: path and query, with the API version prefix (`RequestUri` on the wire, as dockerd
    /// spells it; `RequestURI` is accepted too).
    #[serde(rename = "RequestUri", alias = "RequestURI", default)]
    pub request_uri: Option<String>,
    /// The request headers, one value per name.
    #[serde(rename = "RequestHeaders", default)]
    pub request_headers: Option<BTreeMap<String, String>>,
    /// The request body, base64; only present for JSON bodies under 1 MiB.
    #[serde(rename = "RequestBody", default)]
    pub request_body: Option<String>,
}

/// The plugin's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthzResponse {
    /// Whether the daemon may go on.
    #[serde(rename = "Allow")]
    pub allow: bool,
    /// Why it was denied (shown to the user).
    #[serde(rename = "Msg")]
    pub msg: String,
    /// An error of the plugin itself (the daemon then refuses the request).
    #[serde(rename = "Err")]
    pub err: String,
}

impl AuthzResponse {
    /// An allow.
    pub fn allow() -> Self {
        Self { allow: true, msg: String::new(), err: String::new() }
    }

    /// A denial; `message` gets the `tufa: ` prefix.
    pub fn deny(message: &str) -> Self {
        Self { allow: false, msg: format!("tufa: {message}"), err: String::new() }
    }
}

/// The request's route, decoded and cleaned.
struct Route {
    /// Path segments after the version prefix.
    segments: Vec<String>,
    /// Query parameters in order, decoded.
    query: Vec<(String, String)>,
}

impl Route {
    /// The first value of `name`, as Go's `Request.FormValue` returns it (empty when absent).
    fn param(&self, name: &str) -> &str {
        self.query.iter().find(|(key, _)| key == name).map_or("", |(_, value)| value.as_str())
    }
}

/// Decodes `%XX` escapes (and `+` as space when `plus` is set); `None` for a bad escape or invalid UTF-8.
fn percent_decode(text: &str, plus: bool) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        match byte {
            b'%' => {
                let hex = text.get(index + 1..index + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                index += 3;
            }
            b'+' if plus => {
                out.push(b' ');
                index += 1;
            }
            other => {
                out.push(other);
                index += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Parses the request URI: the path decoded, cleaned (`.`, `..` and empty segments removed) and stripped of a
/// `/vN.NN` prefix; the query decoded as Go's `url.ParseQuery` does (pairs with a `;` are dropped).
fn parse_uri(uri: &str) -> Result<Route, String> {
    // Go's server also takes the absolute form (`http://host/v1.41/containers/create`) and routes on its path.
    let relative = if uri.starts_with('/') {
        uri
    } else if let Some((_, after_scheme)) = uri.split_once("://") {
        match after_scheme.find(['/', '?']) {
            Some(index) if after_scheme.get(index..index + 1) == Some("/") => after_scheme.get(index..).unwrap_or("/"),
            Some(index) => after_scheme.get(index..).unwrap_or_default(),
            None => "/",
        }
    } else {
        return Err(format!("the request URI {uri:?} is neither a path nor an absolute URL"));
    };
    let (path, query) = relative.split_once('?').unwrap_or((relative, ""));
    let decoded = percent_decode(path, false).ok_or_else(|| format!("the request path {path:?} cannot be decoded"))?;
    let mut segments: Vec<String> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other.to_owned()),
        }
    }
    if segments.first().is_some_and(|first| {
        first.strip_prefix('v').is_some_and(|version| {
            !version.is_empty()
                && version.bytes().all(|byte| byte.is_ascii_digit() || byte == b'.')
                && version.bytes().any(|byte| byte.is_ascii_digit())
        })
    }) {
        segments.remove(0);
    }
    let mut pairs = Vec::new();
    for pair in query.split('&') {
        if pair.is_empty() || pair.contains(';') {
            continue;
        }
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(key, true).ok_or_else(|| format!("the query parameter {key:?} cannot be decoded"))?;
        let value = percent_decode(value, true)
            .ok_or_else(|| format!("the value of query parameter {key:?} cannot be decoded"))?;
        pairs.push((key, value));
    }
    Ok(Route { segments, query: pairs })
}

/// The header `name`, compared case-insensitively.
fn header<'a>(request: &'a AuthzRequest, name: &str) -> Option<&'a str> {
    request
        .request_headers
        .as_ref()?
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.trim())
}

/// Whether the request carried a body, judged from its headers (dockerd drops `Transfer-Encoding`, so a chunked
/// JSON body shows only as its `Content-Type`).
fn has_body(request: &AuthzRequest) -> bool {
    let length = header(request, "Content-Length").is_some_and(|length| length.parse::<u64>().map_or(true, |n| n > 0));
    let chunked = header(request, "Transfer-Encoding").is_some();
    let json =
        header(request, "Content-Type").is_some_and(|kind| kind.to_ascii_lowercase().starts_with("application/json"));
    length || chunked || json
}

/// The forwarded body, decoded and parsed as the daemon reads it; `Ok(None)` when there was no body at all.
fn body_json(request: &AuthzRequest) -> Result<Option<Value>, String> {
    let encoded = request.request_body.as_deref().unwrap_or_default();
    if encoded.is_empty() {
        if has_body(request) {
            return Err("request body not visible to the plugin (over 1 MiB?)".to_owned());
        }
        return Ok(None);
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|error| format!("the forwarded request body is not valid base64: {error}"))?;
    let value: Value =
        serde_json::from_slice(&bytes).map_err(|error| format!("the request body is not valid JSON: {error}"))?;
    crate::fold::canonicalise(value).map(Some)
}

/// The denial of a run-option rule: "tufa: <reason> (<rule>)", the rule left out when the reason names it.
fn run_option_denial(denial: &Denial) -> AuthzResponse {
    if denial.reason.contains(&denial.rule) {
        AuthzResponse::deny(&denial.reason)
    } else {
        AuthzResponse::deny(&format!("{} ({})", denial.reason, denial.rule))
    }
}

/// Turns a judgement of `shown` into an answer, logging permissive and fail-open allowances.
fn answer(request: &AuthzRequest, shown: &str, judgement: &Judgement) -> AuthzResponse {
    match judgement {
        Judgement::Skipped(_) | Judgement::Trusted(_) => AuthzResponse::allow(),
        Judgement::Warned(failure) => {
            tracing::warn!(
                target: "tufa::audit",
                user = request.user.as_deref().unwrap_or_default(),
                uri = request.request_uri.as_deref().unwrap_or_default(),
                image = shown,
                rule = failure.rule.as_str(),
                reason = failure.reason.as_str(),
                "the Docker authorization plugin allowed an image that failed its checks"
            );
            AuthzResponse::allow()
        }
        Judgement::Denied(failure) => AuthzResponse::deny(&failure.sentence(shown)),
    }
}

/// Decides an `AuthZReq`.
pub async fn decide(
    request: &AuthzRequest,
    policy: &Policy,
    verifier: &dyn ImageVerifier,
    daemon: &dyn DaemonClient,
) -> AuthzResponse {
    let method = request.request_method.as_deref().unwrap_or_default();
    if !method.eq_ignore_ascii_case("POST") {
        return AuthzResponse::allow();
    }
    let route = match parse_uri(request.request_uri.as_deref().unwrap_or_default()) {
        Ok(route) => route,
        Err(reason) => return AuthzResponse::deny(&format!("{reason} (request)")),
    };
    let segments: Vec<&str> = route.segments.iter().map(String::as_str).collect();
    let rules = policy.run_options();
    match segments.as_slice() {
        ["images", "create"] => images_create(request, &route, policy, verifier).await,
        ["images", "load"] => rules.check_load().map_or_else(|denial| run_option_denial(&denial), |()| allow()),
        // BuildKit reaches the daemon's builder through /session and /grpc as well as /build.
        ["build" | "session" | "grpc"] => match rules.check_build() {
            Err(denial) => run_option_denial(&denial),
            // RUN steps of `docker build --network host` share the host's network namespace.
            Ok(()) if route.param("networkmode").eq_ignore_ascii_case("host") && !rules.host_network => {
                AuthzResponse::deny("docker build --network host is not allowed by run-options.host-network")
            }
            Ok(()) => allow(),
        },
        ["containers", "create"] => containers_create(request, policy, verifier, daemon).await,
        ["containers", _, "start"] => match body_json(request) {
            Err(reason) => AuthzResponse::deny(&format!("{reason} (request)")),
            Ok(None | Some(Value::Null)) => allow(),
            // API versions below 1.24 apply a HostConfig sent with start; check it as a create would.
            Ok(Some(host_config)) => {
                let body = serde_json::json!({ "HostConfig": host_config });
                check_container_create(&body, rules).map_or_else(|denial| run_option_denial(&denial), |()| allow())
            }
        },
        ["containers", _, "exec"] => with_body(request, |body| check_exec_create(body, rules)),
        ["volumes", "create"] => with_body(request, |body| check_volume_create(body, rules)),
        ["swarm", "init" | "join"] => rules
            .check_swarm("joining or starting a swarm")
            .map_or_else(|denial| run_option_denial(&denial), |()| allow()),
        ["services", "create"] | ["services", _, "update"] => service(request, policy, verifier, daemon).await,
        ["plugins", "pull" | "create"] => {
            rules.check_plugins("installing a plugin").map_or_else(|denial| run_option_denial(&denial), |()| allow())
        }
        // Plugin names may hold slashes: /plugins/{name}/upgrade, /plugins/{name}/set.
        ["plugins", .., "upgrade" | "set"] => rules
            .check_plugins("upgrading or reconfiguring a plugin")
            .map_or_else(|denial| run_option_denial(&denial), |()| allow()),
        _ => allow(),
    }
}

fn allow() -> AuthzResponse {
    AuthzResponse::allow()
}

/// The body of `request` (called `what` in the denial), or the denial when it is missing or unreadable.
fn required_body(request: &AuthzRequest, what: &str) -> Result<Value, AuthzResponse> {
    match body_json(request) {
        Err(reason) => Err(AuthzResponse::deny(&format!("{reason} (request)"))),
        Ok(None) => Err(AuthzResponse::deny(&format!("{what} has no body to check (request)"))),
        Ok(Some(body)) => Ok(body),
    }
}

/// Runs a run-option check over the request's body, denying when the body is missing or unreadable.
fn with_body(request: &AuthzRequest, check: impl FnOnce(&Value) -> Result<(), Denial>) -> AuthzResponse {
    match required_body(request, "the request") {
        Err(denial) => denial,
        Ok(body) => check(&body).map_or_else(|denial| run_option_denial(&denial), |()| allow()),
    }
}

/// `POST /services/create` and `/services/{id}/update`: swarm mode and the service's options, then its image, judged
/// as a pull (every node pulls it without asking the plugin).
async fn service(
    request: &AuthzRequest,
    policy: &Policy,
    verifier: &dyn ImageVerifier,
    daemon: &dyn DaemonClient,
) -> AuthzResponse {
    let body = match required_body(request, "the service request") {
        Ok(body) => body,
        Err(denial) => return denial,
    };
    let spec = match check_service_spec(&body, policy.run_options()) {
        Ok(spec) => spec,
        Err(denial) => return run_option_denial(&denial),
    };
    // The Docker CLI names networks by ID: ask the daemon which of them is the host network.
    for network in &spec.networks {
        match daemon.network_driver(network).await {
            Ok(Some(driver)) if driver.eq_ignore_ascii_case("host") => {
                return AuthzResponse::deny(&format!(
                    "--network host is not allowed by run-options.host-network (network {network} is the host network)"
                ));
            }
            Ok(_) => {}
            Err(reason) => {
                return AuthzResponse::deny(&format!(
                    "cannot tell whether network {network} is the host network: {reason} (run-options.host-network)"
                ));
            }
        }
    }
    let Some(typed) = spec.image else {
        return allow();
    };
    let image = match ImageRef::parse(typed) {
        Ok(image) => image,
        Err(error) => {
            return AuthzResponse::deny(&format!("the service image {typed:?} is not valid: {error} (request)"));
        }
    };
    let judgement = gate::judge(&image, policy, verifier).await;
    answer(request, &image.to_string(), &judgement)
}

/// `POST /images/create`: a pull of `fromImage` (with `tag`, which may be a digest) or, without `fromImage`, an
/// import.
async fn images_create(
    request: &AuthzRequest,
    route: &Route,
    policy: &Policy,
    verifier: &dyn ImageVerifier,
) -> AuthzResponse {
    // The daemon reads parameters from a form body too, which it never forwards to the plugin.
    if header(request, "Content-Type")
        .is_some_and(|kind| kind.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"))
    {
        return AuthzResponse::deny("image parameters sent in a form body are not visible to the plugin (request)");
    }
    let from_image = route.param("fromImage");
    if from_image.is_empty() {
        return policy.run_options().check_import().map_or_else(|denial| run_option_denial(&denial), |()| allow());
    }
    let typed = from_image.strip_suffix(':').unwrap_or(from_image);
    let tag = route.param("tag");
    let name_only = !typed.contains('@') && !typed.rsplit('/').next().unwrap_or_default().contains(':');
    let image = match pull_reference(typed, tag) {
        Ok(image) => image,
        Err(reason) => return AuthzResponse::deny(&format!("cannot pull {from_image:?}: {reason} (request)")),
    };
    let shown = image.to_string();
    if tag.is_empty() && name_only {
        // Without a tag the daemon pulls every tag of the repository, which cannot be verified as one image.
        let judgement = match gate::precheck(&image, policy) {
            Err(judgement) => judgement,
            Ok(decision) => gate::under_mode(
                decision.mode,
                Failure {
                    rule: format!("mode {} by {}", decision.mode, decision.mode_origin),
                    reason: "pulling every tag (docker pull --all-tags) cannot be verified; pull one tag or digest"
                        .to_owned(),
                    untrusted: true,
                },
            ),
        };
        return answer(request, &image.gun(), &judgement);
    }
    let judgement = gate::judge(&image, policy, verifier).await;
    answer(request, &shown, &judgement)
}

/// The reference the daemon pulls for `fromImage` and `tag`: a tag parameter that parses as a digest pins the
/// repository to it, any other replaces the tag.
fn pull_reference(from_image: &str, tag: &str) -> Result<ImageRef, String> {
    let image = ImageRef::parse(from_image).map_err(|error| error.to_string())?;
    if tag.is_empty() {
        return Ok(image);
    }
    if tag.contains(':') {
        let bare = image.with_tag("latest").map_err(|error| error.to_string())?;
        return ImageRef::parse(&format!("{}@{tag}", bare.gun())).map_err(|error| error.to_string());
    }
    let tagged = image.with_tag(tag).map_err(|error| error.to_string())?;
    match image.digest() {
        Some(digest) => tagged.with_digest(digest).map_err(|error| error.to_string()),
        None => Ok(tagged),
    }
}

/// Whether `text` reads as a local image ID: `sha256:` and hex, or hex alone (a full or short ID). The daemon tries
/// such a string as a name first and then as an ID prefix, so it is judged by the names of the image it finds.
fn id_like(text: &str) -> bool {
    let hex = text.strip_prefix("sha256:").unwrap_or(text);
    !hex.is_empty() && hex.len() <= 64 && hex.bytes().all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
}

/// `POST /containers/create`: the run options, then the image.
async fn containers_create(
    request: &AuthzRequest,
    policy: &Policy,
    verifier: &dyn ImageVerifier,
    daemon: &dyn DaemonClient,
) -> AuthzResponse {
    let body = match required_body(request, "the container create request") {
        Ok(body) => body,
        Err(denial) => return denial,
    };
    if let Err(denial) = check_container_create(&body, policy.run_options()) {
        return run_option_denial(&denial);
    }
    // dockerd 20.10 also reads HostConfig fields from the top level of the body (a deprecated embedded HostConfig)
    // and uses them when the body has no HostConfig, so the top level is checked as a HostConfig too.
    if let Value::Object(top) = &body {
        let mut outer = top.clone();
        outer.remove("HostConfig");
        if let Err(denial) = check_container_create(&serde_json::json!({ "HostConfig": outer }), policy.run_options()) {
            return run_option_denial(&denial);
        }
    }
    let typed = match body.get("Image") {
        Some(Value::String(image)) if !image.is_empty() => image.as_str(),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            return AuthzResponse::deny("the container create body names no image (request)");
        }
        Some(_) => return AuthzResponse::deny("the container create body's Image must be a string (request)"),
    };
    if id_like(typed) {
        return create_by_id(request, typed, policy, verifier, daemon).await;
    }
    let image = match ImageRef::parse(typed) {
        Ok(image) => image,
        Err(error) => {
            return AuthzResponse::deny(&format!("image {typed:?} is not a valid reference: {error} (request)"));
        }
    };
    let judgement = create_by_name(&image, typed, policy, verifier, daemon).await;
    answer(request, &image.to_string(), &judgement)
}

/// Judges a create by name: the name must be trusted, and the local image it names must carry the signed digest
/// among its RepoDigests (a retagged or rebuilt local image does not).
async fn create_by_name(
    image: &ImageRef,
    typed: &str,
    policy: &Policy,
    verifier: &dyn ImageVerifier,
    daemon: &dyn DaemonClient,
) -> Judgement {
    let judgement = gate::judge(image, policy, verifier).await;
    let Judgement::Trusted(verdict) = judgement else {
        return judgement;
    };
    match daemon.image_repo_digests(typed).await {
        Err(error) => gate::undecided(
            policy,
            policy.decide(image).mode,
            format!("the Docker daemon could not be asked about the image: {error}"),
        ),
        // The daemon has no such image and will answer 404; the pull that follows is checked on its own.
        Ok(None) => Judgement::Trusted(verdict),
        Ok(Some(names)) => local_is_signed(image, policy, &names, verdict),
    }
}

/// Keeps a trusted judgement of `image` only when the local image (known by `names`, its RepoTags and
/// RepoDigests) carries the signed digest.
fn local_is_signed(image: &ImageRef, policy: &Policy, names: &[String], verdict: Verdict) -> Judgement {
    let Some(signed) = verdict.digest.as_deref() else {
        return gate::after_trusted(
            image,
            policy,
            "the verifier gave no signed digest to compare the local image with".to_owned(),
        );
    };
    if carries_digest(names, image, signed) {
        return Judgement::Trusted(verdict);
    }
    let local: Vec<&str> = names.iter().map(String::as_str).filter(|name| name.contains('@')).collect();
    let local = if local.is_empty() { "none".to_owned() } else { local.join(", ") };
    gate::after_trusted(
        image,
        policy,
        format!(
            "the local image is not the signed content: {image} is signed as {signed}, but the local image's \
             repository digests are {local}"
        ),
    )
}

/// Whether one of the daemon's `names` is `image`'s repository at `digest`.
fn carries_digest(names: &[String], image: &ImageRef, digest: &str) -> bool {
    names
        .iter()
        .filter_map(|name| ImageRef::parse(name).ok())
        .any(|name| name.gun() == image.gun() && name.digest() == Some(digest))
}

/// Judges a create by local image ID: allowed when one of the image's names is trusted (a tag whose signed digest
/// is among the image's RepoDigests, or a RepoDigest that is signed).
async fn create_by_id(
    request: &AuthzRequest,
    typed: &str,
    policy: &Policy,
    verifier: &dyn ImageVerifier,
    daemon: &dyn DaemonClient,
) -> AuthzResponse {
    let names = match daemon.image_repo_digests(typed).await {
        Err(error) => {
            let judgement = gate::undecided(
                policy,
                policy.mode(),
                format!("the Docker daemon could not be asked about the image: {error}"),
            );
            return answer(request, typed, &judgement);
        }
        // No such image: the daemon answers 404 (and the CLI pulls the name, which is checked on its own).
        Ok(None) => return AuthzResponse::allow(),
        Ok(Some(names)) => names,
    };
    let mut reasons = Vec::new();
    let mut warned = None;
    for name in &names {
        let Ok(image) = ImageRef::parse(name) else {
            continue;
        };
        let judgement = match gate::judge(&image, policy, verifier).await {
            Judgement::Trusted(verdict) if image.digest().is_none() => local_is_signed(&image, policy, &names, verdict),
            other => other,
        };
        match judgement {
            Judgement::Skipped(_) | Judgement::Trusted(_) => return AuthzResponse::allow(),
            Judgement::Warned(failure) => warned = Some(failure),
            Judgement::Denied(failure) => reasons.push(format!("{}: {}", image, failure.reason)),
        }
    }
    if let Some(failure) = warned {
        return answer(request, typed, &Judgement::Warned(failure));
    }
    let judgement = if reasons.is_empty() {
        gate::under_mode(
            policy.mode(),
            Failure {
                rule: format!("mode {} by content-trust.mode", policy.mode()),
                reason: "the local image has no repository tag or digest to verify".to_owned(),
                untrusted: true,
            },
        )
    } else {
        Judgement::Denied(Failure {
            rule: "every name of the image".to_owned(),
            reason: format!("none of its names is trusted ({})", reasons.join("; ")),
            untrusted: true,
        })
    };
    answer(request, typed, &judgement)
}

#[cfg(test)]
#[path = "authz_tests.rs"]
mod tests;
