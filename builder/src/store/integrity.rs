//! The store key and what it authenticates (the model of sops' data key).
//!
//! A random 256-bit key, encrypted to every recipient in `key.age`, with
//! a generation that every change of recipients increases (a new random
//! key: a removed member knows the old one). `store.toml` (the index)
//! records the accepted recipients, the SHA-256 of `key.age` and of every
//! `meta.toml` (which in turn records each version file's SHA-256, so a
//! file is bound to its name, scope and version), and the audit log's
//! length at the last change; its MAC is HMAC-SHA256 under the store key.
//! Someone without a member's identity can encrypt a value to the public
//! recipients but cannot make a MAC, so the next command notices.
//!
//! The store id is derived from the first key (kept, encrypted, beside
//! the current one), so a store made from scratch to the same recipients
//! has another id: pin it with `SEALED_IMAGE_STORE_ID` (in CI's settings,
//! outside the repository) and a replaced store is refused too.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use zeroize::Zeroizing;

/// The store's format (format 1: no key, nothing authenticated).
pub const FORMAT: u32 = 2;

/// The environment variable pinning the store (optional): `ID` refuses
/// another store; `ID:GENERATION:TAG` (printed by every change of key)
/// also refuses a store key that is not, or does not descend from, the
/// key of that generation: a store put back as it was before a member was
/// removed, or an old checkout a former member changed and rekeyed past
/// that generation (they never had its key). `ID:GENERATION` alone only
/// refuses older generations (a former member can make newer ones).
pub const STORE_ID_ENV: &str = "SEALED_IMAGE_STORE_ID";

/// The pin in [`STORE_ID_ENV`], when it is set.
pub fn pin() -> Option<String> {
    std::env::var(STORE_ID_ENV)
        .ok()
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
}

/// Check `key` against [`STORE_ID_ENV`] when it is set.
pub fn check_pin(key: &StoreKey) -> Result<(), String> {
    let Some(pin) = pin() else {
        return Ok(());
    };
    let pin = pin.as_str();
    let mut parts = pin.split(':');
    let id = parts.next().unwrap_or("");
    let min = match parts.next() {
        Some(g) => g.parse::<u32>().map_err(|_| {
            format!("{STORE_ID_ENV}={pin}: the generation after ':' is not a number")
        })?,
        None => 0,
    };
    let tag = parts.next();
    if parts.next().is_some() {
        return Err(format!(
            "{STORE_ID_ENV}={pin}: expected ID, ID:GENERATION or ID:GENERATION:TAG"
        ));
    }
    if !id.eq_ignore_ascii_case(&key.id()) {
        return Err(format!(
            "this is store {}, but {STORE_ID_ENV} expects {id}: the store was replaced by another one (or the pin is stale)",
            key.id()
        ));
    }
    if key.generation() < min {
        return Err(format!(
            "the store key is of generation {}, but {STORE_ID_ENV} expects at least {min}: the store was put back as it was before a change of recipients",
            key.generation()
        ));
    }
    if let Some(tag) = tag {
        match key.pin_tag(min) {
            Some(t) if t.eq_ignore_ascii_case(tag) => {}
            Some(_) => {
                return Err(format!(
                    "the store key does not descend from the key of generation {min} that {STORE_ID_ENV} names: the store was replaced by one made from an old checkout (by a former member, say) or put back from before that change"
                ))
            }
            None => {
                return Err(format!(
                    "the store key does not carry the key of generation {min} that {STORE_ID_ENV} names, so it cannot be one that descends from it"
                ))
            }
        }
    }
    Ok(())
}

/// Largest plaintext of `key.age` (a key, and the keys of earlier
/// generations).
pub const MAX_KEY_PLAINTEXT: u64 = 1 << 20;

const KEY_MAGIC: &str = "sealed-image store key 1";

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    ::hex::encode(bytes)
}

