//! Password hashing with Argon2id (RustCrypto's `argon2`), stored as PHC strings.
//!
//! Parameters are OWASP's first recommendation for Argon2id: 19 MiB of memory (m=19456 KiB), 2 passes
//! (t=2), one lane (p=1), with a 16-byte random salt and a 32-byte output. The PHC string records them, so
//! a later change of parameters still verifies old hashes. Verification reads the parameters from the
//! stored hash but refuses any above [`MAX_VERIFY_MEMORY_KIB`], [`MAX_VERIFY_PASSES`] and
//! [`MAX_VERIFY_LANES`], so a tampered hash cannot make a login take minutes. Passwords longer than
//! [`MAX_PASSWORD_LEN`] are refused before hashing. Callers keep passwords in `zeroize::Zeroizing` buffers
//! and lend them here as `&str`; nothing here copies them, and argon2's working memory is wiped after each
//! hash. Bounding how many hashes run at once is the caller's job (each takes 19 MiB and a core).
use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordHasher as _, PasswordVerifier as _, Version};
use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};

/// The longest password accepted, in bytes.
pub const MAX_PASSWORD_LEN: usize = 1024;

/// Argon2id memory per hash, in KiB (OWASP: 19 MiB).
pub const MEMORY_KIB: u32 = 19_456;

/// Argon2id passes over the memory (OWASP: 2).
pub const PASSES: u32 = 2;

/// Argon2id lanes (OWASP: 1).
pub const LANES: u32 = 1;

/// The most memory a stored hash may ask for when it is verified, in KiB (128 MiB).
pub const MAX_VERIFY_MEMORY_KIB: u32 = 131_072;

/// The most passes a stored hash may ask for when it is verified.
pub const MAX_VERIFY_PASSES: u32 = 8;

/// The most lanes a stored hash may ask for when it is verified.
pub const MAX_VERIFY_LANES: u32 = 8;

/// The salt length in bytes.
const SALT_LEN: usize = 16;

/// The hash output length in bytes.
const OUTPUT_LEN: usize = 32;

/// Why a password cannot be hashed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    /// The password is empty.
    #[error("the password is empty")]
    Empty,
    /// The password is longer than [`MAX_PASSWORD_LEN`].
    #[error("the password is {len} bytes long, more than the {max} accepted")]
    TooLong {
        /// The password's length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The system random generator failed to make a salt.
    #[error("the system random generator failed")]
    Random,
    /// Argon2 refused its input (not expected with these fixed parameters).
    #[error("password hashing failed: {0}")]
    Hashing(String),
}

