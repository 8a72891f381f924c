//! Sealing with the device's TPM2 through `systemd-creds` (systemd 250 or
//! later; Debian bookworm has 252).
//!
//! Why `systemd-creds` and not a TPM2 library: the device binary stays
//! static, small and pure Rust (the TSS libraries are C, dynamically
//! loaded by systemd), and the sealing is systemd's own, audited format
//! (AES-256-GCM under a key the TPM unseals, in an HMAC-authenticated,
//! parameter-encrypted session), the same one `LoadCredentialEncrypted=`
//! reads. What this module asks of it:
//!
//! - `encrypt --with-key=tpm2`: the TPM alone (not `host+tpm2`: the host key
//!   lives on the same disk, so it adds nothing against a copied disk and
//!   only one more file to lose).
//! - `--name=NAME` on both sides: the name is inside the authenticated
//!   blob, and decrypting refuses a credential made under another name,
//!   so another credential of this machine cannot be swapped in.
//! - `--tpm2-pcrs=LIST`, always explicit: systemd binds to PCR 7 by
//!   default (the Secure Boot policy, which a firmware or dbx update
//!   changes: the device would lock itself out). An empty list is no PCR.
//!   systemd 252 writes such a credential but cannot decrypt it ("TPM2 PCR
//!   bank invalid or not supported": it records no PCR bank); so every
//!   sealing is decrypted again before it is kept, and when the empty list
//!   does not come back, PCR 17 is used instead: a dynamic-launch (DRTM)
//!   PCR that stays at its reset value on every platform that never does a
//!   dynamic launch, and that software at locality 0 can neither extend
//!   nor reset, so no update changes it. On a machine that did a dynamic
//!   launch (Intel TXT/tboot, AMD SKINIT) it holds that launch's
//!   measurement, which an SINIT or tboot update changes: systemd 252
//!   says when the PCR is at its reset value, and without that the
//!   fallback is refused ([`Tpm2Error::DynamicLaunch`]).
//! - input and output through pipes (`-` `-`): the plaintext never touches
//!   a file.

use super::tool::{Output, Tool, ToolError};
use crate::config::Pcrs;
use base64::Engine;
use std::path::Path;
use thiserror::Error;
use zeroize::Zeroizing;

/// The PCR used for "no PCR" where systemd-creds cannot decrypt a
/// credential bound to none (systemd 252).
pub const NO_PCR_FALLBACK: u8 = 17;
/// Largest credential read or plaintext sealed (systemd's own limit is 1 MiB;
/// ours are a few hundred bytes).
pub const MAX_CREDENTIAL_BYTES: usize = 64 * 1024;

#[derive(Debug, Error)]
pub enum Tpm2Error {
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error("systemd-creds encrypt --with-key={key} failed ({why}): {hint}")]
    Encrypt {
        key: &'static str,
        why: String,
        hint: &'static str,
    },
    #[error("systemd-creds decrypt failed ({why})")]
    Decrypt { why: String },
    #[error("systemd-creds cannot decrypt a TPM2 credential bound to no PCR (systemd 252), and PCR {NO_PCR_FALLBACK}, used instead elsewhere, holds a measurement on this machine (a dynamic launch ran at this boot: Intel TXT/tboot, AMD SKINIT or Secure Launch): binding --with-key={key} to it would lock the key out after any change to that launch (an SINIT ACM or tboot update, TXT switched off), so nothing was sealed. Name the PCRs in /etc/sealed-firstboot.conf (tpm2_pcrs = 17 accepts the binding to this launch) or use systemd 253 or later")]
    DynamicLaunch { key: &'static str },
    #[error("the sealed form did not decrypt back to what was sealed ({why}); nothing was kept")]
    Verify { why: String },
}

/// What could not be sealed hints at.
const NO_TPM_HINT: &str = "is there a usable TPM2 (systemd-creds has-tpm2; /dev/tpmrm0), and are the TPM2 libraries systemd loads installed (libtss2-esys-3.0.2-0, libtss2-rc0, libtss2-mu0 on Debian)?";