/// The SHA-256 of `bytes`, in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Decode lower- or upper-case hex of exactly `N` bytes.
pub fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    ::hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

/// Append the hex of secret bytes (no copy left behind: each byte's two
/// digits pass through a buffer that is wiped).
fn hex_into(out: &mut crate::io::secret::SecretVec, bytes: &[u8]) {
    let mut pair = Zeroizing::new([0u8; 2]);
    for b in bytes {
        // Two digits for one byte: the lengths always match.
        if ::hex::encode_to_slice([*b], &mut pair[..]).is_ok() {
            out.extend_from_slice(&pair[..]);
        }
    }
}

/// Compare two byte strings in constant time (for MACs).
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A store key of one generation, with the store's first key (which names
/// the store).
pub struct StoreKey {
    key: Zeroizing<[u8; 32]>,
    genesis: Zeroizing<[u8; 32]>,
    generation: u32,
    /// The keys of the generations between the first and this one, as
    /// far as they were carried (stores made before they were): what a
    /// pin of an earlier generation is checked against.
    earlier: BTreeMap<u32, Zeroizing<[u8; 32]>>,
}

impl StoreKey {
    /// A new store's first key.
    pub fn generate() -> StoreKey {
        let key = Zeroizing::new(rand::random::<[u8; 32]>());
        StoreKey {
            genesis: key.clone(),
            key,
            generation: 1,
            earlier: BTreeMap::new(),
        }
    }

    /// The next generation: a fresh random key, the same store, carrying
    /// this one.
    pub fn rotate(&self) -> StoreKey {
        let mut earlier = self.earlier.clone();
        if self.generation > 1 {
            earlier.insert(self.generation, self.key.clone());
        }
        StoreKey {
            key: Zeroizing::new(rand::random::<[u8; 32]>()),
            genesis: self.genesis.clone(),
            generation: self.generation.saturating_add(1),
            earlier,
        }
    }

    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// The key of `generation` (this one or one it carries).
    fn key_of(&self, generation: u32) -> Option<&[u8; 32]> {
        if generation == self.generation {
            Some(&self.key)
        } else if generation == 1 {
            Some(&self.genesis)
        } else {
            self.earlier.get(&generation).map(|k| &**k)
        }
    }

    /// The tag of the key of `generation` in a pin (public: it names the
    /// key without revealing it).
    pub fn pin_tag(&self, generation: u32) -> Option<String> {
        let key = self.key_of(generation)?;
        let mut m =
            <Hmac<Sha256> as Mac>::new_from_slice(&key[..]).expect("HMAC takes any key length");
        m.update(b"sealed-image store pin");
        m.update(self.id().as_bytes());
        m.update(&generation.to_be_bytes());
        Some(hex(&m.finalize().into_bytes()[..16]))
    }

    /// The pin of this key: `ID:GENERATION:TAG` for [`STORE_ID_ENV`].
    pub fn pin(&self) -> String {
        format!(
            "{}:{}:{}",
            self.id(),
            self.generation,
            self.pin_tag(self.generation).unwrap_or_default()
        )
    }

