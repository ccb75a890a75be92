//! The one judgement of an image that every enforcement point shares: image exemptions, the mode, the policy's
//! precheck (allowed registries, `require-digest`), the verifier's verdict (a typed digest must be the signed one)
//! and fail-open.

use tufa_policy::{Decision, ImageRef, Mode, Policy};

use crate::{ImageVerifier, Verdict};

/// Why an image failed a check: the policy setting that applies and a reason a person understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The setting behind the outcome, such as `registries.allowed` or `mode enforced by content-trust.mode`.
    pub rule: String,
    /// The reason, such as the verifier's "tag v2 of … is not signed by targets/qa; signed only by targets/releases".
    pub reason: String,
    /// True when the image is untrusted (as opposed to not allowed for another reason).
    pub untrusted: bool,
}

impl Failure {
    /// The failure as a sentence about `image`: "image X is not trusted: <reason> (<rule>)".
    pub fn sentence(&self, image: &str) -> String {
        let what = if self.untrusted { "is not trusted" } else { "is not allowed" };
        format!("image {image} {what}: {} ({})", self.reason, self.rule)
    }
}

/// The outcome of judging one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judgement {
    /// Not checked: the image is exempt or content trust is disabled for it; the string says which.
    Skipped(String),
    /// Verified trusted; the verdict carries the signed digest.
    Trusted(Verdict),
    /// Failed, but allowed: permissive mode, or fail-open when the verifier could not decide.
    Warned(Failure),
    /// Denied.
    Denied(Failure),
}

impl Judgement {
    /// Whether the image may be used.
    pub fn allowed(&self) -> bool {
        !matches!(self, Self::Denied(_))
    }
}

/// The rule text for a failure under the decision's mode: "mode enforced by content-trust.mode".
fn mode_rule(decision: &Decision) -> String {
    format!("mode {} by {}", decision.mode, decision.mode_origin)
}

/// Turns a failure into a judgement under `mode`: denied when enforced, warned when permissive, skipped when
/// disabled.
pub(crate) fn under_mode(mode: Mode, failure: Failure) -> Judgement {
    match mode {
        Mode::Disabled => Judgement::Skipped("content trust is disabled".to_owned()),
        Mode::Permissive => Judgement::Warned(failure),
        Mode::Enforced => Judgement::Denied(failure),
    }
}

/// The checks that need no verification: exemption, mode, then the policy's own precheck (allowed registry,
/// `require-digest`). `Err` holds the final judgement.
pub(crate) fn precheck(image: &ImageRef, policy: &Policy) -> Result<Decision, Judgement> {
    let decision = policy.decide(image);
    if let Some(pattern) = &decision.exempt {
        return Err(Judgement::Skipped(format!("exempt by exemptions.images {:?}", pattern.as_str())));
    }
    if decision.mode == Mode::Disabled {
        return Err(Judgement::Skipped(format!("content trust is disabled by {}", decision.mode_origin)));
    }
    if let Err(reason) = decision.precheck(image) {
        return Err(under_mode(decision.mode, Failure { rule: mode_rule(&decision), reason, untrusted: false }));
    }
    Ok(decision)
}

/// A failure found after the verifier said trusted (the local image is not the signed content, ...), judged under
/// the image's mode; exemptions and registries were applied before.
pub(crate) fn after_trusted(image: &ImageRef, policy: &Policy, reason: String) -> Judgement {
    let decision = policy.decide(image);
    under_mode(decision.mode, Failure { rule: mode_rule(&decision), reason, untrusted: true })
}

/// A failure to learn something the decision needs (the daemon could not be asked, ...): allowed with a warning
/// under fail-open, else judged under `mode`.
pub(crate) fn undecided(policy: &Policy, mode: Mode, reason: String) -> Judgement {
    if policy.run_options().fail_open {
        return Judgement::Warned(Failure {
            rule: "run-options.fail-open".to_owned(),
            reason: format!("trust could not be decided: {reason}"),
            untrusted: true,
        });
    }
    under_mode(
        mode,
        Failure {
            rule: "run-options.fail-open is off".to_owned(),
            reason: format!("trust could not be decided: {reason}"),
            untrusted: true,
        },
    )
}

/// Judges `image` under `policy`, asking `verifier` when the policy says to verify.
///
/// In order: an exempt image is skipped; with mode disabled nothing else is checked; then the policy's precheck
/// (`registries.allowed`, `require-digest`), the verifier's verdict (an error counts as untrusted unless
/// `run-options.fail-open`), and a typed digest must equal the signed digest. Failures deny when the mode is
/// enforced and warn when it is permissive.
pub async fn judge(image: &ImageRef, policy: &Policy, verifier: &dyn ImageVerifier) -> Judgement {
    let decision = match precheck(image, policy) {
        Ok(decision) => decision,
        Err(judgement) => return judgement,
    };
    match verifier.verify(image).await {
        Err(error) => undecided(policy, decision.mode, error),
        Ok(verdict) if !verdict.trusted => {
            under_mode(decision.mode, Failure { rule: mode_rule(&decision), reason: verdict.reason, untrusted: true })
        }
        Ok(verdict) => match (image.digest(), verdict.digest.as_deref()) {
            (Some(typed), Some(signed)) if typed != signed => under_mode(
                decision.mode,
                Failure {
                    rule: mode_rule(&decision),
                    reason: format!("digest {typed} is not the signed digest {signed}"),
                    untrusted: true,
                },
            ),
            _ => Judgement::Trusted(verdict),
        },
    }
}
