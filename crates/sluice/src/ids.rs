//! Prefixed, opaque ids (`tnt_…`, `ep_…`, `msg_…`, `led_…`) and random secrets.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::{Rng, RngCore, distr::Alphanumeric};

/// A new id: `prefix_` + 24 random alphanumerics (≈ 143 bits).
pub fn new_id(prefix: &str) -> String {
    let mut id = String::with_capacity(prefix.len() + 25);
    id.push_str(prefix);
    id.push('_');
    id.extend(
        rand::rng()
            .sample_iter(&Alphanumeric)
            .take(24)
            .map(char::from),
    );
    id
}

/// An id that is a function of `parts`: `prefix_` + 32 hex digits of SHA-256 over the parts
/// (NUL-separated, 128 bits). For records derived from an input that may arrive more than once,
/// so that every arrival names the same record.
pub fn derived_id(prefix: &str, parts: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    for part in parts {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    format!("{prefix}_{}", &hex::encode(hash.finalize())[..32])
}

/// `n` bytes from the OS-seeded CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

/// A new tenant API key: `sk_` + base64url of 32 random bytes (256 bits of entropy).
pub fn new_api_key() -> String {
    format!("sk_{}", URL_SAFE_NO_PAD.encode(random_bytes::<32>()))
}

/// True if `id` has the given prefix and only id characters — lets handlers answer 404 early.
pub fn has_prefix(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('_'))
        .is_some_and(|rest| {
            !rest.is_empty() && rest.len() <= 64 && rest.bytes().all(|b| b.is_ascii_alphanumeric())
        })
}

/// The methods and traits every prefixed id type shares (`tnt_…`, `msg_…`, `ep_…`): a random
/// `new`, `parse` checking the prefix once where an id enters (lets handlers answer 404 without a
/// request), `as_str`/`into_string`, and `Deref<Target = str>`/`Display` so an id reads as its text
/// wherever a `&str` key part is asked for. The type itself is `struct Name(String)`.
#[macro_export]
macro_rules! prefixed_id {
    ($name:ident, $prefix:literal) => {
        impl $name {
            /// The id prefix.
            pub const PREFIX: &'static str = $prefix;

            /// A new random id.
            pub fn new() -> Self {
                Self($crate::ids::new_id(Self::PREFIX))
            }
            /// `Some` if `raw` is an id of this kind.
            pub fn parse(raw: &str) -> Option<Self> {
                $crate::ids::has_prefix(raw, Self::PREFIX).then(|| Self(raw.to_owned()))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_prefixed_and_unique() {
        let a = new_id("tnt");
        assert!(has_prefix(&a, "tnt"));
        assert_ne!(a, new_id("tnt"));
        assert!(!has_prefix("ep_abc", "tnt"));
        assert!(!has_prefix("tnt_a#b", "tnt"));
    }

    #[test]
    fn derived_ids_are_stable_valid_and_part_sensitive() {
        let a = derived_id("msg", &["tnt_a", "evt_1", "credits.added"]);
        assert_eq!(a, derived_id("msg", &["tnt_a", "evt_1", "credits.added"]));
        assert!(has_prefix(&a, "msg"));
        assert_ne!(
            a,
            derived_id("msg", &["tnt_a", "evt_1", "payment.succeeded"])
        );
        assert_ne!(a, derived_id("msg", &["tnt_b", "evt_1", "credits.added"]));
        // Separators keep part boundaries: ("ab", "c") is not ("a", "bc").
        assert_ne!(
            derived_id("msg", &["ab", "c"]),
            derived_id("msg", &["a", "bc"])
        );
    }

    #[test]
    fn api_keys_carry_256_bits() {
        let key = new_api_key();
        assert_eq!(URL_SAFE_NO_PAD.decode(&key[3..]).unwrap().len(), 32);
    }
}
