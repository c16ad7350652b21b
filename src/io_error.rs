//! I/O errors in the words the tools print them.

use std::io;

/// The text of an error without the "(os error N)" suffix, as the client
/// and ping print it (`connection refused`).
pub fn error_text(e: &io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_lowercase(),
        None => text,
    }
}
