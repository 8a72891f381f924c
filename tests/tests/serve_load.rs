//! A bounded load test of `build-image serve` on loopback: 2,000 requests
//! from 50 concurrent clients, reads and writes mixed on the same secrets,
//! while the CLI writes to the same store. No request may fail; no write
//! may be lost or get another's version; every version's file holds the
//! value its writer sent; the store verifies afterwards. Latencies are
//! printed (p50, p90, p99, max), never asserted.

#![forbid(unsafe_code)]

use sealed_image_tests::serve::{Server, Site};
use sealed_image_tests::*;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const REQUESTS: usize = 2000;
const CLIENTS: usize = 50;
const NAMES: usize = 8;
const CLI_WRITES: usize = 5;

#[derive(Default)]
struct Record {
    /// (name, version) → the value its writer sent.
    written: BTreeMap<(String, u64), String>,
    /// (name, version, value) a reveal returned.
    revealed: Vec<(String, u64, String)>,
    failures: Vec<String>,
    latencies: Vec<Duration>,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[test]
fn concurrent_reads_and_writes_lose_nothing() {
    let site = Site::new();
    let srv = Arc::new(Server::start(site.serve_cmd()));
    let rec = Arc::new(Mutex::new(Record::default()));
    for n in 0..NAMES {
        let name = format!("LOAD_{n}");
        let value = format!("initial-{n}");
        let r = srv.send(
            "POST",
            "/api/secrets",
            &json!({"name": name, "value": value}),
        );
        assert_eq!(r.status, 201, "{}", r.text());
        rec.lock().unwrap().written.insert((name, 1), value);
    }
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    // The CLI writes to the same store meanwhile (the same lock).
    let cli = {
        let store = site.store.clone();
        let key = site.key.clone();
        std::thread::spawn(move || {
            let mut outs = Vec::new();
            for i in 0..CLI_WRITES {
                let mut c = build_image_cmd();
                c.arg("store")
                    .arg("--store")
                    .arg(&store)
                    .args(["set", &format!("CLI_{i}"), "-q"])
                    .env("SEALED_IMAGE_STORE_IDENTITY_FILE", &key)
                    .env_remove("SEALED_IMAGE_STORE_IDENTITY");
                outs.push(output_with_stdin(
                    &mut c,
                    format!("cli-value-{i}").as_bytes(),
                ));
            }
            outs
        })
    };
    let workers: Vec<_> = (0..CLIENTS)
        .map(|w| {
            let srv = srv.clone();
            let rec = rec.clone();
            let next = next.clone();
            std::thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= REQUESTS {
                    break;
                }
                let name = format!("LOAD_{}", i % NAMES);
                let t0 = Instant::now();
                // 20% writes, 5% reveals, 75% reads.
                let (what, r) = match i % 20 {
                    0..=3 => {
                        let value = format!("w{w}-r{i}-value");
                        let r = srv.send(
                            "PUT",
                            &format!("/api/secrets/{name}"),
                            &json!({"value": value}),
                        );
                        if r.status == 200 {
                            let v = r.json()["version"].as_u64().unwrap_or(0);
                            let mut g = rec.lock().unwrap();
                            if g.written.insert((name.clone(), v), value).is_some() {
                                g.failures
                                    .push(format!("{name} v{v} was given to two writes"));
                            }
                        }
                        ("PUT", r)
                    }
                    4 => {
                        let r = srv.send("POST", &format!("/api/secrets/{name}/value"), &json!({}));
                        if r.status == 200 {
                            let j = r.json();
                            rec.lock().unwrap().revealed.push((
                                name.clone(),
                                j["version"].as_u64().unwrap_or(0),
                                j["value"].as_str().unwrap_or("").to_string(),
                            ));
                        }
                        ("reveal", r)
                    }
                    5..=11 => ("list", srv.get("/api/secrets")),
                    12..=15 => ("get", srv.get(&format!("/api/secrets/{name}"))),
                    16..=17 => ("status", srv.get("/api/recipes/kiosk/status")),
                    _ => ("audit", srv.get(&format!("/api/audit?name={name}&limit=5"))),
                };
                let took = t0.elapsed();
                let mut g = rec.lock().unwrap();
                g.latencies.push(took);
                if !(200..300).contains(&r.status) {
                    g.failures
                        .push(format!("{what} {name}: {} {}", r.status, r.text()));
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let wall = started.elapsed();
    for (i, out) in cli.join().unwrap().iter().enumerate() {
        assert_success(out, format!("store set CLI_{i} while the server writes"));
    }
    let rec = rec.lock().unwrap();
    assert!(
        rec.failures.is_empty(),
        "{} failures: {:#?}",
        rec.failures.len(),
        &rec.failures[..rec.failures.len().min(10)]
    );
    let mut lat = rec.latencies.clone();
    lat.sort();
    eprintln!(
        "serve load: {} requests from {CLIENTS} clients in {:.1} s ({:.0} req/s): p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        lat.len(),
        wall.as_secs_f64(),
        lat.len() as f64 / wall.as_secs_f64(),
        percentile(&lat, 0.5).as_secs_f64() * 1e3,
        percentile(&lat, 0.9).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        lat.last().unwrap().as_secs_f64() * 1e3,
    );
    assert_eq!(lat.len(), REQUESTS);

    // No lost version: each name's versions are 1..=N, each written once,
    // and the store's current version is N.
    let identity =
        age::x25519::Identity::from_str(std::fs::read_to_string(&site.key).unwrap().trim())
            .unwrap();
    let puts = REQUESTS / 5;
    let mut total = 0;
    for n in 0..NAMES {
        let name = format!("LOAD_{n}");
        let versions: BTreeSet<u64> = rec
            .written
            .keys()
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| *v)
            .collect();
        let max = *versions.iter().max().unwrap();
        assert_eq!(
            versions,
            (1..=max).collect(),
            "{name}: versions lost or doubled"
        );
        total += versions.len() - 1;
        let meta = srv.get(&format!("/api/secrets/{name}")).json();
        assert_eq!(meta["scopes"][0]["current"].as_u64(), Some(max), "{name}");
        assert_eq!(
            meta["scopes"][0]["versions"].as_array().unwrap().len() as u64,
            max
        );
        // Every version file holds what its writer sent (no mixed value).
        for v in 1..=max {
            let file = site.store.join(format!("secrets/{name}/global/v{v}.age"));
            let plain = age::decrypt(&identity, &std::fs::read(&file).unwrap()).unwrap();
            assert_eq!(
                String::from_utf8(plain).unwrap(),
                rec.written[&(name.clone(), v)],
                "{name} v{v}"
            );
        }
    }
    assert!(total <= puts && total > 0, "{total} of {puts} writes");
    assert_eq!(total, puts, "every PUT made exactly one version");
    for (name, v, value) in &rec.revealed {
        assert_eq!(
            rec.written.get(&(name.clone(), *v)),
            Some(value),
            "a reveal of {name} v{v} returned another write's value"
        );
    }
    // The CLI's writes are there, and the store verifies whole.
    let list = srv.get("/api/secrets").json();
    let names: BTreeSet<&str> = list["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    for i in 0..CLI_WRITES {
        assert!(
            names.contains(format!("CLI_{i}").as_str()),
            "CLI_{i} lost: {names:?}"
        );
    }
    let out = site.store_cmd(&["audit", "--verify"]).output().unwrap();
    assert_success(&out, "store audit --verify after the load");
    let audit = srv.get("/api/audit?op=update&limit=10000").json();
    assert_eq!(
        audit["matching"].as_u64(),
        Some(puts as u64),
        "one audit line per write"
    );
}
