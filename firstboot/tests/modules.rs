//! The device agent's modules refer to each other one way only (between
//! top-level modules: identity → store → runtime, shared helpers below).

#[test]
fn no_module_circle() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = testkit::modules::import_graph(&src);
    assert!(graph.contains_key("runtime::links"), "{graph:?}");
    testkit::modules::assert_no_cycles(&testkit::modules::top_level(&graph));
}