    /// The store id: 128 bits derived from the first key (public).
    pub fn id(&self) -> String {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.genesis[..])
            .expect("HMAC takes any key length");
        m.update(b"sealed-image store id");
        hex(&m.finalize().into_bytes()[..16])
    }

    /// HMAC-SHA256 under this key of `label` and `parts`, each part
    /// length-prefixed (so no two inputs read the same).
    pub fn mac(&self, label: &str, parts: &[&[u8]]) -> [u8; 32] {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.key[..])
            .expect("HMAC takes any key length");
        for part in std::iter::once(label.as_bytes()).chain(parts.iter().copied()) {
            m.update(&(part.len() as u64).to_be_bytes());
            m.update(part);
        }
        m.finalize().into_bytes().into()
    }

    /// [`StoreKey::mac`] in hex.
    pub fn mac_hex(&self, label: &str, parts: &[&[u8]]) -> String {
        hex(&self.mac(label, parts))
    }

    /// Whether `mac` (hex) is the MAC of `label` and `parts`.
    pub fn verify(&self, mac: &str, label: &str, parts: &[&[u8]]) -> bool {
        unhex::<32>(mac).is_some_and(|m| same(&m, &self.mac(label, parts)))
    }

    /// The plaintext of `key.age`.
    pub fn to_plaintext(&self) -> Zeroizing<Vec<u8>> {
        let mut out = crate::io::secret::SecretVec::with_capacity(256);
        out.extend_from_slice(
            format!(
                "{KEY_MAGIC}\nid {}\ngeneration {}\nkey ",
                self.id(),
                self.generation
            )
            .as_bytes(),
        );
        hex_into(&mut out, &self.key[..]);
        out.extend_from_slice(b"\ngenesis ");
        hex_into(&mut out, &self.genesis[..]);
        out.extend_from_slice(b"\n");
        for (generation, key) in &self.earlier {
            out.extend_from_slice(format!("earlier {generation} ").as_bytes());
            hex_into(&mut out, &key[..]);
            out.extend_from_slice(b"\n");
        }
        out.into_inner()
    }

    /// Read the plaintext of `key.age`; its id must be its first key's.
    pub fn from_plaintext(text: &[u8]) -> Result<StoreKey, String> {
        let text = std::str::from_utf8(text).map_err(|_| "not a store key".to_string())?;
        let mut lines = text.lines();
        if lines.next() != Some(KEY_MAGIC) {
            return Err("not a build-image store key".into());
        }
        let mut field = |name: &str| -> Result<String, String> {
            lines
                .next()
                .and_then(|l| l.strip_prefix(name))
                .and_then(|l| l.strip_prefix(' '))
                .map(str::to_string)
                .ok_or_else(|| format!("the store key has no {name} line"))
        };
        let id = field("id")?;
        let generation: u32 = field("generation")?
            .parse()
            .map_err(|_| "bad generation".to_string())?;
        let key = Zeroizing::new(field("key")?);
        let genesis = Zeroizing::new(field("genesis")?);
        let key = Zeroizing::new(unhex::<32>(&key).ok_or("bad key")?);
        let genesis = Zeroizing::new(unhex::<32>(&genesis).ok_or("bad first key")?);
        // Then the keys of earlier generations (none in a store made
        // before they were carried).
        let mut earlier = BTreeMap::new();
        for line in lines {
            let bad = || "bad earlier key line".to_string();
            let (g, hexkey) = line
                .strip_prefix("earlier ")
                .and_then(|l| l.split_once(' '))
                .ok_or_else(bad)?;
            let g: u32 = g.parse().map_err(|_| bad())?;
            let k = Zeroizing::new(unhex::<32>(hexkey).ok_or_else(bad)?);
            if g <= 1 || g >= generation || earlier.insert(g, k).is_some() {
                return Err(bad());
            }
        }
        let k = StoreKey {
            key,
            genesis,
            generation,
            earlier,
        };
        // (u32::MAX: no next generation a change of key could take.)
        if generation == 0
            || generation == u32::MAX
            || (generation == 1 && !same(&k.key[..], &k.genesis[..]))
        {
            return Err("inconsistent key generation".into());
        }
        if k.id() != id {
            return Err("its id is not the one its first key names".into());
        }
        Ok(k)
    }
}

/// `store.toml`: what the store key authenticates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Index {
    pub format: u32,
    /// The store id (see [`StoreKey::id`]).
    pub id: String,
    /// The store key's generation.
    pub generation: u32,
    /// SHA-256 of `key.age`.
    pub key_file: String,
    /// The accepted recipients (age1…, sorted): values are encrypted to
    /// these, whatever recipients.txt says.
    pub recipients: Vec<String>,
    /// Lines of audit.jsonl at the last change (the log never shrinks).
    pub audit_floor: u64,
    /// HMAC-SHA256 under the store key of everything here.
    pub mac: String,
    /// Each secret's `meta.toml` SHA-256.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
}

