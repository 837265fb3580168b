//! `/api/v1/admin`: whole-installation operations (admin only). Thin: the work is in
//! [`crate::admin`].

use std::path::PathBuf;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;

use super::ApiState;
use super::auth::AdminAgent;
use super::error::{ApiError, ApiJson, ApiPath, ErrorBody};
use crate::admin::{BackupError, BackupReport, ForgetReport};
use crate::model::ContactId;
use crate::store::StoreStats;

/// Erases a contact's personal data: identities, conversations, messages, notes, files and
/// the channels' copies. The contact stays as an empty record and an audit event records the
/// erasure. Stored bytes leave the database files when the daemon next starts.
#[utoipa::path(post, path = "/contacts/{id}/forget", tag = "contacts",
    params(("id" = u64, Path, description = "Contact id")),
    responses((status = 200, body = ForgetReport), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn forget_contact(
    State(state): State<ApiState>,
    AdminAgent(admin): AdminAgent,
    ApiPath(id): ApiPath<u64>,
) -> Result<Json<ForgetReport>, ApiError> {
    let report = crate::admin::forget_contact(
        &state.engine,
        &state.kb,
        &state.blobs,
        ContactId(id),
        Some(admin.id),
    )
    .await?;
    Ok(Json(report))
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct BackupBody {
    /// Where to write the backup, on the daemon's machine: under `[store] backups_dir` (a
    /// relative path is taken inside it; `..` is refused). Must not exist, or be empty.
    /// Default: `<backups_dir>/<time>`.
    #[schema(value_type = Option<String>, min_length = 1)]
    dest: Option<PathBuf>,
}

/// Writes a consistent copy of everything (database and attachment files) while the daemon
/// runs; writes wait for the moment of the copy, reads go on.
#[utoipa::path(post, path = "/admin/backup", tag = "admin", request_body = BackupBody,
    responses((status = 201, body = BackupReport), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 501, description = "The store is a shared database, backed up with its own tools", body = ErrorBody)))]
pub async fn backup(
    State(state): State<ApiState>,
    _admin: AdminAgent,
    ApiJson(body): ApiJson<BackupBody>,
) -> Result<(StatusCode, Json<BackupReport>), ApiError> {
    let dest = match body.dest {
        Some(p) => backup_dest(&state.backups_dir, &p).ok_or_else(|| {
            ApiError::invalid(format!(
                "the daemon writes backups only under {} ([store] backups_dir), with no `..`; `{}` is not there",
                state.backups_dir.display(),
                p.display()
            ))
        })?,
        None => state.backups_dir.join(
            jiff::Timestamp::now()
                .strftime("%Y-%m-%dT%H-%M-%SZ")
                .to_string(),
        ),
    };
    match crate::admin::backup(state.engine.store().as_ref(), &state.blobs, &dest).await {
        Ok(r) => {
            tracing::info!(path = %r.path.display(), pairs = r.pairs, files = r.files, ms = r.millis, "backup written");
            Ok((StatusCode::CREATED, Json(r)))
        }
        Err(BackupError::Store(e)) => Err(e.into()),
        Err(e @ BackupError::Dest { .. }) => Err(ApiError::invalid(e.to_string())),
        Err(e @ BackupError::NotEmbedded) => Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "not_embedded",
            e.to_string(),
        )),
        Err(e @ BackupError::Files(_)) => {
            tracing::error!(error = %e, "backup failed");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "backup_failed",
                e.to_string(),
            ))
        }
    }
}

/// `dest` inside `root` (itself, or a path below it): relative paths are taken inside it, and
/// any `..`, `.` or prefix is refused, so a backup cannot be written elsewhere.
fn backup_dest(root: &std::path::Path, dest: &std::path::Path) -> Option<PathBuf> {
    let dest = if dest.is_absolute() {
        dest.strip_prefix(root).ok()?.to_owned()
    } else {
        dest.to_owned()
    };
    let plain = dest
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    (plain && dest.components().next().is_some()).then(|| root.join(dest))
}

/// Record counts per kind, conversations per status, private spaces and bytes on disk.
#[utoipa::path(get, path = "/admin/stats", tag = "admin",
    responses((status = 200, body = Object), (status = 403, body = ErrorBody)))]
pub async fn stats(
    State(state): State<ApiState>,
    _admin: AdminAgent,
) -> Result<Json<StoreStats>, ApiError> {
    // A full count reads every key: on a blocking thread, not the async ones.
    let store = state.engine.store().clone();
    let stats = tokio::task::spawn_blocking(move || futures::executor::block_on(store.stats()))
        .await
        .map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        })??;
    Ok(Json(stats))
}

#[cfg(test)]
mod tests {
    use super::backup_dest;
    use std::path::Path;

    #[test]
    fn backups_are_written_only_under_the_backups_directory() {
        let root = Path::new("/var/lib/switchboard/backups");
        let table = [
            ("today", Some("/var/lib/switchboard/backups/today")),
            (
                "2026/12/07",
                Some("/var/lib/switchboard/backups/2026/12/07"),
            ),
            (
                "/var/lib/switchboard/backups/x",
                Some("/var/lib/switchboard/backups/x"),
            ),
            ("/var/lib/switchboard/backups", None),
            ("/etc/cron.d/x", None),
            ("/var/lib/switchboard/backups/../db", None),
            ("../db", None),
            ("a/../../db", None),
            ("./x", None),
            ("", None),
        ];
        for (dest, want) in table {
            assert_eq!(
                backup_dest(root, Path::new(dest)),
                want.map(Into::into),
                "{dest:?}"
            );
        }
    }
}
