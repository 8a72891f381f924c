//! `build-image serve` against an attacker: a page of another site or of
//! another port of the same host (cookies are not bound to a port), a
//! local user without the token (slow or idle clients, many connections),
//! a recipe whose command sources would run at every refresh, and a
//! careless admin (a certificate that is a pipe, key and token files that
//! other users can read).

use sealed_image_tests::serve::{Server, Site};
use sealed_image_tests::*;

const COMMAND_RECIPE: &str = r#"
[secrets.vault_token]
type = "single-line"
description = "Token from the vault"
source = { command = ["sh", "-c", "echo ran >> command-ran; echo from-the-vault"] }
"#;

/// The setup view runs no command source (as `check` without `--deep`)
/// (a recipe in the served directory would otherwise run its commands at
/// every refresh of every open page); their cells say so and the recipe is
/// not called ready. `serve --deep` runs them.
#[test]
fn the_setup_view_runs_no_command_source_unless_deep() {
    let site = Site::new();
    let recipe = std::fs::read_to_string(&site.recipe).unwrap() + COMMAND_RECIPE;
    std::fs::write(&site.recipe, recipe).unwrap();
    let ran = site.dir.join("command-ran");
    let out = site
        .store_cmd(&["set", "WIFI_PSK", "--generate", "-q"])
        .output()
        .unwrap();
    assert_success(&out, "set WIFI_PSK");
    let out = site
        .store_cmd(&["set", "API_TOKEN", "--generate", "-q"])
        .output()
        .unwrap();
    assert_success(&out, "set API_TOKEN");

    let srv = Server::start(site.serve_cmd());
    let st = srv.get("/api/recipes/kiosk/status");
    assert_eq!(st.status, 200, "{}", st.text());
    let m = srv.get("/api/recipes/kiosk/matrix");
    assert_eq!(m.status, 200, "{}", m.text());
    assert!(
        !ran.exists(),
        "the setup view ran a command source: {}",
        st.text()
    );
    let st = st.json();
    let vault = st["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["secret"] == "vault_token")
        .unwrap()
        .clone();
    assert_eq!(vault["complete"], false, "{vault}");
    assert_eq!(vault["unchecked"], true, "{vault}");
    for cell in vault["devices"].as_array().unwrap() {
        assert_eq!(cell["present"], false, "{cell}");
        assert_eq!(cell["unchecked"], true, "{cell}");
        assert!(
            cell["how"].as_str().unwrap_or("").contains("--deep"),
            "{cell}"
        );
    }
    assert_eq!(st["ready"], false, "{st}");
    assert_eq!(st["unchecked_required"], 1, "{st}");
    assert_eq!(st["missing_required"], 0, "{st}");
    drop(srv);

    // With --deep the command runs, its value found and dropped.
    let mut c = site.serve_cmd();
    c.arg("--deep");
    let srv = Server::start(c);
    let st = srv.get("/api/recipes/kiosk/status");
    assert_eq!(st.status, 200, "{}", st.text());
    assert!(ran.exists(), "--deep runs command sources");
    assert!(!st.text().contains("from-the-vault"), "{}", st.text());
    let st = st.json();
    assert_eq!(st["ready"], true, "{st}");
    assert_eq!(st["unchecked_required"], 0, "{st}");
}
