//! The README's library example, kept compiling: the code below is the README's, with `main`
//! renamed. It needs the real model files, so the test only checks that it builds and fails
//! cleanly (no panic) without them.

use rwkvdb::{CollectionConfig, Database, Error, Filter, NewDocument, OpenOptions, QueryOptions, Rerank};

fn readme_library_example() -> Result<(), Box<dyn std::error::Error>> {
    let db = Database::open("notes.redb", OpenOptions::default())?;
    // Open the collection, or create it on the first run.
    let notes = match db.collection("notes") {
        Err(Error::NoSuchCollection(_)) => db.create_collection(
            "notes",
            CollectionConfig::new("rwkv0b1-emb-curriculum.pth", Some("rwkv0b1-reranker.pth".into())),
        )?,
        other => other?,
    };
    notes.upsert(vec![NewDocument {
        id: Some("n1".into()),
        text: "Water boils at 100 °C at sea level.".into(),
        metadata: Some(rwkvdb::serde_json::json!({"topic": "physics"})),
    }])?;
    let result = notes.query(
        "At what temperature does water boil?",
        &QueryOptions {
            top_k: 5,
            candidates: 50,
            rerank: Rerank::Offline,
            filter: Some(Filter::parse(r#"{"topic": "physics"}"#)?),
            ..Default::default()
        },
    )?;
    for hit in result.hits {
        println!("{} cos={:.3} p={:?} {}", hit.id, hit.similarity, hit.probability, hit.text);
    }
    Ok(())
}

#[test]
fn readme_library_example_builds_and_fails_cleanly_without_models() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = std::env::current_dir().unwrap();
    std::env::set_current_dir(dir.path()).unwrap();
    let result = readme_library_example();
    std::env::set_current_dir(cwd).unwrap();
    let e = result.unwrap_err().to_string();
    assert!(e.contains("rwkv0b1-emb-curriculum.pth"), "{e}");
}
