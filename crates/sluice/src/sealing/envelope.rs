//! The stored envelope: AES-256-GCM ciphertext beside the KMS-wrapped data key that opens it.
//!
//! Pure and KMS-free: [`super::Sealer`] asks KMS for the data key; this module lays out the
//! bytes and does the AES.
//!
//! # Format, version 1
//!
//! | bytes | field |
//! |---|---|
//! | 4 | magic `00 53 4C 56` (`"\0SLV"`, Sluice envelope) |
//! | 1 | format version, `01` |
//! | 2 | `n`, big-endian: length of the wrapping key's ARN |
//! | `n` | the wrapping key's ARN (UTF-8), as KMS named it when it wrapped the data key |
//! | 2 | `m`, big-endian: length of the wrapped data key |
//! | `m` | the wrapped data key: a KMS ciphertext of the 32-byte AES key, under the same encryption context |
//! | 12 | random GCM nonce |
//! | rest | AES-256-GCM ciphertext followed by its 16-byte tag |
//!
//! The marker cannot be mistaken for what was stored before envelopes (raw KMS ciphertext
//! blobs): every KMS symmetric ciphertext blob begins with its version byte `01` (base64 `AQ…`),
//! and moto's begin with the ASCII key id; neither begins with `00`. A blob that starts with the
//! magic but does not parse is an invalid ciphertext, never "maybe a legacy blob".
//!
//! The key ARN and the wrapped key are outside the associated data on purpose: a rewrap replaces
//! both (KMS `ReEncrypt` of the wrapped key) and leaves the AES ciphertext as it is. Swapping
//! either by hand only yields a data key that does not open the ciphertext.
//!
//! # Associated data
//!
//! The encryption context, serialized canonically: the label `sluice-envelope-v1`, then each
//! pair sorted by key as `u32` big-endian length + UTF-8 bytes of the key, then the same for the
//! value. Length prefixes make it unambiguous (`{"ab": "c"}` ≠ `{"a": "bc"}`); sorting makes it
//! independent of the order the pairs were given in. KMS binds the same context to the wrapped
//! key, so a ciphertext moved to another tenant fails twice over.

use aes_gcm::{
    Aes256Gcm, KeyInit, Nonce,
    aead::{Aead, Payload},
};
use zeroize::Zeroizing;

/// First bytes of every envelope.
pub const MAGIC: [u8; 4] = *b"\0SLV";
/// The format version written today.
pub const VERSION: u8 = 1;
/// Length of an AES-256 data key.
pub const DATA_KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const AAD_LABEL: &[u8] = b"sluice-envelope-v1";

/// A parsed envelope, borrowing the stored bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// ARN of the KMS key that wrapped the data key.
    pub key_arn: &'a str,
    /// The data key, wrapped by KMS.
    pub wrapped_key: &'a [u8],
    pub nonce: &'a [u8],
    /// AES-GCM ciphertext and tag.
    pub sealed: &'a [u8],
}

/// What a stored blob is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored<'a> {
    /// An envelope (this module's format).
    Envelope(Envelope<'a>),
    /// A raw KMS ciphertext, as stored before envelopes.
    Legacy(&'a [u8]),
}

/// Why bytes are not an envelope.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("envelope is truncated or malformed")]
    Malformed,
    #[error("envelope version {0} is not supported")]
    UnknownVersion(u8),
    #[error("the AES-GCM ciphertext does not open")]
    DoesNotOpen,
    #[error("a field is longer than the format allows")]
    TooLong,
}

