//! Where executions come from, outside the loop: pushes to hosted repositories (recorded by
//! their hook, scanned after every push) and polls of URL sources. Both do their git work here
//! and ask the loop to start executions ([`Ctx::start`]).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pipeline::definition::PipelineDecl;

use crate::core::{Msg, UNWRITTEN_RETRY};
use crate::driver::{Ctx, Request};
use crate::{Error, git};

/// Turns the pushes the hosted repositories' hooks record into executions, at start and after
/// every push. A push whose execution the store could not record stays recorded and is taken
/// again shortly; the executions it did start are not started twice.
pub async fn scan_pushes(ctx: Arc<Ctx>) {
    // (push file, pipeline/ref) already started, so a push taken again starts only the rest.
    let mut started: HashSet<(PathBuf, String)> = HashSet::new();
    loop {
        let waiting = scan_once(&ctx, &mut started).await;
        if waiting {
            tokio::select! {
                _ = ctx.pushed.notified() => {}
                _ = tokio::time::sleep(UNWRITTEN_RETRY) => {}
            }
        } else {
            ctx.pushed.notified().await;
        }
    }
}

/// One scan; `true` when a push must be taken again (the store could not record it).
async fn scan_once(ctx: &Arc<Ctx>, started: &mut HashSet<(PathBuf, String)>) -> bool {
    let repos = match ctx.store.read(|tx| tx.ci_repository_list()) {
        Ok(r) => r,
        Err(err) => {
            tracing::warn!("listing repositories: {err}");
            return true;
        }
    };
    let mut waiting = false;
    for (repo, _) in repos {
        let dir = ctx.repo_dir(&repo);
        let d = dir.clone();
        let pushes =
            tokio::task::spawn_blocking(move || git::pending_pushes(&d)).await.unwrap_or_default();
        for push in pushes {
            if start_push(ctx, &repo, &dir, &push, started).await {
                if let Err(err) = std::fs::remove_file(&push.file) {
                    tracing::warn!("removing the processed push {}: {err}", push.file.display());
                }
                started.retain(|(file, _)| *file != push.file);
            } else {
                waiting = true;
            }
        }
    }
    waiting
}

/// Starts an execution of every pipeline the push starts; `false` when one could not be
/// recorded for now (the store cannot be written) and the push must be taken again.
async fn start_push(
    ctx: &Arc<Ctx>,
    repo: &str,
    dir: &Path,
    push: &git::Push,
    started: &mut HashSet<(PathBuf, String)>,
) -> bool {
    let mut done = true;
    let defs: Vec<PipelineDecl> = ctx.definitions().await;
    for (commit, r) in &push.updates {
        let Some(branch) = r.strip_prefix("refs/heads/") else { continue };
        for def in &defs {
            if def.repository() != Some(repo) || !def.source.triggers_on(branch) {
                continue;
            }
            let key = (push.file.clone(), format!("{}/{r}", def.name));
            if started.contains(&key) {
                continue;
            }
            let pusher = push.pusher.clone();
            let res =
                ctx.start(&def.name, dir.into(), commit.clone(), branch.into(), pusher, None).await;
            match res {
                Ok(_) => {
                    started.insert(key);
                }
                Err(Error::Store(err)) if err.is_write_failure() => {
                    tracing::warn!(
                        pipeline = def.name,
                        "push to {repo} kept until the store can be written: {err}"
                    );
                    done = false;
                }
                Err(err) => {
                    tracing::warn!(pipeline = def.name, "push to {repo} not started: {err}")
                }
            }
        }
    }
    done
}

/// Polls a URL source and starts an execution when its branch moved; then tells the loop the
/// poll is over.
pub async fn poll(ctx: Arc<Ctx>, pipeline: String, url: String, branch: String) {
    poll_once(&ctx, &pipeline, url, branch).await;
    let msg = Msg::PollDone { pipeline };
    let _ = ctx.ask(|reply| Request::Handle { msg, reply: Some(reply) }).await;
}

async fn poll_once(ctx: &Arc<Ctx>, name: &str, url: String, branch: String) {
    let mirror = ctx.mirror_dir(name);
    // Without the last commit every head looks new: poll again later instead.
    let last = match ctx.store.read(|tx| tx.ci_source_get(name)) {
        Ok(last) => last,
        Err(err) => {
            return tracing::warn!(pipeline = name, "reading the last polled commit: {err}");
        }
    };
    let (u, b) = (url.clone(), branch.clone());
    let head = match tokio::task::spawn_blocking(move || git::remote_head(&u, &b)).await {
        Ok(Ok(Some(head))) => head,
        Ok(Ok(None)) => return,
        Ok(Err(err)) => return tracing::warn!(pipeline = name, "polling the source failed: {err}"),
        Err(err) => return tracing::warn!(pipeline = name, "polling the source failed: {err}"),
    };
    if Some(&head) == last.as_ref() {
        return;
    }
    let b = branch.clone();
    let commit = match ctx.in_mirror(name, move |m| git::fetch_into_mirror(m, &url, &b)).await {
        Ok(Ok(commit)) => commit,
        Ok(Err(err)) => return tracing::warn!(pipeline = name, "fetch failed: {err}"),
        Err(err) => return tracing::warn!(pipeline = name, "fetch failed: {err}"),
    };
    // The commit is remembered with the execution, in one write: neither is without the other,
    // so a poll never starts a commit twice nor forgets one.
    let polled = Some(commit.clone());
    if let Err(err) = ctx.start(name, mirror, commit, branch, String::new(), polled).await {
        tracing::warn!(pipeline = name, "poll found a change, not started: {err}");
    }
}