impl Index {
    /// The index of a store under `key`: its key file, accepted
    /// recipients, audit floor and metadata hashes, sealed.
    pub fn new(
        key: &StoreKey,
        key_file: &[u8],
        recipients: Vec<String>,
        audit_floor: u64,
        secrets: BTreeMap<String, String>,
    ) -> Index {
        let mut index = Index {
            format: FORMAT,
            id: key.id(),
            generation: key.generation(),
            key_file: sha256_hex(key_file),
            recipients,
            audit_floor,
            mac: String::new(),
            secrets,
        };
        index.seal(key);
        index
    }

    fn mac_parts(&self) -> Vec<Vec<u8>> {
        let mut parts = vec![
            self.format.to_be_bytes().to_vec(),
            self.id.as_bytes().to_vec(),
            self.generation.to_be_bytes().to_vec(),
            self.key_file.as_bytes().to_vec(),
            (self.recipients.len() as u64).to_be_bytes().to_vec(),
        ];
        parts.extend(self.recipients.iter().map(|r| r.as_bytes().to_vec()));
        parts.push(self.audit_floor.to_be_bytes().to_vec());
        parts.push((self.secrets.len() as u64).to_be_bytes().to_vec());
        for (name, hash) in &self.secrets {
            parts.push(name.as_bytes().to_vec());
            parts.push(hash.as_bytes().to_vec());
        }
        parts
    }

    /// Set the MAC under `key`.
    pub fn seal(&mut self, key: &StoreKey) {
        let parts = self.mac_parts();
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        self.mac = key.mac_hex("store.toml", &refs);
    }

    /// Whether the MAC is right under `key`.
    pub fn verify(&self, key: &StoreKey) -> bool {
        let parts = self.mac_parts();
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        key.verify(&self.mac, "store.toml", &refs)
    }

