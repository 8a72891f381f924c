//! The plaintext of a bundle: `zstd(tar(manifest.json + secrets/NAME…))`,
//! built and parsed with size limits checked before reading.

use crate::error::BundleError;
use crate::limits;
use crate::manifest::Manifest;
use std::collections::BTreeMap;
use std::io::Read;
use zeroize::Zeroizing;

const MANIFEST_MEMBER: &str = "manifest.json";
const SECRET_PREFIX: &str = "secrets/";

/// Manifest plus one value per manifest entry.
pub struct Contents {
    pub manifest: Manifest,
    /// Secret values by name. Zeroized on drop.
    pub values: BTreeMap<String, Zeroizing<Vec<u8>>>,
}

impl std::fmt::Debug for Contents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Contents")
            .field("manifest", &self.manifest)
            .field("values", &format_args!("<{} redacted>", self.values.len()))
            .finish()
    }
}

/// A value (or a rendering) of `size` bytes must fit the per-secret limit;
/// `what` describes it for the error.
fn within_limit(size: impl TryInto<u64>, what: impl FnOnce() -> String) -> Result<(), BundleError> {
    match size.try_into() {
        Ok(n) if n <= limits::MAX_SECRET_BYTES => Ok(()),
        _ => Err(BundleError::Limit(format!(
            "{} (limit {})",
            what(),
            limits::MAX_SECRET_BYTES
        ))),
    }
}

/// Everything a generation unseals together (secrets and rendered
/// templates, `total` bytes) must fit [`limits::MAX_UNSEALED_BYTES`].
pub(crate) fn within_total(total: u64) -> Result<(), BundleError> {
    if total > limits::MAX_UNSEALED_BYTES {
        return Err(BundleError::Limit(format!(
            "the secrets and rendered templates come to {total} bytes, more than the {} a device unseals at once",
            limits::MAX_UNSEALED_BYTES
        )));
    }
    Ok(())
}

impl Contents {
    /// The bundle as a whole is valid: its manifest (with `paths`, where
    /// files may go), exactly one value per entry within the per-secret
    /// limit, every template rendered and checked (each placeholder names
    /// a secret, each value fits its escape, the rendering fits the limit),
    /// and everything unsealed together (secrets and rendered templates)
    /// within [`limits::MAX_UNSEALED_BYTES`]. A partial bundle is checked
    /// the same way for what it holds; a template of it that uses secrets
    /// it does not carry is rendered when the device merges it with its
    /// store (and a partial bundle on an empty store is a full one).
    pub fn validate(&self, paths: &crate::paths::PathPolicy) -> Result<(), BundleError> {
        self.manifest.validate(paths)?;
        let mut total: u64 = 0;
        for s in self.manifest.entries() {
            let v = self.values.get(&s.name).ok_or_else(|| {
                BundleError::Manifest(format!("secret {} has no value in the bundle", s.name))
            })?;
            within_limit(v.len(), || {
                format!("secret {} is {} bytes", s.name, v.len())
            })?;
        }
        if self.values.len() != self.manifest.secrets.len() + self.manifest.templates.len() {
            return Err(BundleError::Manifest(
                "the bundle holds values that the manifest does not list".into(),
            ));
        }
        for s in &self.manifest.secrets {
            total = total.saturating_add(self.values.get(&s.name).map_or(0, |v| v.len() as u64));
        }
        for t in &self.manifest.templates {
            let text = self
                .values
                .get(&t.name)
                .map(|v| v.as_slice())
                .unwrap_or_default();
            let in_template =
                |e: String| BundleError::Manifest(format!("template {}: {e}", t.name));
            let names = crate::template::placeholders(text).map_err(in_template)?;
            let absent: Vec<&String> = names
                .iter()
                .filter(|n| !self.manifest.secrets.iter().any(|s| &s.name == *n))
                .collect();
            if !absent.is_empty() {
                if self.manifest.partial {
                    // Rendered once merged; the values it has must fit
                    // their escapes already.
                    crate::template::check_escapes(text, &self.values).map_err(in_template)?;
                    continue;
                }
                return Err(BundleError::Manifest(format!(
                    "template {}: ${{SECRET:{}}} names no secret of the bundle",
                    t.name, absent[0]
                )));
            }
            // Sized before rendering: many placeholders of a large secret
            // must not allocate without limit. The device renders it at
            // every unseal: it must fit there too.
            let size = crate::template::rendered_len(text, &self.values).map_err(in_template)?;
            within_limit(size, || {
                format!("template {} renders to {size} bytes", t.name)
            })?;
            total = total.saturating_add(size);
            within_total(total)?;
            // Every value fits its escape (no NUL, UTF-8 where asked, …).
            crate::template::render(text, &self.values).map_err(in_template)?;
        }
        within_total(total)
    }

