//! The one way the builder reads an age recipient: `age1…` or an
//! `ssh-ed25519 AAAA…` public key (converted as `ssh-to-age` does),
//! refusing keys no one can decrypt for. An X25519 key of small order
//! (the all-zero key among them) gives every sender the same all-zero
//! shared secret: the age crate panics on it ("OS RNG is likely failing"),
//! and a file sealed to it would be open to anyone. Used for the store's
//! `recipients.txt` and `--recipient`, `build`/`bundle --recipient` and
//! the devices files' recipients.

use std::str::FromStr;

/// Parse and check one recipient. The message never repeats more of the
/// input than a short prefix.
pub fn parse(text: &str) -> Result<age::x25519::Recipient, String> {
    let text = text.trim();
    let recipient = if text.starts_with("age1") {
        let first = text.split_whitespace().next().unwrap_or("");
        age::x25519::Recipient::from_str(first)
            .map_err(|e| format!("not an age X25519 recipient: {e}"))?
    } else if text.split_whitespace().any(|t| t == "ssh-ed25519") {
        sealed_bundle::ssh::recipient_from_ssh_public_key(text)?
    } else {
        return Err(
            "expected an age1… recipient or an ssh-ed25519 public key (other key types are not supported)"
                .into(),
        );
    };
    check(&recipient)?;
    Ok(recipient)
}

/// Refuse a recipient whose X25519 point has small order (including zero).
pub fn check(recipient: &age::x25519::Recipient) -> Result<(), String> {
    let bytes = public_bytes(recipient)?;
    // A clamped scalar is a multiple of the cofactor 8: any fixed one maps
    // exactly the small-order points (on the curve or its twist) to zero,
    // which is what every sender's ephemeral key would do.
    let probe = x25519_dalek::StaticSecret::from([0x5a; 32]);
    let shared = probe.diffie_hellman(&x25519_dalek::PublicKey::from(bytes));
    if !shared.was_contributory() {
        return Err(format!(
            "{} is a small-order X25519 key (an all-zero or degenerate point): nothing encrypted to it would be secret; use the key of a real age identity (`age-keygen -y KEYFILE`)",
            short(&recipient.to_string())
        ));
    }
    Ok(())
}

/// The 32 bytes of an age X25519 recipient.
fn public_bytes(recipient: &age::x25519::Recipient) -> Result<[u8; 32], String> {
    let text = recipient.to_string();
    let (_, data) = bech32::decode(&text).map_err(|e| format!("bad recipient encoding: {e}"))?;
    data.try_into()
        .map_err(|_| "an age X25519 recipient has 32 bytes".to_string())
}

/// The first 16 characters of `s` (whole characters, control ones shown
/// as `?`), with `…` when it is longer: how messages quote a key or what
/// was given for one.
pub fn short(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(16)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().nth(16).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An age recipient for these 32 bytes (any bytes: age does not check).
    pub(crate) fn encode(bytes: &[u8; 32]) -> String {
        bech32::encode::<bech32::Bech32>(bech32::Hrp::parse("age").unwrap(), bytes).unwrap()
    }

    #[test]
    fn small_order_and_zero_keys_are_refused_real_ones_taken() {
        // u = 0, 1, the order-8 points and p-1 (order 2 on the curve), p, p+1
        // (non-canonical encodings of 0 and 1).
        let mut small = vec![[0u8; 32]];
        let mut one = [0u8; 32];
        one[0] = 1;
        small.push(one);
        let mut order8 = [0u8; 32];
        let hex = "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800";
        for (i, b) in order8.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
        }
        small.push(order8);
        let mut p_minus_1 = [0xffu8; 32];
        p_minus_1[0] = 0xec;
        p_minus_1[31] = 0x7f;
        small.push(p_minus_1);
        let mut p = p_minus_1;
        p[0] = 0xed;
        small.push(p);
        let mut p_plus_1 = p_minus_1;
        p_plus_1[0] = 0xee;
        small.push(p_plus_1);
        for bytes in small {
            let text = encode(&bytes);
            // age itself takes it (and would panic encrypting to it).
            age::x25519::Recipient::from_str(&text).unwrap();
            let e = parse(&text).unwrap_err();
            assert!(e.contains("small-order"), "{text}: {e}");
        }
        // The Ed25519 identity point converts to u = 0.
        let e = parse(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAEAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA x",
        )
        .unwrap_err();
        assert!(e.contains("small-order"), "{e}");
        let real = age::x25519::Identity::generate().to_public().to_string();
        assert_eq!(parse(&format!("{real} # alice")).unwrap().to_string(), real);
        assert!(parse("ssh-rsa AAAA x").unwrap_err().contains("ssh-ed25519"));
    }

    #[test]
    fn short_quotes_whole_characters() {
        assert_eq!(short("age1abc"), "age1abc");
        assert_eq!(short(&"x".repeat(16)), "x".repeat(16));
        assert_eq!(
            short(&format!("a{}", "é".repeat(20))),
            format!("a{}…", "é".repeat(15))
        );
        assert_eq!(short("a\u{1b}[31m"), "a?[31m");
    }
}
