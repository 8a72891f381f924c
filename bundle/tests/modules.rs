//! The bundle crate's modules refer to each other one way only.

#[test]
fn no_module_circle() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = testkit::modules::import_graph(&src);
    assert!(
        graph.contains_key("open") && graph["open"].contains("key"),
        "{graph:?}"
    );
    testkit::modules::assert_no_cycles(&graph);
}
