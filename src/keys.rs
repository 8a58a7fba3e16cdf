//! Activation keys at rest: AES-256-GCM (ring) under the key-encryption key, with a random
//! 96-bit nonce per key and the product id as associated data (a sealed key moved to another
//! product's row fails to open). Stored form: `nonce ‖ ciphertext ‖ tag`.
//!
//! The key-encryption key is `data_dir/kek.key` (32 random bytes, mode 0600, made on first start)
//! unless `storage.kek_file` names another file. Plaintext keys exist only while answering
//! `GET /api/orders/{id}/keys` and `POST /api/orders/{id}/downloads`; they are never logged.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};

pub struct Sealer {
    key: LessSafeKey,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a stored key could not be decrypted")]
pub struct OpenError;

impl Sealer {
    pub fn new(kek: &[u8]) -> Sealer {
        let unbound = UnboundKey::new(&AES_256_GCM, kek).expect("a 32-byte key-encryption key");
        Sealer { key: LessSafeKey::new(unbound) }
    }

    pub fn seal(&self, product_id: &str, plaintext: &str) -> Vec<u8> {
        let nonce: [u8; NONCE_LEN] = crate::secrets::random_bytes();
        let mut buf = plaintext.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(product_id.as_bytes()), &mut buf)
            .expect("sealing cannot fail for small inputs");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        out
    }

    pub fn open(&self, product_id: &str, sealed: &[u8]) -> Result<String, OpenError> {
        if sealed.len() < NONCE_LEN {
            return Err(OpenError);
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| OpenError)?;
        let mut buf = ct.to_vec();
        let plain = self.key.open_in_place(nonce, Aad::from(product_id.as_bytes()), &mut buf).map_err(|_| OpenError)?;
        String::from_utf8(plain.to_vec()).map_err(|_| OpenError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_ciphertext_hides_the_key() {
        let s = Sealer::new(&[7u8; 32]);
        let sealed = s.seal("win11", "ABCDE-FGHIJ-KLMNO-PQRST-UVWXY");
        assert!(!sealed.windows(5).any(|w| w == b"ABCDE"));
        assert_eq!(s.open("win11", &sealed).unwrap(), "ABCDE-FGHIJ-KLMNO-PQRST-UVWXY");
        // Fresh nonce each time.
        assert_ne!(sealed, s.seal("win11", "ABCDE-FGHIJ-KLMNO-PQRST-UVWXY"));
    }

    #[test]
    fn wrong_product_wrong_kek_or_tampering_fail_to_open() {
        let s = Sealer::new(&[7u8; 32]);
        let mut sealed = s.seal("win11", "KEY");
        assert_eq!(s.open("office", &sealed), Err(OpenError));
        assert_eq!(Sealer::new(&[8u8; 32]).open("win11", &sealed), Err(OpenError));
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert_eq!(s.open("win11", &sealed), Err(OpenError));
        assert_eq!(s.open("win11", b"short"), Err(OpenError));
    }
}