/// Tells an envelope from a legacy KMS blob, and parses the envelope.
pub fn parse(blob: &[u8]) -> Result<Stored<'_>, FormatError> {
    let Some(rest) = blob.strip_prefix(&MAGIC) else {
        return Ok(Stored::Legacy(blob));
    };
    let (&version, rest) = rest.split_first().ok_or(FormatError::Malformed)?;
    if version != VERSION {
        return Err(FormatError::UnknownVersion(version));
    }
    let (key_arn, rest) = take_prefixed(rest)?;
    let key_arn = std::str::from_utf8(key_arn).map_err(|_| FormatError::Malformed)?;
    let (wrapped_key, rest) = take_prefixed(rest)?;
    if rest.len() < NONCE_LEN + TAG_LEN || wrapped_key.is_empty() || key_arn.is_empty() {
        return Err(FormatError::Malformed);
    }
    let (nonce, sealed) = rest.split_at(NONCE_LEN);
    Ok(Stored::Envelope(Envelope {
        key_arn,
        wrapped_key,
        nonce,
        sealed,
    }))
}

fn take_prefixed(bytes: &[u8]) -> Result<(&[u8], &[u8]), FormatError> {
    let (len, rest) = bytes.split_at_checked(2).ok_or(FormatError::Malformed)?;
    let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    rest.split_at_checked(len).ok_or(FormatError::Malformed)
}

fn put_prefixed(out: &mut Vec<u8>, field: &[u8]) -> Result<(), FormatError> {
    let len = u16::try_from(field.len()).map_err(|_| FormatError::TooLong)?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(field);
    Ok(())
}

/// The canonical associated data of an encryption context (see the module docs).
pub fn associated_data(context: &[(&str, &str)]) -> Vec<u8> {
    let mut pairs = context.to_vec();
    pairs.sort_unstable();
    let mut aad = AAD_LABEL.to_vec();
    for (k, v) in pairs {
        for field in [k, v] {
            // Context values are ids and fixed names, far below 4 GiB.
            aad.extend_from_slice(&(field.len() as u32).to_be_bytes());
            aad.extend_from_slice(field.as_bytes());
        }
    }
    aad
}

/// Lays out an envelope around an already-sealed payload (used when only the wrapped key
/// changes).
pub fn encode(envelope: &Envelope<'_>) -> Result<Vec<u8>, FormatError> {
    let mut out = Vec::with_capacity(
        MAGIC.len()
            + 5
            + envelope.key_arn.len()
            + envelope.wrapped_key.len()
            + envelope.nonce.len()
            + envelope.sealed.len(),
    );
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    put_prefixed(&mut out, envelope.key_arn.as_bytes())?;
    put_prefixed(&mut out, envelope.wrapped_key)?;
    out.extend_from_slice(envelope.nonce);
    out.extend_from_slice(envelope.sealed);
    Ok(out)
}

/// Encrypts `plaintext` under `data_key` (32 bytes, used once) with a random nonce, and lays out
/// the envelope.
pub fn seal(
    data_key: &[u8],
    key_arn: &str,
    wrapped_key: &[u8],
    context: &[(&str, &str)],
    plaintext: &[u8],
) -> Result<Vec<u8>, FormatError> {
    let cipher = Aes256Gcm::new_from_slice(data_key).map_err(|_| FormatError::Malformed)?;
    let nonce = crate::ids::random_bytes::<NONCE_LEN>();
    let aad = associated_data(context);
    let sealed = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .map_err(|_| FormatError::TooLong)?;
    encode(&Envelope {
        key_arn,
        wrapped_key,
        nonce: &nonce,
        sealed: &sealed,
    })
}

