//! SSH keys as age keys, as `ssh-to-age` converts them: an SSH Ed25519
//! public key line is an age X25519 recipient (the builder seals to a
//! device from `ssh-keyscan`), an OpenSSH Ed25519 private key an age
//! identity (the device derives its identity from its host key).

use base64::Engine;
use sha2::{Digest, Sha512};
use std::str::FromStr;
use zeroize::Zeroizing;

/// Derive the age identity from an unencrypted OpenSSH Ed25519 private key,
/// as `ssh-to-age` does.
pub fn identity_from_openssh_ed25519(pem: &str) -> Result<age::x25519::Identity, String> {
    // Room for all of it up front: a String grown by `collect` would free
    // copies holding part of the key.
    let mut body = Zeroizing::new(String::with_capacity(pem.len()));
    pem.lines()
        .map(str::trim)
        .skip_while(|l| *l != "-----BEGIN OPENSSH PRIVATE KEY-----")
        .skip(1)
        .take_while(|l| *l != "-----END OPENSSH PRIVATE KEY-----")
        .for_each(|l| body.push_str(l));
    if body.is_empty() {
        return Err("not an OpenSSH private key (no BEGIN OPENSSH PRIVATE KEY block)".into());
    }
    let blob = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(body.as_bytes())
            .map_err(|_| "OpenSSH private key is not valid base64".to_string())?,
    );
    let mut r = SshReader { buf: &blob, pos: 0 };
    if r.bytes(15)? != b"openssh-key-v1\0" {
        return Err("not an openssh-key-v1 key".into());
    }
    let cipher = r.string()?;
    let _kdf = r.string()?;
    let _kdf_opts = r.string()?;
    if cipher != b"none" {
        return Err("the SSH host key is passphrase-protected; a host key must not be".into());
    }
    if r.u32()? != 1 {
        return Err("expected exactly one key".into());
    }
    let _public = r.string()?;
    let private = r.string()?;
    let mut p = SshReader {
        buf: private,
        pos: 0,
    };
    if p.u32()? != p.u32()? {
        return Err("check integers differ (corrupt key)".into());
    }
    if p.string()? != b"ssh-ed25519" {
        return Err("the SSH host key is not ssh-ed25519".into());
    }
    let _pk = p.string()?;
    let sk = p.string()?;
    if sk.len() != 64 {
        return Err("ed25519 private key has the wrong length".into());
    }
    let hash = Zeroizing::new(Sha512::digest(&sk[..32]));
    let mut scalar = Zeroizing::new([0u8; 32]);
    scalar.copy_from_slice(&hash[..32]);
    identity_from_scalar(&scalar)
}

/// The age recipient of an SSH Ed25519 public key, as `ssh-to-age` computes
/// it: the Montgomery form of the Edwards point. Accepts an
/// `authorized_keys` line (`ssh-ed25519 AAAA… comment`) or an `ssh-keyscan` /
/// `known_hosts` line (`host ssh-ed25519 AAAA…`).
pub fn recipient_from_ssh_public_key(line: &str) -> Result<age::x25519::Recipient, String> {
    let mut tokens = line.split_whitespace();
    tokens
        .by_ref()
        .find(|t| *t == "ssh-ed25519")
        .ok_or("not an ssh-ed25519 public key line")?;
    let b64 = tokens.next().ok_or("missing key data after ssh-ed25519")?;
    let blob = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| "ssh-ed25519 key data is not valid base64".to_string())?;
    let mut r = SshReader { buf: &blob, pos: 0 };
    if r.string()? != b"ssh-ed25519" {
        return Err("key blob is not ssh-ed25519".into());
    }
    let pk: [u8; 32] = r
        .string()?
        .try_into()
        .map_err(|_| "ed25519 public key has the wrong length".to_string())?;
    let point = curve25519_dalek::edwards::CompressedEdwardsY(pk)
        .decompress()
        .ok_or("ed25519 public key is not a valid curve point")?;
    let hrp = bech32::Hrp::parse("age").map_err(|e| e.to_string())?;
    let encoded = bech32::encode::<bech32::Bech32>(hrp, point.to_montgomery().as_bytes())
        .map_err(|e| e.to_string())?;
    age::x25519::Recipient::from_str(&encoded).map_err(|e| e.to_string())
}

