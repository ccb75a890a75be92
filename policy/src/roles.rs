//! Which Notary roles must have signed a tag: none in particular (the top-level `targets` role or any delegation,
//! as notary's client takes the highest-priority signed target), all of a list, or at least k of n.

use std::collections::BTreeSet;

/// The longest role name accepted, in bytes (notary-server's limit on a delegation path is far above any real one).
pub(crate) const MAX_ROLE_LEN: usize = 255;

/// The signing roles a tag needs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RoleRequirement {
    /// Any role: the top-level `targets` role or any delegation.
    #[default]
    Any,
    /// Every one of these roles.
    AllOf(Vec<String>),
    /// At least `min` of these roles.
    AtLeast {
        /// The candidate roles.
        roles: Vec<String>,
        /// How many of them must have signed (1 ≤ min ≤ roles.len()).
        min: usize,
    },
}

impl RoleRequirement {
    /// Checks the roles that signed the resolved target (`signed_by`, as the verifier found them) against this
    /// requirement.
    ///
    /// # Errors
    /// A reason a person understands, such as "not signed by targets/qa; signed only by targets/releases".
    pub fn check(&self, signed_by: &[&str]) -> Result<(), String> {
        let signed: BTreeSet<&str> = signed_by.iter().copied().collect();
        let signed_text = || {
            if signed.is_empty() {
                "not signed by any role".to_owned()
            } else {
                format!("signed only by {}", signed.iter().copied().collect::<Vec<_>>().join(", "))
            }
        };
        match self {
            Self::Any if signed.is_empty() => Err("not signed by any role".to_owned()),
            Self::Any => Ok(()),
            Self::AllOf(roles) => {
                let missing: Vec<&str> =
                    roles.iter().map(String::as_str).filter(|role| !signed.contains(role)).collect();
                if missing.is_empty() {
                    Ok(())
                } else {
                    Err(format!("not signed by {}; {}", missing.join(", "), signed_text()))
                }
            }
            Self::AtLeast { roles, min } => {
                let count = roles.iter().filter(|role| signed.contains(role.as_str())).count();
                if count >= *min {
                    Ok(())
                } else {
                    Err(format!(
                        "signed by {count} of the roles {} but {min} are required; {}",
                        roles.join(", "),
                        signed_text()
                    ))
                }
            }
        }
    }
}

/// Checks a role name a policy may require: `targets` or a delegation `targets/<name>[/<name>…]` whose segments are
/// non-empty, not `.` or `..`, and printable ASCII without spaces.
///
/// # Errors
/// A sentence saying what is wrong.
pub fn check_role_name(role: &str) -> Result<(), String> {
    if role.len() > MAX_ROLE_LEN {
        return Err(format!("role name is {} bytes long; at most {MAX_ROLE_LEN} are allowed", role.len()));
    }
    if role == "targets" {
        return Ok(());
    }
    let valid = role.strip_prefix("targets/").is_some_and(|rest| {
        rest.split('/').all(|segment| {
            !segment.is_empty()
                && segment != "."
                && segment != ".."
                && segment.bytes().all(|byte| byte.is_ascii_graphic())
        })
    });
    if valid {
        Ok(())
    } else {
        Err(format!("role {role:?} is not \"targets\" or a delegation named \"targets/<name>\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roles(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn any_role() {
        assert_eq!(RoleRequirement::Any.check(&["targets"]), Ok(()));
        assert_eq!(RoleRequirement::Any.check(&["targets/releases"]), Ok(()));
        assert_eq!(RoleRequirement::Any.check(&[]), Err("not signed by any role".to_owned()));
    }

    #[test]
    fn all_of() {
        let requirement = RoleRequirement::AllOf(roles(&["targets/releases", "targets/qa"]));
        assert_eq!(requirement.check(&["targets/qa", "targets/releases"]), Ok(()));
        assert_eq!(
            requirement.check(&["targets/releases"]),
            Err("not signed by targets/qa; signed only by targets/releases".to_owned())
        );
        assert_eq!(
            requirement.check(&[]),
            Err("not signed by targets/releases, targets/qa; not signed by any role".to_owned())
        );
        assert_eq!(
            requirement.check(&["targets", "targets/dev"]),
            Err("not signed by targets/releases, targets/qa; signed only by targets, targets/dev".to_owned())
        );
    }

    #[test]
    fn at_least() {
        let requirement = RoleRequirement::AtLeast { roles: roles(&["targets/a", "targets/b", "targets/c"]), min: 2 };
        assert_eq!(requirement.check(&["targets/a", "targets/c"]), Ok(()));
        assert_eq!(requirement.check(&["targets/a", "targets/b", "targets/c"]), Ok(()));
        // The same role twice counts once.
        assert_eq!(
            requirement.check(&["targets/a", "targets/a", "targets/x"]),
            Err("signed by 1 of the roles targets/a, targets/b, targets/c but 2 are required; signed only by \
                 targets/a, targets/x"
                .to_owned())
        );
    }

    #[test]
    fn role_names() {
        assert_eq!(check_role_name("targets"), Ok(()));
        assert_eq!(check_role_name("targets/releases"), Ok(()));
        assert_eq!(check_role_name("targets/team/qa"), Ok(()));
        for bad in ["root", "targets/", "targets//a", "targets/../root", "targets/a b", "snapshot", "Targets/a"] {
            assert_eq!(
                check_role_name(bad),
                Err(format!("role {bad:?} is not \"targets\" or a delegation named \"targets/<name>\"")),
                "{bad}"
            );
        }
    }
}