    /// Serialise to the compressed plaintext.
    pub(crate) fn encode(
        &self,
        paths: &crate::paths::PathPolicy,
    ) -> Result<Zeroizing<Vec<u8>>, BundleError> {
        self.validate(paths)?;
        let manifest = Zeroizing::new(
            serde_json::to_vec_pretty(&self.manifest)
                .map_err(|e| BundleError::Payload(format!("encoding manifest: {e}")))?,
        );
        // Size the buffer up front so it never reallocates and leaves
        // unzeroized copies of secret bytes behind.
        let padded = |n: usize| 512 + n.div_ceil(512) * 512;
        let capacity = padded(manifest.len())
            + self.values.values().map(|v| padded(v.len())).sum::<usize>()
            + 1024;
        let mut builder =
            tar::Builder::new(SecretBuf(Zeroizing::new(Vec::with_capacity(capacity))));
        append(&mut builder, MANIFEST_MEMBER, &manifest)?;
        for (name, value) in &self.values {
            append(&mut builder, &format!("{SECRET_PREFIX}{name}"), value)?;
        }
        let SecretBuf(tar) = builder
            .into_inner()
            .map_err(|e| BundleError::Payload(format!("finishing archive: {e}")))?;
        // Bundles are small; ruzstd's level comparable to zstd -1 is plenty.
        // SecretBuf grows without leaving unzeroized copies behind.
        let mut out = SecretBuf(Zeroizing::new(Vec::with_capacity(tar.len() / 2 + 1024)));
        ruzstd::encoding::compress(
            &tar[..],
            &mut out,
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        let SecretBuf(out) = out;
        Ok(out)
    }

    /// Parse a decrypted payload, enforcing every limit while reading, and
    /// validate it as a whole with `paths` (the fuzzers call this directly).
    pub fn decode(
        compressed: &[u8],
        paths: &crate::paths::PathPolicy,
    ) -> Result<Contents, BundleError> {
        let mut input = compressed;
        let decoder = ruzstd::decoding::StreamingDecoder::new(&mut input)
            .map_err(|e| BundleError::Payload(format!("zstd: {e}")))?;
        let mut archive = tar::Archive::new(decoder.take(limits::MAX_TOTAL_BYTES));
        let mut manifest: Option<Manifest> = None;
        let mut values = BTreeMap::new();
        let entries = archive
            .entries()
            .map_err(|e| BundleError::Payload(format!("archive: {e}")))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| BundleError::Payload(format!("archive: {e}")))?;
            if entry.header().entry_type() != tar::EntryType::Regular {
                return Err(BundleError::Payload(
                    "archive holds a non-regular member".into(),
                ));
            }
            let path = entry.path_bytes().into_owned();
            let path = String::from_utf8(path)
                .map_err(|_| BundleError::Payload("member name is not UTF-8".into()))?;
            let size = entry
                .header()
                .size()
                .map_err(|e| BundleError::Payload(format!("member size: {e}")))?;
            if path == MANIFEST_MEMBER {
                if manifest.is_some() {
                    return Err(BundleError::Payload("two manifests".into()));
                }
                if size > limits::MAX_MANIFEST_BYTES {
                    return Err(BundleError::Limit(format!(
                        "manifest is {size} bytes (limit {})",
                        limits::MAX_MANIFEST_BYTES
                    )));
                }
                let data = read_member(&mut entry, size)?;
                manifest = Some(
                    serde_json::from_slice(&data)
                        .map_err(|e| BundleError::Manifest(e.to_string()))?,
                );
            } else if let Some(name) = path.strip_prefix(SECRET_PREFIX) {
                if values.len() >= limits::MAX_SECRETS {
                    return Err(BundleError::Limit(format!(
                        "more than {} secrets",
                        limits::MAX_SECRETS
                    )));
                }
                if size > limits::MAX_SECRET_BYTES {
                    return Err(BundleError::Limit(format!(
                        "a secret is {size} bytes (limit {})",
                        limits::MAX_SECRET_BYTES
                    )));
                }
                let data = read_member(&mut entry, size)?;
                if values.insert(name.to_string(), data).is_some() {
                    return Err(BundleError::Payload(format!("secret {name} appears twice")));
                }
            } else {
                return Err(BundleError::Payload(format!("unexpected member {path:?}")));
            }
        }
        let manifest =
            manifest.ok_or_else(|| BundleError::Payload("archive has no manifest".into()))?;
        let contents = Contents { manifest, values };
        contents.validate(paths)?;
        Ok(contents)
    }
}

/// A write buffer that zeroizes its bytes on drop.
struct SecretBuf(Zeroizing<Vec<u8>>);

impl std::io::Write for SecretBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let need = self.0.len() + buf.len();
        if need > self.0.capacity() {
            // Move to a larger buffer ourselves: the old one is zeroized on
            // drop, where Vec's own growth would free it as it is.
            let mut bigger = Zeroizing::new(Vec::with_capacity(need.max(2 * self.0.capacity())));
            bigger.extend_from_slice(&self.0);
            self.0 = bigger;
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn append(
    builder: &mut tar::Builder<SecretBuf>,
    path: &str,
    data: &[u8],
) -> Result<(), BundleError> {
    let mut header = tar::Header::new_ustar();
    header.set_size(data.len() as u64);
    header.set_mode(0o600);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    builder
        .append_data(&mut header, path, data)
        .map_err(|e| BundleError::Payload(format!("archiving {path}: {e}")))
}

fn read_member<R: Read>(entry: &mut R, size: u64) -> Result<Zeroizing<Vec<u8>>, BundleError> {
    // `size` was checked against a limit by the caller before this allocation.
    let mut data = Zeroizing::new(vec![0u8; size as usize]);
    entry
        .read_exact(&mut data)
        .map_err(|e| BundleError::Payload(format!("reading member: {e}")))?;
    Ok(data)
}
