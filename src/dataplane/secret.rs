//! Random credentials for VFs: the attach token of an NF nfhost starts, and the
//! secret of an external NF's endpoint. Both come from the kernel's CSPRNG
//! (`getrandom(2)`), never from a name, a PID or a counter, are compared in
//! constant time by the engine, and never logged.

/// Characters of an endpoint secret: letters and digits, safe in a shell, a URL, an
/// environment variable and DPDK's `secret=` devarg.
const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// Length of an endpoint secret: within memif's field (`memif_msg_init_t.secret`,
/// 24 bytes), which DPDK's driver fills with `strlcpy` and so cuts to 23
/// characters and a NUL. 23 characters of 62 carry 136 bits.
pub const SECRET_LEN: usize = 23;

fn fill(bytes: &mut [u8]) -> std::io::Result<()> {
    let mut filled = 0;
    while filled < bytes.len() {
        filled +=
            rustix::rand::getrandom(&mut bytes[filled..], rustix::rand::GetRandomFlags::empty())?;
    }
    Ok(())
}

/// A fresh attach token for an NF process: 128 random bits, hex.
pub fn new_token() -> std::io::Result<String> {
    let mut bytes = [0u8; 16];
    fill(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A fresh endpoint secret: [`SECRET_LEN`] characters of [A-Za-z0-9], each drawn
/// without bias (bytes of 248 and above are drawn again).
pub fn new_secret() -> std::io::Result<String> {
    let mut secret = String::with_capacity(SECRET_LEN);
    let mut pool = [0u8; 64];
    while secret.len() < SECRET_LEN {
        fill(&mut pool)?;
        for b in pool {
            // 248 = 4 × 62: every character equally likely.
            if b < 248 && secret.len() < SECRET_LEN {
                secret.push(char::from(ALPHABET[usize::from(b) % ALPHABET.len()]));
            }
        }
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_23_alphanumerics_and_differ() {
        let a = new_secret().unwrap();
        let b = new_secret().unwrap();
        assert_eq!(a.len(), SECRET_LEN);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()), "{a}");
        assert_ne!(a, b);
        let t = new_token().unwrap();
        assert_eq!(t.len(), 32);
        assert_ne!(t, new_token().unwrap());
    }
}
