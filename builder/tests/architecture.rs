//! The builder's layering, read from its source (see ARCHITECTURE.md):
//! commands (`cmd/`) import stages, later stages import earlier ones, the
//! store and the low layers import nothing above them, and no two
//! top-level modules import each other in a circle. The device agent's
//! crate has no circle either.

use std::path::{Path, PathBuf};
use testkit::modules::{circles, crate_imports, imports_between, Import};

/// The pipeline stages, in flow order, and the commands that drive them.
const STAGES: &[&str] = &["recipe", "secrets", "seal", "image", "output"];
const COMMANDS: &str = "cmd";
/// Shared layers below every stage: they import only one another.
const LOW: &[&str] = &["io", "child_env", "host_tools", "recipient"];

fn builder_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn builder_imports() -> Vec<Import> {
    // The binary is a crate of its own: its `crate::` is not the library's.
    let imports = crate_imports(&builder_src(), &["bin"]).expect("read builder/src");
    // The graph is really read: the commands use every stage.
    for stage in STAGES.iter().chain(&["store"]) {
        assert!(
            !imports_between(&imports, &[COMMANDS], &[stage]).is_empty(),
            "no import of {stage} from cmd/ found: the reader misses imports"
        );
    }
    imports
}

/// Fails with `what` and every reference found, when there is one.
fn assert_none(found: &[&Import], what: &str) {
    let list: Vec<String> = found.iter().map(|i| format!("  {i}")).collect();
    assert!(found.is_empty(), "{what}:\n{}", list.join("\n"));
}

/// `names` and then `more`.
fn with<'a>(names: &[&'a str], more: &[&'a str]) -> Vec<&'a str> {
    names.iter().chain(more).copied().collect()
}

#[test]
fn no_import_circle_between_top_level_modules() {
    let imports = builder_imports();
    let found = circles(&imports);
    assert!(found.is_empty(), "import circles in builder/src: {found:?}");
    // Every top-level folder and file is a module of the layering.
    let mut tops: Vec<String> = std::fs::read_dir(builder_src())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .map(|n| n.trim_end_matches(".rs").to_string())
        .filter(|n| n != "lib" && n != "bin")
        .collect();
    tops.sort();
    let known = with(STAGES, &with(LOW, &[COMMANDS, "store"]));
    for t in &tops {
        assert!(
            known.contains(&t.as_str()),
            "builder/src/{t} is in no layer of this test (and ARCHITECTURE.md): place it"
        );
    }
}

#[test]
fn the_store_imports_nothing_of_the_pipeline() {
    let imports = builder_imports();
    let pipeline = with(STAGES, &[COMMANDS]);
    let found = imports_between(&imports, &["store"], &pipeline);
    assert_none(&found, "store/ imports the pipeline");
}

#[test]
fn no_stage_imports_a_command() {
    let imports = builder_imports();
    let below = with(STAGES, &with(LOW, &["store"]));
    let found = imports_between(&imports, &below, &[COMMANDS]);
    assert_none(&found, "stages import cmd/");
}

#[test]
fn image_takes_a_layout_and_bytes() {
    let imports = builder_imports();
    let above = ["recipe", "secrets", "seal", "output", "store"];
    let found = imports_between(&imports, &["image"], &above);
    assert_none(
        &found,
        "image/ imports a recipe, a secret, a seal or an output",
    );
}

#[test]
fn stages_import_only_earlier_stages() {
    let imports = builder_imports();
    // The image is assembled from a layout the recipe's plan makes, so
    // recipe and seal (boot files) may use image's types; otherwise a
    // stage imports only the ones before it.
    let allowed: &[(&str, &[&str])] = &[
        ("recipe", &["image"]),
        ("secrets", &["recipe"]),
        ("seal", &["recipe", "secrets", "image"]),
        ("image", &[]),
        ("output", &["recipe", "secrets", "seal", "image"]),
    ];
    let mut wrong = Vec::new();
    for (stage, may) in allowed {
        let others: Vec<&str> = STAGES
            .iter()
            .copied()
            .filter(|s| s != stage && !may.contains(s))
            .collect();
        wrong.extend(imports_between(&imports, &[stage], &others));
    }
    assert_none(&wrong, "a stage imports a later one");
}

#[test]
fn low_layers_import_only_each_other() {
    let imports = builder_imports();
    let above = with(STAGES, &[COMMANDS, "store"]);
    assert_none(
        &imports_between(&imports, LOW, &above),
        "a low layer imports up",
    );
}

#[test]
fn the_other_crates_have_no_import_circle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for krate in ["firstboot", "bundle"] {
        let src = root.join(krate).join("src");
        if !src.is_dir() {
            continue;
        }
        let imports = crate_imports(&src, &["bin"]).unwrap();
        let found = circles(&imports);
        assert!(found.is_empty(), "import circles in {krate}/src: {found:?}");
    }
}