/// The systemd-creds of `root`.
pub fn tool(root: &Path) -> Result<Tool, ToolError> {
    Tool::find(
        root,
        "systemd-creds",
        "TPM2",
        ": identity = tpm2 and credential-encrypted need systemd's systemd-creds (systemd 250 or later)",
    )
}

/// How long to wait for the TPM's device node on the device: its driver
/// may be a module that udev loads while sealed-firstboot already runs (an
/// SPI TPM on a Raspberry Pi HAT: tpm_tis_spi).
pub const DEVICE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The systemd-creds of `root`, for an operation that needs the TPM2: on
/// the device, once `/dev/tpmrm0` (or `/dev/tpm0`) is there, waiting at
/// most [`DEVICE_WAIT`] for it (then systemd-creds says what is missing).
pub fn tool_for_tpm(root: &Path) -> Result<Tool, ToolError> {
    let tool = tool(root)?;
    if tool.system {
        let started = std::time::Instant::now();
        while !["/dev/tpmrm0", "/dev/tpm0"]
            .iter()
            .any(|d| Path::new(d).exists())
            && started.elapsed() < DEVICE_WAIT
        {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    Ok(tool)
}

/// A sealed credential and the PCRs it is bound to.
pub struct Sealed {
    /// What `systemd-creds encrypt` wrote (base64 text).
    pub blob: Vec<u8>,
    pub pcrs: Pcrs,
    /// Said when the PCRs differ from the ones asked for.
    pub note: Option<String>,
}

/// Encrypt `plaintext` as credential `name` with `key` (`tpm2`,
/// `host+tpm2`, `host`), bound to `pcrs` when the TPM2 takes part, and
/// check it decrypts back before returning it.
pub fn seal(
    tool: &Tool,
    name: &str,
    key: &'static str,
    pcrs: &Pcrs,
    plaintext: &[u8],
) -> Result<Sealed, Tpm2Error> {
    let uses_tpm2 = key != "host";
    let (first, _) = encrypt(tool, name, key, pcrs, plaintext)?;
    match verify(tool, name, &first, plaintext) {
        Ok(()) => {
            return Ok(Sealed {
                blob: first,
                pcrs: pcrs.clone(),
                note: None,
            })
        }
        Err(e) if !(uses_tpm2 && pcrs.is_empty()) => return Err(e),
        Err(_) => {}
    }
    let fallback = Pcrs::from_indexes(vec![NO_PCR_FALLBACK]);
    let (blob, said) = encrypt(tool, name, key, &fallback, plaintext)?;
    // systemd 252 says so when the PCR is still at its reset value; when it
    // does not, PCR 17 holds a measurement: a dynamic launch ran at this
    // boot, and binding to it is a PCR policy nobody asked for.
    if !said.contains(PCR_AT_RESET_VALUE) {
        return Err(Tpm2Error::DynamicLaunch { key });
    }
    verify(tool, name, &blob, plaintext)?;
    Ok(Sealed {
        blob,
        pcrs: fallback,
        note: Some(format!(
            "systemd-creds cannot decrypt a TPM2 credential bound to no PCR (systemd 252); sealed to PCR {NO_PCR_FALLBACK} instead, which stays at its reset value on a machine that does no dynamic launch (no Intel TXT/tboot, AMD SKINIT or Secure Launch): no firmware, boot loader or OS update changes it there"
        )),
    })
}

/// What systemd 252's `encrypt` says when the PCRs bound are still at
/// their reset value (all zeros or all ones).
const PCR_AT_RESET_VALUE: &str = "none of the selected PCRs are valid";

fn encrypt(
    tool: &Tool,
    name: &str,
    key: &'static str,
    pcrs: &Pcrs,
    plaintext: &[u8],
) -> Result<(Vec<u8>, String), Tpm2Error> {
    let mut args = vec![
        "encrypt".to_string(),
        format!("--name={name}"),
        format!("--with-key={key}"),
    ];
    if key != "host" {
        args.push(format!("--tpm2-pcrs={}", pcrs.arg()));
    }
    args.extend(["-".to_string(), "-".to_string()]);
    let out = tool.run(&args, plaintext, MAX_CREDENTIAL_BYTES * 2)?;
    if !out.success || out.stdout.is_empty() {
        return Err(Tpm2Error::Encrypt {
            key,
            why: out.failure(),
            hint: if key == "host" {
                "is /var/lib/systemd writable?"
            } else {
                NO_TPM_HINT
            },
        });
    }
    // The ciphertext is no secret; what systemd-creds said, for the PCR
    // fallback.
    Ok((out.stdout.to_vec(), out.stderr.clone()))
}

/// Decrypt credential `name` (the TPM2 it is bound to must be this one).
pub fn unseal(tool: &Tool, name: &str, blob: &[u8]) -> Result<Zeroizing<Vec<u8>>, Tpm2Error> {
    let args = [
        "decrypt".to_string(),
        format!("--name={name}"),
        "-".into(),
        "-".into(),
    ];
    let out: Output = tool.run(&args, blob, MAX_CREDENTIAL_BYTES)?;
    if !out.success {
        return Err(Tpm2Error::Decrypt { why: out.failure() });
    }
    Ok(out.stdout)
}

fn verify(tool: &Tool, name: &str, blob: &[u8], plaintext: &[u8]) -> Result<(), Tpm2Error> {
    match unseal(tool, name, blob) {
        Ok(back) if back.as_slice() == plaintext => Ok(()),
        Ok(_) => Err(Tpm2Error::Verify {
            why: "other bytes came back".into(),
        }),
        Err(e) => Err(Tpm2Error::Verify {
            why: sealed_bundle::report::chain(&e),
        }),
    }
}

/// What a systemd credential's clear header says it is bound to: the key
/// kind and, with a TPM2, the PCR mask. Read for `status` only (systemd
/// authenticates the header when it decrypts); `None` when it does not
/// parse.
pub fn describe(blob: &[u8]) -> Option<(&'static str, Option<Pcrs>)> {
    let text: String = std::str::from_utf8(blob)
        .ok()?
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(text.as_bytes())
        .ok()?;
    // struct encrypted_credential_header: sd_id128_t id; le32 key_size,
    // block_size, iv_size, tag_size; iv[], aligned to 8.
    let id = raw.get(..16)?;
    let kind = CREDENTIAL_IDS
        .iter()
        .find(|(i, _)| i.as_slice() == id)
        .map(|(_, k)| *k)?;
    if !kind.contains("tpm2") {
        return Some((kind, None));
    }
    let iv_size = u32::from_le_bytes(raw.get(24..28)?.try_into().ok()?) as usize;
    let tpm2 = (32usize.checked_add(iv_size)?).checked_add(7)? / 8 * 8;
    // struct tpm2_credential_header: le64 pcr_mask; …
    let mask = u64::from_le_bytes(raw.get(tpm2..tpm2 + 8)?.try_into().ok()?);
    let pcrs = (0u8..24).filter(|i| mask & (1 << i) != 0).collect();
    Some((kind, Some(Pcrs::from_indexes(pcrs))))
}

/// systemd's credential key ids (`src/shared/creds-util.h`).
const CREDENTIAL_IDS: [([u8; 16], &str); 6] = [
    (hex16("5a1c6a86df9d4096b1d5a65e0862f19a"), "host"),
    (hex16("0c7cc07b117645919c4b0bea08bc20fe"), "tpm2"),
    (
        hex16("faf7eb9341e3412ca1a436f95a29362f"),
        "tpm2 (signed PCR policy)",
    ),
    (hex16("93a894094874449090caf2fc93cab553"), "host+tpm2"),
    (
        hex16("af4950a849134eb1a73846304ff30c05"),
        "host+tpm2 (signed PCR policy)",
    ),
    (
        hex16("058469daf6f54324800549da0f8ea2fb"),
        "none (tpm2-absent)",
    ),
];

const fn hex16(s: &str) -> [u8; 16] {
    let b = s.as_bytes();
    let mut out = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        out[i] = (nibble(b[2 * i]) << 4) | nibble(b[2 * i + 1]);
        i += 1;
    }
    out
}

const fn nibble(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => 0,
    }
}