/// The Argon2id hasher with the parameters above.
fn hasher() -> Result<Argon2<'static>, PasswordError> {
    let params = Params::new(MEMORY_KIB, PASSES, LANES, Some(OUTPUT_LEN))
        .map_err(|error| PasswordError::Hashing(error.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes a password with Argon2id and a fresh random salt, returning the PHC string to store
/// (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`).
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    if password.is_empty() {
        return Err(PasswordError::Empty);
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(PasswordError::TooLong { len: password.len(), max: MAX_PASSWORD_LEN });
    }
    let mut salt = [0_u8; SALT_LEN];
    SystemRandom::new().fill(&mut salt).map_err(|_| PasswordError::Random)?;
    let hash = hasher()?
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map_err(|error| PasswordError::Hashing(error.to_string()))?;
    Ok(hash.to_string())
}

/// Whether `password` matches the stored PHC string. False for a wrong password, and also for a hash that
/// is malformed, not Argon2id, or asks for more than the verification bounds; never panics.
pub fn verify_password(password: &str, phc: &str) -> bool {
    if password.is_empty() || password.len() > MAX_PASSWORD_LEN {
        return false;
    }
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    if hash.algorithm.as_str() != "argon2id" {
        return false;
    }
    let Ok(params) = Params::try_from(&hash) else {
        return false;
    };
    if params.m_cost() > MAX_VERIFY_MEMORY_KIB
        || params.t_cost() > MAX_VERIFY_PASSES
        || params.p_cost() > MAX_VERIFY_LANES
    {
        return false;
    }
    Argon2::default().verify_password(password.as_bytes(), &hash).is_ok()
}

/// Spends the time of a [`verify_password`] call and returns false, for a login whose principal does not
/// exist or has no password, so the answer's timing does not tell which names exist.
pub fn verify_without_hash(password: &str) -> bool {
    const FIXED_SALT: [u8; SALT_LEN] = *b"tufa-no-such-one";
    let length = password.len().min(MAX_PASSWORD_LEN);
    let input = password.as_bytes().get(..length).unwrap_or_default();
    let mut output = zeroize::Zeroizing::new([0_u8; OUTPUT_LEN]);
    if let Ok(argon2) = hasher() {
        let _ = argon2.hash_password_into(input, &FIXED_SALT, output.as_mut());
    }
    false
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD_NO_PAD;

    use super::*;

    #[test]
    fn hashes_are_argon2id_with_the_documented_parameters() {
        let phc = hash_password("correct horse battery staple").unwrap();
        let fields: Vec<&str> = phc.split('$').collect();
        assert_eq!(fields[..4], ["", "argon2id", "v=19", "m=19456,t=2,p=1"]);
        assert_eq!(STANDARD_NO_PAD.decode(fields[4]).unwrap().len(), 16);
        assert_eq!(STANDARD_NO_PAD.decode(fields[5]).unwrap().len(), 32);
        assert_eq!(fields.len(), 6);

        // The stored output is Argon2id of the password under the stored salt.
        let salt = STANDARD_NO_PAD.decode(fields[4]).unwrap();
        let mut expected = [0_u8; 32];
        Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(19_456, 2, 1, Some(32)).unwrap())
            .hash_password_into(b"correct horse battery staple", &salt, &mut expected)
            .unwrap();
        assert_eq!(STANDARD_NO_PAD.decode(fields[5]).unwrap(), expected);

        // A fresh salt each time.
        assert_ne!(hash_password("correct horse battery staple").unwrap(), phc);
    }

    #[test]
    fn hash_password_refuses_empty_and_long_passwords() {
        assert_eq!(hash_password(""), Err(PasswordError::Empty));
        assert_eq!(hash_password(&"x".repeat(1025)), Err(PasswordError::TooLong { len: 1025, max: 1024 }));
        assert_eq!(
            hash_password(&"x".repeat(1025)).unwrap_err().to_string(),
            "the password is 1025 bytes long, more than the 1024 accepted"
        );
        let longest = "é".repeat(512);
        assert!(verify_password(&longest, &hash_password(&longest).unwrap()));
    }

    /// A PHC string for `password` with the given algorithm and parameters, made with argon2 directly.
    fn phc_with(password: &str, algorithm: Algorithm, params: Params) -> String {
        Argon2::new(algorithm, Version::V0x13, params)
            .hash_password_with_salt(password.as_bytes(), b"0123456789abcdef")
            .unwrap()
            .to_string()
    }

    #[test]
    fn verify_password_table() {
        let phc = hash_password("s3cret").unwrap();
        let argon2i = phc_with("s3cret", Algorithm::Argon2i, Params::new(19_456, 2, 1, None).unwrap());
        let argon2d = phc_with("s3cret", Algorithm::Argon2d, Params::new(19_456, 2, 1, None).unwrap());
        // Small parameters still verify: the stored string decides, within the bounds.
        let small = phc_with("s3cret", Algorithm::Argon2id, Params::new(8, 1, 1, None).unwrap());
        let at_bounds = phc_with("s3cret", Algorithm::Argon2id, Params::new(64, 8, 8, None).unwrap());
        let too_many_passes = phc_with("s3cret", Algorithm::Argon2id, Params::new(64, 9, 1, None).unwrap());
        let too_many_lanes = phc_with("s3cret", Algorithm::Argon2id, Params::new(72, 1, 9, None).unwrap());
        let memory_at_bound = phc_with("s3cret", Algorithm::Argon2id, Params::new(131_072, 1, 1, None).unwrap());
        let too_much_memory = phc_with("s3cret", Algorithm::Argon2id, Params::new(131_073, 1, 1, None).unwrap());
        let truncated = &phc[..phc.len() - 1];
        let no_hash = phc.rsplit_once('$').unwrap().0.to_owned();
        for (password, stored, expected) in [
            ("s3cret", phc.as_str(), true),
            ("s3cret ", phc.as_str(), false),
            ("S3cret", phc.as_str(), false),
            ("", phc.as_str(), false),
            ("s3cret", small.as_str(), true),
            ("wrong", small.as_str(), false),
            ("s3cret", at_bounds.as_str(), true),
            ("s3cret", memory_at_bound.as_str(), true),
            ("s3cret", argon2i.as_str(), false),
            ("s3cret", argon2d.as_str(), false),
            ("s3cret", too_many_passes.as_str(), false),
            ("s3cret", too_many_lanes.as_str(), false),
            ("s3cret", too_much_memory.as_str(), false),
            ("s3cret", truncated, false),
            ("s3cret", no_hash.as_str(), false),
            ("s3cret", "", false),
            ("s3cret", "s3cret", false),
            ("s3cret", "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW", false),
            ("s3cret", "$argon2id$v=19$m=19456,t=2,p=1$!!!$!!!", false),
        ] {
            assert_eq!(verify_password(password, stored), expected, "{password:?} against {stored:?}");
        }
        let long = "x".repeat(1025);
        assert!(!verify_password(&long, &phc));
    }

    #[test]
    fn verify_without_hash_is_always_false() {
        assert!(!verify_without_hash("s3cret"));
        assert!(!verify_without_hash(""));
        assert!(!verify_without_hash(&"x".repeat(5000)));
    }
}
