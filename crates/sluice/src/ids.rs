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
    fn api_keys_carry_256_bits() {
        let key = new_api_key();
        assert_eq!(URL_SAFE_NO_PAD.decode(&key[3..]).unwrap().len(), 32);
    }
}
