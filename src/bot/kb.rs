//! Knowledge-base files: `*.toml` files of `[[entry]]` tables (see `config/kb/README.md`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One knowledge-base entry. The same shape is a line of the JSON Lines import/export format
/// (`{"id","questions":[...],"answer","tags"?,"escalate"?,"lang"?,"follow_ups"?}`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub id: String,
    /// Language of the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lang: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Ways customers ask this; matched against customer messages.
    pub questions: Vec<String>,
    pub answer: String,
    /// Give the answer, then hand the conversation to a person.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub escalate: bool,
    /// Entries the customer is likely to want next; offered as buttons after the answer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub follow_ups: Vec<String>,
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

/// Checks one entry on its own: the problems that make it unusable.
pub fn entry_problem(entry: &Entry) -> Option<&'static str> {
    if entry.id.trim().is_empty() {
        Some("empty id")
    } else if entry.answer.trim().is_empty() {
        Some("empty answer")
    } else if entry.questions.iter().all(|q| q.trim().is_empty()) {
        Some("no questions")
    } else {
        None
    }
}

/// Reads JSON Lines entries; errors name the line.
pub fn read_jsonl(path: &Path) -> Result<Vec<Entry>, KbError> {
    let text = std::fs::read_to_string(path).map_err(|e| KbError::File {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    let mut entries = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let entry: Entry = serde_json::from_str(line).map_err(|e| KbError::File {
            path: path.to_owned(),
            message: format!("line {}: {e}", n + 1),
        })?;
        entries.push(entry);
    }
    Ok(entries)
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
            if let Some(problem) = entry_problem(&entry) {
                return Err(bad(problem));
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
