//! The builder's layering, read from its source by `testkit::modules` (see
//! ARCHITECTURE.md): commands (`cmd/`) import stages, later stages import
//! earlier ones, the store and the low layers import nothing above them,
//! and no two top-level modules import each other in a circle.

use std::path::{Path, PathBuf};
use testkit::modules::{assert_no_cycles, import_graph, top_level, Graph};

/// The pipeline stages, in flow order, and the commands that drive them.
const STAGES: &[&str] = &["recipe", "secrets", "seal", "image", "output"];
const COMMANDS: &str = "cmd";
/// Shared layers below every stage: they import only one another.
const LOW: &[&str] = &["io", "child_env", "host_tools", "recipient"];

fn builder_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The graph of the library's modules (the binary under `bin/` is a crate
/// of its own), checked to be really read: the commands use every stage.
fn builder_graph() -> Graph {
    let graph = import_graph(&builder_src());
    let top = top_level(&graph);
    for stage in STAGES.iter().chain(&["store"]) {
        assert!(
            top.get(COMMANDS).is_some_and(|t| t.contains(*stage)),
            "no import of {stage} from cmd/ found: the reader misses imports: {top:?}"
        );
    }
    graph
}

fn top(module: &str) -> &str {
    module.split("::").next().unwrap_or(module)
}

/// Fails with `what` and every reference from a module under `from` to
/// one under `to` (`store::metadata → output::manifest`), when there is one.
fn assert_no_refs(graph: &Graph, from: &[&str], to: &[&str], what: &str) {
    let found: Vec<String> = graph
        .iter()
        .filter(|(m, _)| from.contains(&top(m)))
        .flat_map(|(m, refs)| {
            refs.iter()
                .filter(|r| to.contains(&top(r)))
                .map(move |r| format!("  {m} → {r}"))
        })
        .collect();
    assert!(found.is_empty(), "{what}:\n{}", found.join("\n"));
}

/// `names` and then `more`.
fn with<'a>(names: &[&'a str], more: &[&'a str]) -> Vec<&'a str> {
    names.iter().chain(more).copied().collect()
}

#[test]
fn no_import_circle_between_top_level_modules() {
    let graph = builder_graph();
    assert_no_cycles(&top_level(&graph));
    // Every top-level folder and file is in a layer of this test.
    let known = with(STAGES, &with(LOW, &[COMMANDS, "store"]));
    for entry in std::fs::read_dir(builder_src()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        let name = name.trim_end_matches(".rs");
        assert!(
            name == "lib" || name == "bin" || known.contains(&name),
            "builder/src/{name} is in no layer of this test (and ARCHITECTURE.md): place it"
        );
    }
}

#[test]
fn the_store_imports_nothing_of_the_pipeline() {
    let pipeline = with(STAGES, &[COMMANDS]);
    let what = "store/ imports the pipeline";
    assert_no_refs(&builder_graph(), &["store"], &pipeline, what);
}

#[test]
fn no_stage_imports_a_command() {
    let below = with(STAGES, &with(LOW, &["store"]));
    assert_no_refs(&builder_graph(), &below, &[COMMANDS], "stages import cmd/");
}

#[test]
fn image_takes_a_layout_and_bytes() {
    let above = ["recipe", "secrets", "seal", "output", "store"];
    let what = "image/ imports a recipe, a secret, a seal, an output or the store";
    assert_no_refs(&builder_graph(), &["image"], &above, what);
}

#[test]
fn stages_import_only_earlier_stages() {
    let graph = builder_graph();
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
    for (stage, may) in allowed {
        let others: Vec<&str> = STAGES
            .iter()
            .copied()
            .filter(|s| s != stage && !may.contains(s))
            .collect();
        assert_no_refs(&graph, &[stage], &others, "a stage imports a later one");
    }
}

#[test]
fn low_layers_import_only_each_other() {
    let above = with(STAGES, &[COMMANDS, "store"]);
    assert_no_refs(&builder_graph(), LOW, &above, "a low layer imports up");
}