/// Decrypts an envelope's payload with its (unwrapped) data key under `context`.
pub fn open(
    envelope: &Envelope<'_>,
    data_key: &[u8],
    context: &[(&str, &str)],
) -> Result<Zeroizing<Vec<u8>>, FormatError> {
    let cipher = Aes256Gcm::new_from_slice(data_key).map_err(|_| FormatError::DoesNotOpen)?;
    let aad = associated_data(context);
    cipher
        .decrypt(
            Nonce::from_slice(envelope.nonce),
            Payload {
                msg: envelope.sealed,
                aad: &aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| FormatError::DoesNotOpen)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];
    const ARN: &str = "arn:aws:kms:eu-west-1:123456789012:key/0d5c-test";
    const CTX: [(&str, &str); 2] = [("tenant_id", "tnt_a"), ("purpose", "provider-key")];

    fn sealed(plaintext: &[u8]) -> Vec<u8> {
        seal(&KEY, ARN, b"wrapped-by-kms", &CTX, plaintext).unwrap()
    }

    fn envelope(blob: &[u8]) -> Envelope<'_> {
        match parse(blob).unwrap() {
            Stored::Envelope(e) => e,
            Stored::Legacy(_) => panic!("not an envelope"),
        }
    }

    #[test]
    fn an_envelope_round_trips_and_names_its_key() {
        let blob = sealed(b"sk-live-123");
        let env = envelope(&blob);
        assert_eq!(env.key_arn, ARN);
        assert_eq!(env.wrapped_key, b"wrapped-by-kms");
        assert_eq!(open(&env, &KEY, &CTX).unwrap().as_slice(), b"sk-live-123");
        assert!(!blob.windows(11).any(|w| w == b"sk-live-123"));
    }

    #[test]
    fn sizes_far_beyond_the_kms_limit_seal() {
        let big = vec![b'x'; 64 * 1024];
        let blob = sealed(&big);
        assert_eq!(open(&envelope(&blob), &KEY, &CTX).unwrap().as_slice(), big);
    }

    #[test]
    fn another_context_or_key_does_not_open() {
        let blob = sealed(b"secret");
        let env = envelope(&blob);
        let other_tenant = [("tenant_id", "tnt_b"), ("purpose", "provider-key")];
        assert_eq!(
            open(&env, &KEY, &other_tenant),
            Err(FormatError::DoesNotOpen)
        );
        assert_eq!(open(&env, &[8; 32], &CTX), Err(FormatError::DoesNotOpen));
        let mut tampered = blob.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(
            open(&envelope(&tampered), &KEY, &CTX),
            Err(FormatError::DoesNotOpen)
        );
    }

    #[test]
    fn a_new_wrapped_key_keeps_the_payload() {
        let blob = sealed(b"secret");
        let env = envelope(&blob);
        let rewrapped = encode(&Envelope {
            key_arn: "arn:aws:kms:eu-west-1:123456789012:key/new",
            wrapped_key: b"rewrapped",
            ..env
        })
        .unwrap();
        let env2 = envelope(&rewrapped);
        assert_eq!(env2.key_arn, "arn:aws:kms:eu-west-1:123456789012:key/new");
        assert_eq!(open(&env2, &KEY, &CTX).unwrap().as_slice(), b"secret");
    }

    #[test]
    fn kms_ciphertexts_read_as_legacy() {
        // A real KMS blob starts with its version byte 01; moto's with the ASCII key id.
        let aws = [0x01, 0x02, 0x02, 0x00, 0x78, 0xaa];
        assert_eq!(parse(&aws), Ok(Stored::Legacy(&aws[..])));
        let moto = b"6a1c2b3d-0000-4000-8000-123456789abc\x01\x02";
        assert_eq!(parse(moto), Ok(Stored::Legacy(&moto[..])));
    }

    #[test]
    fn a_marked_blob_that_does_not_parse_is_refused() {
        let blob = sealed(b"secret");
        for cut in [4, 5, 6, 20, blob.len() - 20] {
            assert_eq!(parse(&blob[..cut]), Err(FormatError::Malformed), "{cut}");
        }
        let mut v2 = blob.clone();
        v2[4] = 2;
        assert_eq!(parse(&v2), Err(FormatError::UnknownVersion(2)));
    }

    #[test]
    fn associated_data_is_canonical() {
        let a = associated_data(&[("tenant_id", "t"), ("purpose", "p")]);
        let b = associated_data(&[("purpose", "p"), ("tenant_id", "t")]);
        assert_eq!(a, b);
        assert_ne!(
            associated_data(&[("ab", "c")]),
            associated_data(&[("a", "bc")])
        );
        assert!(a.starts_with(b"sluice-envelope-v1"));
    }
}