    pub fn parse(bytes: &[u8]) -> Result<Index, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
        let index: Index = toml::from_str(text).map_err(|e| e.message().to_string())?;
        if index.format != FORMAT {
            return Err(format!(
                "format {} (this build-image reads format {FORMAT})",
                index.format
            ));
        }
        if let Some(bad) = index
            .secrets
            .keys()
            .find(|n| super::validate_name(n).is_err())
        {
            return Err(format!("it lists {bad:?}, which is not a secret name"));
        }
        Ok(index)
    }

    pub fn to_toml(&self) -> String {
        let body = toml::to_string(self).unwrap_or_default();
        format!(
            "# build-image store: what the store key authenticates. Written by build-image;\n\
             # a change made by hand is refused (see the README's threat model).\n{body}"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_what_is_not_hex_of_n_bytes() {
        let mut out = crate::io::secret::SecretVec::with_capacity(8);
        hex_into(&mut out, &[0x00, 0x7f, 0xab, 0xff]);
        assert_eq!(&out.into_inner()[..], b"007fabff");
        assert_eq!(hex(&[0x01, 0xfe]), "01fe");
        assert_eq!(unhex::<2>("01FE"), Some([0x01, 0xfe]));
        assert_eq!(unhex::<2>("01fe"), Some([0x01, 0xfe]));
        // Wrong length, a sign, a non-hex digit.
        assert_eq!(unhex::<2>("01f"), None);
        assert_eq!(unhex::<2>("01fe00"), None);
        assert_eq!(unhex::<2>("+1fe"), None);
        assert_eq!(unhex::<2>("01fg"), None);
    }

    #[test]
    fn keys_round_trip_and_name_their_store() {
        let k = StoreKey::generate();
        let text = k.to_plaintext();
        let back = StoreKey::from_plaintext(&text).unwrap();
        assert_eq!((back.id(), back.generation()), (k.id(), 1));
        let next = k.rotate();
        assert_eq!((next.id(), next.generation()), (k.id(), 2));
        assert_ne!(next.mac("x", &[]), k.mac("x", &[]));
        let back = StoreKey::from_plaintext(&next.to_plaintext()).unwrap();
        assert_eq!(back.mac("x", &[b"y"]), next.mac("x", &[b"y"]));
        // Another store's id in the file: refused.
        let other = StoreKey::generate();
        let forged = String::from_utf8(next.to_plaintext().to_vec())
            .unwrap()
            .replace(&next.id(), &other.id());
        assert!(
            matches!(StoreKey::from_plaintext(forged.as_bytes()), Err(e) if e.contains("its id is not the one its first key names"))
        );
        // The last generation has no next one: refused when read.
        let last = String::from_utf8(k.to_plaintext().to_vec())
            .unwrap()
            .replace("generation 1\n", &format!("generation {}\n", u32::MAX));
        assert!(
            matches!(StoreKey::from_plaintext(last.as_bytes()), Err(e) if e.contains("inconsistent key generation"))
        );
        // Parts are length-prefixed: ("ab","c") is not ("a","bc").
        assert_ne!(k.mac("l", &[b"ab", b"c"]), k.mac("l", &[b"a", b"bc"]));
    }

    #[test]
    fn keys_carry_earlier_generations_and_pins_name_them() {
        let k1 = StoreKey::generate();
        let k2 = k1.rotate();
        let k4 = k2.rotate().rotate();
        let back = StoreKey::from_plaintext(&k4.to_plaintext()).unwrap();
        assert_eq!(back.generation(), 4);
        for g in 1..=4 {
            assert!(back.pin_tag(g).is_some(), "generation {g}");
        }
        assert_eq!(back.pin_tag(2), k2.pin_tag(2));
        assert_eq!(back.pin_tag(1), k1.pin_tag(1));
        assert_eq!(back.pin_tag(5), None);
        // A fork from generation 1 (a former member's old checkout,
        // rekeyed): the same id, another key of generation 2.
        let fork = k1.rotate().rotate().rotate();
        assert_eq!(fork.id(), k4.id());
        assert_ne!(fork.pin_tag(2), k4.pin_tag(2));
        assert_eq!(fork.pin_tag(1), k4.pin_tag(1));
        assert_eq!(
            k4.pin(),
            format!("{}:4:{}", k4.id(), k4.pin_tag(4).unwrap())
        );
        // Earlier lines out of place are refused.
        let text = String::from_utf8(k4.to_plaintext().to_vec()).unwrap();
        for bad in [
            text.replace("earlier 2 ", "earlier 4 "),
            text.replace("earlier 3 ", "earlier 2 "),
            text.replace("earlier 2 ", "earlier 1 "),
            format!("{text}junk\n"),
        ] {
            assert!(
                matches!(StoreKey::from_plaintext(bad.as_bytes()), Err(e) if e.contains("bad earlier key line")),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_index_mac_covers_every_field() {
        let k = StoreKey::generate();
        let mut i = Index {
            format: FORMAT,
            id: k.id(),
            generation: 1,
            key_file: "aa".into(),
            recipients: vec!["age1x".into()],
            audit_floor: 3,
            mac: String::new(),
            secrets: BTreeMap::from([("A".into(), "bb".into())]),
        };
        i.seal(&k);
        let parsed = Index::parse(i.to_toml().as_bytes()).unwrap();
        assert!(parsed.verify(&k));
        let mut changed = parsed.clone();
        changed.recipients.push("age1y".into());
        assert!(!changed.verify(&k));
        let mut changed = parsed.clone();
        changed.secrets.insert("B".into(), "cc".into());
        assert!(!changed.verify(&k));
        let mut changed = parsed;
        changed.audit_floor = 2;
        assert!(!changed.verify(&k));
        assert!(!i.verify(&StoreKey::generate()));
    }
}
