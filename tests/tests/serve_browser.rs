//! The page of `build-image serve` in a real headless Chromium (Debian's
//! `chromium` and `chromium-driver`, driven over WebDriver): log in with
//! the keyboard, watch a recipe's ✗ turn ✓ as a secret is added on the page
//! and another by the CLI, reveal and hide, rotate, edit, history, audit,
//! delete. Every page's HTML is searched for the marker value: it is there
//! only while the reveal dialog shows it. The console must hold no CSP
//! violation. Screenshots of the main views go to target/serve-screenshots/.

#![forbid(unsafe_code)]

use sealed_image_tests::serve::{Server, Site};
use sealed_image_tests::webdriver::{artifact_dir, Driver};
use sealed_image_tests::*;
use serde_json::json;

const MARKER: &str = "browser-MARKER-c0ffee-41";
const MARKER2: &str = "browser-MARKER-rotated-93";

#[test]
#[ignore = "needs chromium, chromedriver (chromium-driver); scripts/test runs it"]
fn the_page_in_a_real_browser() {
    require_tools_from(&[
        ("chromium", "chromium"),
        ("chromedriver", "chromium-driver"),
    ]);
    let shots = artifact_dir("serve-screenshots");
    let site = Site::new();
    let srv = Server::start(site.serve_cmd());
    let driver = Driver::start();
    let b = driver.session();
    let base = format!("http://{}/", srv.addr);
    let mut pages: Vec<(String, String)> = Vec::new();
    let mut snap = |b: &sealed_image_tests::webdriver::Session, what: &str| {
        pages.push((what.to_string(), b.source()));
    };
    let shot = |b: &sealed_image_tests::webdriver::Session, name: &str| {
        b.screenshot(&shots.join(format!("{name}.png")));
    };

    // Log in with the keyboard: the token typed, Enter submits.
    b.goto(&base);
    b.wait(
        "!document.getElementById('view-login').hidden",
        "the login view",
    );
    shot(&b, "01-login");
    b.type_into("#login-token", "not-the-token-at-all");
    b.type_into("#login-token", "\u{E007}");
    b.wait(
        "!document.getElementById('login-error').hidden",
        "the login error",
    );
    assert!(b
        .js(
            "return document.getElementById('login-error').textContent;",
            json!([])
        )
        .as_str()
        .unwrap()
        .contains("wrong access token"));
    // The failure slows the next attempt down: wait it out.
    std::thread::sleep(std::time::Duration::from_millis(400));
    b.clear("#login-token");
    b.type_into("#login-token", &srv.token);
    b.type_into("#login-token", "\u{E007}");
    b.wait(
        "!document.getElementById('view-secrets').hidden",
        "the secrets view",
    );
    snap(&b, "secrets (empty)");
    let cookies = b.js("return document.cookie;", json!([]));
    assert_eq!(cookies, json!(""), "the session cookie is HttpOnly");
    // A reload keeps the session: the tab kept its CSRF token (every
    // request of the session sends it, reads too).
    b.js(
        "window.beforeReload = true; location.reload(); return null;",
        json!([]),
    );
    b.wait(
        "!window.beforeReload && document.getElementById('view-login').hidden && !document.getElementById('view-secrets').hidden",
        "the secrets view after a reload",
    );

    // The setup view: both store secrets missing on both devices.
    b.goto(&format!("{base}#/recipes/kiosk"));
    let cell = |secret: &str, device: &str, class: &str| {
        format!("document.querySelector('[data-cell=\"{secret}|{device}\"].{class}')")
    };
    b.wait(
        &cell("wifi_psk", "kiosk-1", "missing"),
        "wifi_psk ✗ on kiosk-1",
    );
    b.wait(
        &cell("api_token", "kiosk-2", "missing"),
        "api_token ✗ on kiosk-2",
    );
    let text = b.js(
        "return document.getElementById('recipe-body').textContent;",
        json!([]),
    );
    let text = text.as_str().unwrap();
    assert!(text.contains("✗") && !text.contains("✓"), "{text}");
    assert!(
        text.contains("build-image store set WIFI_PSK --store"),
        "the command that creates it: {text}"
    );
    snap(&b, "setup (missing)");
    shot(&b, "02-setup-missing");

    // Add WIFI_PSK from the setup view: the dialog comes with its name and
    // the recipe's description; the value goes into a password input.
    b.click("button[data-action=add][data-secret=WIFI_PSK]");
    b.wait(
        "document.getElementById('dlg-create').open",
        "the create dialog",
    );
    let prefilled = b.js(
        "return [document.getElementById('create-name').value, document.getElementById('create-description').value, document.getElementById('create-value').type];",
        json!([]),
    );
    assert_eq!(
        prefilled,
        json!(["WIFI_PSK", "WPA2 passphrase of the site Wi-Fi", "password"])
    );
    b.type_into("#create-value", MARKER);
    snap(&b, "create dialog with the value typed");
    shot(&b, "03-create-dialog");
    b.click("#create-submit");
    b.wait(
        "!document.getElementById('dlg-create').open",
        "the dialog closes",
    );
    b.wait(&cell("wifi_psk", "kiosk-1", "ok"), "wifi_psk ✓ on kiosk-1");
    b.wait(&cell("wifi_psk", "kiosk-2", "ok"), "wifi_psk ✓ on kiosk-2");
    snap(&b, "setup (wifi added)");
    // The CLI adds API_TOKEN: the open view turns it ✓ by itself.
    let out = site
        .store_cmd(&["set", "API_TOKEN", "--generate", "-q"])
        .output()
        .unwrap();
    assert_success(&out, "store set API_TOKEN --generate");
    b.wait(&cell("api_token", "kiosk-1", "ok"), "api_token ✓ (polled)");
    b.wait(
        "document.getElementById('recipe-ready').classList.contains('ok')",
        "ready to build",
    );
    snap(&b, "setup (all present)");
    shot(&b, "04-setup-present");

    // The secrets table: metadata only.
    b.goto(&format!("{base}#/secrets"));
    b.wait(
        "document.querySelector('#secrets-body tr[data-secret=WIFI_PSK]')",
        "the WIFI_PSK row",
    );
    snap(&b, "secrets");
    shot(&b, "05-secrets");

    // Reveal: the value shows in the dialog, and goes when it is hidden.
    b.click("button[data-action=reveal][data-secret=WIFI_PSK]");
    b.wait(
        &format!("document.getElementById('reveal-value').textContent === '{MARKER}'"),
        "the revealed value",
    );
    let revealed = b.source();
    assert!(revealed.contains(MARKER), "the reveal shows it");
    shot(&b, "06-revealed");
    b.click("#reveal-hide");
    b.wait(
        "!document.getElementById('dlg-reveal').open && document.getElementById('reveal-value').textContent === ''",
        "the value hidden again",
    );
    snap(&b, "after hiding the value");

    // Rotate with a new typed value: v2.
    b.click("button[data-action=rotate][data-secret=WIFI_PSK]");
    b.wait(
        "document.getElementById('dlg-rotate').open",
        "the rotate dialog",
    );
    b.type_into("#rotate-value", MARKER2);
    b.click("#rotate-submit");
    b.wait(
        "(document.querySelector('tr[data-secret=WIFI_PSK] [data-field=version]') || {}).textContent === 'v2 (2 versions)'",
        "v2 after the rotation",
    );
    snap(&b, "after rotating");

    // Edit the description alone (no new version).
    b.click("button[data-action=edit][data-secret=WIFI_PSK]");
    b.wait(
        "document.getElementById('dlg-edit').open",
        "the edit dialog",
    );
    b.clear("#edit-description");
    b.type_into("#edit-description", "Lobby and office Wi-Fi");
    b.click("#edit-submit");
    b.wait(
        "document.querySelector('tr[data-secret=WIFI_PSK]').textContent.includes('Lobby and office Wi-Fi')",
        "the new description",
    );
    let v = b.js(
        "return document.querySelector('tr[data-secret=WIFI_PSK] [data-field=version]').textContent;",
        json!([]),
    );
    assert_eq!(
        v,
        json!("v2 (2 versions)"),
        "a description makes no version"
    );

    // History and audit: who did what, never values.
    b.click("tr[data-secret=WIFI_PSK] a[data-action=history]");
    b.wait(
        "!document.getElementById('view-history').hidden && document.querySelector('#history-log tr')",
        "the history",
    );
    let h = b.js(
        "return document.getElementById('view-history').textContent;",
        json!([]),
    );
    let h = h.as_str().unwrap();
    assert!(
        h.contains("rotate") && h.contains("describe") && h.contains("via build-image serve"),
        "{h}"
    );
    snap(&b, "history");
    shot(&b, "07-history");
    b.goto(&format!("{base}#/audit"));
    b.wait("document.querySelector('#audit-body tr')", "the audit log");
    let a = b.js(
        "return document.getElementById('audit-body').textContent;",
        json!([]),
    );
    assert!(a.as_str().unwrap().contains("get"), "the reveal is audited");
    snap(&b, "audit");
    shot(&b, "08-audit");

    // Delete, confirmed: the row goes, the setup view shows ✗ again.
    b.goto(&format!("{base}#/secrets"));
    b.wait(
        "document.querySelector('button[data-action=delete][data-secret=WIFI_PSK]')",
        "the delete button",
    );
    b.click("button[data-action=delete][data-secret=WIFI_PSK]");
    b.wait(
        "document.getElementById('dlg-delete').open",
        "the confirmation",
    );
    shot(&b, "09-delete-confirm");
    b.click("#delete-submit");
    b.wait(
        "!document.querySelector('#secrets-body tr[data-secret=WIFI_PSK]')",
        "the row gone",
    );
    b.goto(&format!("{base}#/recipes/kiosk"));
    b.wait(&cell("wifi_psk", "kiosk-1", "missing"), "wifi_psk ✗ again");
    snap(&b, "setup after delete");

    // The marker: in no page but the one showing the reveal.
    for (what, html) in &pages {
        assert!(!html.contains(MARKER), "{what}: the page holds the value");
        assert!(!html.contains(MARKER2), "{what}: the page holds the value");
    }
    assert!(!srv.stderr_text().contains(MARKER));
    if let Some(console) = b.console() {
        let csp: Vec<&String> = console
            .iter()
            .filter(|l| l.contains("Content Security Policy") || l.contains("Refused to"))
            .collect();
        assert!(csp.is_empty(), "CSP violations: {csp:#?}");
        // The log is live: the first /api/session (before login) got 401.
        assert!(
            console.iter().any(|l| l.contains("401")),
            "the console log holds the page's first 401: {console:#?}"
        );
        assert!(!console.iter().any(|l| l.contains(MARKER)), "{console:#?}");
    } else {
        eprintln!("serve_browser: chromedriver gave no console log; CSP violations not checked");
    }
    eprintln!("serve_browser: screenshots in {}", shots.display());
}
