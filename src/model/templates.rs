//! The text templates of `EmbeddingRWKV`'s reranker (the official README's online and offline
//! forms). Every place that builds or recognises one uses these: the insert path, the query
//! path, the template-prefix state cache, `model eval` and the collection fingerprint.

/// The instruction, spelled once for the constants below.
macro_rules! instruction {
    () => {
        "Instruct: Given a query, retrieve documents that answer the query\n"
    };
}

/// Instruction prefix shared by the online and offline rerank templates.
pub const RERANK_INSTRUCTION: &str = instruction!();

/// The start of every offline document text, before the document itself: its state is
/// computed once per collection and resumed for each document.
pub const OFFLINE_DOCUMENT_PREFIX: &str = concat!(instruction!(), "Document: ");

/// Online rerank text: instruction, document and query in one sequence (EOS appended).
#[must_use]
pub fn online_text(document: &str, query: &str) -> String {
    format!("{OFFLINE_DOCUMENT_PREFIX}{document}\nQuery: {query}")
}

/// Offline index text of a document (no EOS: the query continues it later).
#[must_use]
pub fn offline_document_text(document: &str) -> String {
    format!("{OFFLINE_DOCUMENT_PREFIX}{document}\n")
}

/// Offline query text that resumes a document state (EOS appended).
#[must_use]
pub fn offline_query_text(query: &str) -> String {
    format!("Query: {query}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The offline pair read in one go is the online text: resuming a document state with the
    /// query reads exactly what the online reranker reads.
    #[test]
    fn offline_halves_join_to_the_online_text() {
        let (d, q) = ("Water boils at 100 °C.", "When does water boil?");
        assert_eq!(offline_document_text(d) + &offline_query_text(q), online_text(d, q));
        assert!(offline_document_text(d).starts_with(OFFLINE_DOCUMENT_PREFIX));
    }
}