/// Every ssh-ed25519 key of a public key file (`.pub`, `authorized_keys`,
/// `known_hosts`, `ssh-keyscan` output) as an age recipient. Blank lines,
/// `#` comments and other key types are skipped; an ssh-ed25519 line that
/// does not parse is an error with its 1-based line number.
pub fn recipients_from_ssh_public_keys(
    text: &str,
) -> Result<Vec<age::x25519::Recipient>, (usize, String)> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || !line.contains("ssh-ed25519") {
            continue;
        }
        found.push(recipient_from_ssh_public_key(line).map_err(|e| (n + 1, e))?);
    }
    Ok(found)
}

/// Encode 32 secret bytes as an `AGE-SECRET-KEY-1…` identity.
pub fn identity_from_scalar(scalar: &[u8; 32]) -> Result<age::x25519::Identity, String> {
    let hrp = bech32::Hrp::parse("age-secret-key-").map_err(|e| e.to_string())?;
    let encoded = Zeroizing::new(
        bech32::encode::<bech32::Bech32>(hrp, scalar)
            .map_err(|e| e.to_string())?
            .to_uppercase(),
    );
    age::x25519::Identity::from_str(&encoded).map_err(|e| e.to_string())
}

struct SshReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> SshReader<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or("OpenSSH key is truncated")?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }
    fn u32(&mut self) -> Result<u32, String> {
        let b = self.bytes(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn string(&mut self) -> Result<&'a [u8], String> {
        let n = self.u32()? as usize;
        self.bytes(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST_KEY: &str = include_str!("../../firstboot/tests/data/ssh_host_ed25519_key");
    const TEST_PUB: &str = include_str!("../../firstboot/tests/data/ssh_host_ed25519_key.pub");

    /// A vector produced by the real `ssh-to-age` (published in the
    /// pgp2ssh README): public key line → recipient.
    #[test]
    fn public_conversion_matches_ssh_to_age() {
        let line = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICYvKXGcG4a19tTT0Rycbn+D0r/YlKltLJ9dY2gR/Fjx openpgp:0x47C9F3FF";
        assert_eq!(
            recipient_from_ssh_public_key(line).unwrap().to_string(),
            "age18s8m9hvlrwvltgys4lafyyqe356ntc7e06t4kd2nccqm5amsaa2s878mju"
        );
        // The same key as ssh-keyscan prints it.
        let scan = format!("device.local {}", &line[..line.rfind(' ').unwrap()]);
        assert_eq!(
            recipient_from_ssh_public_key(&scan).unwrap().to_string(),
            "age18s8m9hvlrwvltgys4lafyyqe356ntc7e06t4kd2nccqm5amsaa2s878mju"
        );
    }

    /// The identity derived from a host private key (ssh-keygen made the
    /// fixed test key) belongs to the recipient derived from its public key.
    #[test]
    fn private_derivation_matches_public_derivation() {
        let id = identity_from_openssh_ed25519(TEST_KEY).unwrap();
        let from_pub = recipient_from_ssh_public_key(TEST_PUB).unwrap();
        assert_eq!(id.to_public().to_string(), from_pub.to_string());
        assert_eq!(
            from_pub.to_string(),
            "age1eyvyvvcp4urxwj56mjyhvnkvt69ntmg096npkukl24msxvuwgs0smz7cun"
        );
    }

    #[test]
    fn bad_ssh_inputs_are_clear_errors() {
        assert!(recipient_from_ssh_public_key("ssh-rsa AAAAB3NzaC1yc2E").is_err());
        assert!(recipient_from_ssh_public_key("ssh-ed25519 !!!").is_err());
        assert!(identity_from_openssh_ed25519(
            "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----"
        )
        .is_err());
        assert!(identity_from_openssh_ed25519("hello")
            .err()
            .unwrap()
            .contains("not an OpenSSH private key"));
    }
}
