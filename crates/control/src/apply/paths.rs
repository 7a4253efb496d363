//! The files a cutover.yaml names are relative to the cutover.yaml, wherever `apply` runs and
//! wherever `cutover up` and its load balancer were started: HTTPS listeners' certificates and
//! keys are made absolute here, against the directory the CLI sends with the file, before they are
//! planned, stored or handed to the load balancer (task definitions are read by the CLI and sent;
//! a watched repository's path is made absolute by `pipelines`).

use std::path::Path;

use crate::api;
use crate::error::ApiError;

/// Makes every relative `certificate_file` and `key_file` of `file`'s HTTPS listeners absolute
/// against the cutover.yaml's directory. A relative one in a file sent without its directory
/// (straight to the API) names no file anyone can find: refused at the field that names it.
pub(super) fn certificates_relative_to_the_file(
    file: &mut config::CutoverFile,
    request: &api::ApplyRequest,
) -> Result<(), ApiError> {
    let base = request.file.base_dir.as_deref().map(Path::new);
    let mut relative_without_base = Vec::new();
    for (i, lb) in file.load_balancers.iter_mut().enumerate() {
        for (j, listener) in lb.listeners.iter_mut().enumerate() {
            let Some(tls) = &mut listener.tls else { continue };
            let at = format!("load_balancers[{i}].listeners[{j}]");
            let mut paths = vec![
                (format!("{at}.certificate_file"), &mut tls.certificate_file),
                (format!("{at}.key_file"), &mut tls.key_file),
            ];
            if let Some(acme) = &mut tls.acme
                && let Some(bundle) = &mut acme.ca_bundle
            {
                paths.push((format!("{at}.acme.ca_bundle"), bundle));
            }
            for (k, more) in tls.certificates.iter_mut().enumerate() {
                paths.push((
                    format!("{at}.certificates[{k}].certificate_file"),
                    &mut more.certificate_file,
                ));
                paths.push((format!("{at}.certificates[{k}].key_file"), &mut more.key_file));
            }
            for (field, path) in paths {
                if Path::new(path.as_str()).is_absolute() {
                    continue;
                }
                match base {
                    Some(base) => *path = base.join(path.as_str()).display().to_string(),
                    None => relative_without_base.push(field),
                }
            }
        }
    }
    if relative_without_base.is_empty() {
        return Ok(());
    }
    let name = &request.file.name;
    let errors = config::file_references(&request.file.text)
        .into_iter()
        .filter(|r| relative_without_base.contains(&r.field))
        .map(|r| r.relative_without_directory(name))
        .collect();
    Err(ApiError::invalid_file(name, &config::Errors(errors)))
}

/// Where the certificates of `file`'s listeners with `acme` are kept: `<data dir>/acme`, private
/// like the rest of the data directory. A listener without a `certificate_file` of its own has
/// its first name's certificate as the default one.
pub(super) fn acme_in_the_data_dir(file: &mut config::CutoverFile, data_dir: &Path) {
    let dir = data_dir.join("acme").display().to_string();
    for lb in &mut file.load_balancers {
        for listener in &mut lb.listeners {
            let Some(tls) = &mut listener.tls else { continue };
            let Some(acme) = &mut tls.acme else { continue };
            acme.dir = dir.clone();
            if tls.certificate_file.is_empty()
                && let Some(first) = acme.certificate_files().into_iter().next()
            {
                tls.certificate_file = first.certificate_file;
                tls.key_file = first.key_file;
            }
        }
    }
}
