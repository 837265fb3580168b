//! Knowledge-base files: `*.toml` files of `[[entry]]` tables (see `config/kb/README.md`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub id: String,
    /// Language of the answer.
    #[serde(default)]
    pub lang: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Ways customers ask this; matched against customer messages.
    pub questions: Vec<String>,
    pub answer: String,
    /// Give the answer, then hand the conversation to a person.
    #[serde(default)]
    pub escalate: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    entry: Vec<Entry>,
}

#[derive(Debug, thiserror::Error)]
pub enum KbError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{path}: entry `{id}`: {message}")]
    Entry {
        path: PathBuf,
        id: String,
        message: String,
    },
}

/// Reads every `*.toml` file of `dir`, in name order.
pub fn load_dir(dir: &Path) -> Result<Vec<Entry>, KbError> {
    let file_err = |message: String| KbError::File {
        path: dir.to_owned(),
        message,
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| file_err(e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    let mut entries = Vec::new();
    let mut ids = HashSet::new();
    for path in paths {
        let text = std::fs::read_to_string(&path).map_err(|e| KbError::File {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let file: File = toml::from_str(&text).map_err(|e| KbError::File {
            path: path.clone(),
            message: e.to_string(),
        })?;
        for entry in file.entry {
            let bad = |message: &str| KbError::Entry {
                path: path.clone(),
                id: entry.id.clone(),
                message: message.into(),
            };
            if entry.id.trim().is_empty() {
                return Err(bad("empty id"));
            }
            if entry.answer.trim().is_empty() {
                return Err(bad("empty answer"));
            }
            if entry.questions.iter().all(|q| q.trim().is_empty()) {
                return Err(bad("no questions"));
            }
            if !ids.insert(entry.id.clone()) {
                return Err(bad("duplicate id"));
            }
            entries.push(entry);
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_kb_loads() {
        let entries = load_dir(Path::new("config/kb")).unwrap();
        assert!(entries.len() >= 20, "{}", entries.len());
        assert!(entries.iter().any(|e| e.lang.as_deref() == Some("zh")));
        assert!(entries.iter().any(|e| e.escalate));
    }

    #[test]
    fn rejects_duplicates_and_empty_answers() {
        let dir = tempfile::tempdir().unwrap();
        let one = "[[entry]]\nid = \"a\"\nquestions = [\"q\"]\nanswer = \"x\"\n";
        std::fs::write(dir.path().join("1.toml"), one).unwrap();
        std::fs::write(dir.path().join("2.toml"), one).unwrap();
        assert!(
            load_dir(dir.path())
                .unwrap_err()
                .to_string()
                .contains("duplicate id")
        );
        std::fs::write(
            dir.path().join("2.toml"),
            "[[entry]]\nid = \"b\"\nquestions = [\"q\"]\nanswer = \" \"\n",
        )
        .unwrap();
        assert!(
            load_dir(dir.path())
                .unwrap_err()
                .to_string()
                .contains("empty answer")
        );
    }
}
