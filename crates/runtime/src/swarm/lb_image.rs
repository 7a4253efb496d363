//! The image the swarm's nodes run their load balancer from, made from the running `cutover`
//! itself, as Kamal builds and pushes for its users: `FROM scratch` holding the executable at
//! `/cutover` and the shared libraries it links (where the dynamic loader looks for them),
//! nothing else (no shell, no package manager). It is imported into the manager's engine from
//! an archive made here (no Dockerfile, no build step), pushed to a registry every node reaches,
//! and run by its registry digest.
//!
//! Its tag is a fingerprint of the executable: the same `cutover` is the same image, found in the
//! registry by a later `cutover up` instead of being pushed again; another `cutover` is another
//! tag, so an upgrade replaces every node's instance.

use std::path::{Path, PathBuf};

use bollard::query_parameters::{CreateImageOptions, PushImageOptions};
use futures_util::StreamExt;

use super::SwarmRuntime;
use crate::RuntimeError;
use crate::docker::engine_message;

/// The repository the data plane's image is pushed to, in the registry the user names.
pub const LB_REPOSITORY: &str = "cutover-lb";

/// The image's tag for `executable` in `registry`: `REGISTRY/cutover-lb:<fingerprint>`.
pub fn lb_image_tag(registry: &str, executable: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(executable);
    let fingerprint: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("{}/{LB_REPOSITORY}:{fingerprint}", registry.trim_end_matches('/'))
}

/// The libraries the dynamic loader maps for a program, from `ldd`'s output: the resolved path
/// of every `name => /path (0x…)` line and the loader itself (`/lib64/ld-linux-x86-64.so.2
/// (0x…)`); the kernel's vDSO (no path) is not a file.
pub fn linked_libraries(ldd_output: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = ldd_output
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = match line.split_once("=>") {
                Some((_, resolved)) => resolved.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect();
    found.sort();
    found.dedup();
    found
}

/// A file of the image: its absolute path in the image, mode and content.
pub struct ImageFile {
    pub path: PathBuf,
    pub mode: u32,
    pub data: Vec<u8>,
}

/// Why a file cannot go into an archive.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct ArchiveError {
    path: String,
    reason: &'static str,
}

/// `files` as a POSIX tar archive (ustar), with an entry for every directory above them, owned
/// by root, dated at the epoch: the same files make the same bytes.
pub fn archive(files: &[ImageFile]) -> Result<Vec<u8>, ArchiveError> {
    let mut directories: Vec<String> = Vec::new();
    for file in files {
        let relative = in_archive(&file.path)?;
        let mut above = Path::new(&relative).parent();
        while let Some(dir) = above.filter(|d| !d.as_os_str().is_empty()) {
            directories.push(dir.display().to_string());
            above = dir.parent();
        }
    }
    directories.sort();
    directories.dedup();
    let mut out = Vec::new();
    for dir in &directories {
        out.extend_from_slice(&header(dir, 0o755, 0, b'5')?);
    }
    for file in files {
        let name = in_archive(&file.path)?;
        out.extend_from_slice(&header(&name, file.mode, file.data.len() as u64, b'0')?);
        out.extend_from_slice(&file.data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    // Two zero blocks end the archive.
    out.resize(out.len() + 1024, 0);
    Ok(out)
}

/// An absolute path as an archive member's name (relative to the image's root).
fn in_archive(path: &Path) -> Result<String, ArchiveError> {
    let text = path.to_str().ok_or(ArchiveError {
        path: path.display().to_string(),
        reason: "the path is not UTF-8",
    })?;
    let relative = text.trim_start_matches('/');
    if !path.is_absolute() || relative.is_empty() || relative.split('/').any(|c| c == "..") {
        return Err(ArchiveError {
            path: text.to_string(),
            reason: "an image file needs an absolute path without `..`",
        });
    }
    Ok(relative.to_string())
}

/// One ustar header block; names longer than 100 bytes are split into ustar's prefix field.
fn header(name: &str, mode: u32, size: u64, kind: u8) -> Result<[u8; 512], ArchiveError> {
    let too_long =
        || ArchiveError { path: name.to_string(), reason: "the path is too long for tar" };
    let (prefix, short) = if name.len() <= 100 {
        ("", name)
    } else {
        let split = name[..name.len().min(156)].rfind('/').ok_or_else(too_long)?;
        let (prefix, rest) = (&name[..split], &name[split + 1..]);
        if prefix.len() > 155 || rest.len() > 100 || rest.is_empty() {
            return Err(too_long());
        }
        (prefix, rest)
    };
    let mut block = [0u8; 512];
    let octal = |field: &mut [u8], value: u64| {
        let text = format!("{value:0width$o}\0", width = field.len() - 1);
        field.copy_from_slice(text.as_bytes());
    };
    block[..short.len()].copy_from_slice(short.as_bytes());
    octal(&mut block[100..108], u64::from(mode));
    octal(&mut block[108..116], 0);
    octal(&mut block[116..124], 0);
    octal(&mut block[124..136], size);
    octal(&mut block[136..148], 0);
    block[156] = kind;
    block[257..263].copy_from_slice(b"ustar\0");
    block[263..265].copy_from_slice(b"00");
    block[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
    // The checksum is computed with its own field as spaces.
    block[148..156].copy_from_slice(b"        ");
    let sum: u64 = block.iter().map(|&b| u64::from(b)).sum();
    block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    Ok(block)
}

impl SwarmRuntime {
    /// The data plane's image made from this very executable, in `registry`, as a digest
    /// reference every node pulls (`REGISTRY/cutover-lb@sha256:…`): found there when this
    /// executable was pushed before, else imported into the manager's engine and pushed.
    pub async fn publish_data_plane_image(&self, registry: &str) -> Result<String, RuntimeError> {
        let failed = |message: String| RuntimeError::DataPlaneImage {
            registry: registry.to_string(),
            message,
        };
        let executable = std::env::current_exe()
            .map_err(|e| failed(format!("cannot find cutover's own executable: {e}")))?;
        let binary = std::fs::read(&executable)
            .map_err(|e| failed(format!("cannot read {}: {e}", executable.display())))?;
        let tag = lb_image_tag(registry, &binary);
        if let Ok(found) = self.resolve_image(&tag, "data-plane").await {
            tracing::info!(image = %found, "the data plane's image is in the registry already");
            return Ok(found);
        }
        let mut files = vec![ImageFile { path: "/cutover".into(), mode: 0o755, data: binary }];
        for library in libraries_of(&executable).map_err(failed)? {
            let data = std::fs::read(&library)
                .map_err(|e| failed(format!("cannot read {}: {e}", library.display())))?;
            files.push(ImageFile { path: library, mode: 0o755, data });
        }
        let tar = archive(&files).map_err(|e| failed(e.to_string()))?;
        let (repository, version) = tag.rsplit_once(':').expect("invariant: the tag has one");
        let options = CreateImageOptions {
            from_src: Some("-".into()),
            repo: Some(repository.to_string()),
            tag: Some(version.to_string()),
            changes: vec![r#"ENTRYPOINT ["/cutover"]"#.into()],
            ..Default::default()
        };
        let mut imported =
            self.docker.create_image(Some(options), Some(bollard::body_full(tar.into())), None);
        while let Some(step) = imported.next().await {
            step.map_err(|e| failed(format!("importing {tag}: {}", engine_message(&e))))?;
        }
        let options = PushImageOptions { tag: Some(version.to_string()), ..Default::default() };
        let mut pushed = self.docker.push_image(repository, Some(options), None);
        while let Some(step) = pushed.next().await {
            step.map_err(|e| failed(format!("pushing {tag}: {}", engine_message(&e))))?;
        }
        let found =
            self.resolve_image(&tag, "data-plane").await.map_err(|e| failed(e.to_string()))?;
        tracing::info!(image = %found, "the data plane's image was built and pushed");
        Ok(found)
    }
}

/// The shared libraries `executable` links, as `ldd` lists them; none for a static executable.
fn libraries_of(executable: &Path) -> Result<Vec<PathBuf>, String> {
    let output = std::process::Command::new("ldd")
        .arg(executable)
        .output()
        .map_err(|e| format!("cannot run ldd to list the libraries cutover links: {e}"))?;
    // ldd fails on a static executable ("not a dynamic executable"), which needs no library.
    Ok(if output.status.success() {
        linked_libraries(&String::from_utf8_lossy(&output.stdout))
    } else {
        Vec::new()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_s_output_gives_every_linked_library_and_the_loader_but_not_the_vdso() {
        let output = "\tlinux-vdso.so.1 (0x00007ffd5c3f2000)
\tlibssl.so.3 => /lib/x86_64-linux-gnu/libssl.so.3 (0x00007f0e1a000000)
\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f0e19fd0000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0e19c00000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f0e1a600000)
\tlibmissing.so.1 => not found
";
        assert_eq!(
            linked_libraries(output),
            [
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libssl.so.3",
                "/lib64/ld-linux-x86-64.so.2",
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn the_tag_is_the_executable_s_fingerprint_in_the_named_registry() {
        let tag = lb_image_tag("10.99.0.1:5000/", b"cutover v1");
        assert!(tag.starts_with("10.99.0.1:5000/cutover-lb:"), "{tag}");
        assert_eq!(tag.len(), "10.99.0.1:5000/cutover-lb:".len() + 16);
        assert_eq!(tag, lb_image_tag("10.99.0.1:5000", b"cutover v1"), "stable");
        assert_ne!(tag, lb_image_tag("10.99.0.1:5000", b"cutover v2"));
    }

    /// Reads back what [`archive`] wrote: (name, kind, mode, data) per entry.
    fn entries(tar: &[u8]) -> Vec<(String, u8, u32, Vec<u8>)> {
        let text = |field: &[u8]| {
            String::from_utf8(field.iter().copied().take_while(|&b| b != 0).collect()).unwrap()
        };
        let octal = |field: &[u8]| u64::from_str_radix(text(field).trim(), 8).unwrap();
        let mut found = Vec::new();
        let mut at = 0;
        while tar[at..at + 512].iter().any(|&b| b != 0) {
            let block = &tar[at..at + 512];
            let sum: u64 = block
                .iter()
                .enumerate()
                .map(|(i, &b)| if (148..156).contains(&i) { 32 } else { u64::from(b) })
                .sum();
            assert_eq!(octal(&block[148..155]), sum, "checksum of entry at {at}");
            let prefix = text(&block[345..500]);
            let name = text(&block[..100]);
            let name = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
            let size = usize::try_from(octal(&block[124..136])).unwrap();
            let data = tar[at + 512..at + 512 + size].to_vec();
            let mode = u32::try_from(octal(&block[100..108])).unwrap();
            found.push((name, block[156], mode, data));
            at += 512 + size.div_ceil(512) * 512;
        }
        assert_eq!(tar.len(), at + 1024, "two zero blocks end it");
        found
    }

    #[test]
    fn the_archive_holds_each_file_at_its_path_under_its_directories_with_its_mode() {
        let long_dir = format!("/opt/{}/{}", "d".repeat(60), "e".repeat(60));
        let files = [
            ImageFile { path: "/cutover".into(), mode: 0o755, data: b"binary".to_vec() },
            ImageFile {
                path: "/lib/x86_64-linux-gnu/libc.so.6".into(),
                mode: 0o644,
                data: vec![7; 700],
            },
            ImageFile { path: format!("{long_dir}/lib.so").into(), mode: 0o755, data: vec![1] },
        ];
        let tar = archive(&files).unwrap();
        assert_eq!(archive(&files).unwrap(), tar, "the same files make the same bytes");
        let found = entries(&tar);
        let names: Vec<(&str, u8)> = found.iter().map(|(n, k, ..)| (n.as_str(), *k)).collect();
        let long = format!("{}/lib.so", &long_dir[1..]);
        let middle_dir = format!("opt/{}", "d".repeat(60));
        assert_eq!(
            names,
            [
                ("lib", b'5'),
                ("lib/x86_64-linux-gnu", b'5'),
                ("opt", b'5'),
                (middle_dir.as_str(), b'5'),
                (&long_dir[1..], b'5'),
                ("cutover", b'0'),
                ("lib/x86_64-linux-gnu/libc.so.6", b'0'),
                (long.as_str(), b'0'),
            ]
        );
        assert_eq!(found[5].2, 0o755);
        assert_eq!(found[5].3, b"binary");
        assert_eq!(found[6].2, 0o644);
        assert_eq!(found[6].3, vec![7; 700]);
    }

    #[test]
    fn a_relative_path_or_one_climbing_out_is_refused_naming_it() {
        let file = |path: &str| ImageFile { path: path.into(), mode: 0o644, data: Vec::new() };
        let err = archive(&[file("lib/libc.so.6")]).err().unwrap().to_string();
        assert_eq!(err, "lib/libc.so.6: an image file needs an absolute path without `..`");
        assert!(archive(&[file("/lib/../../etc/passwd")]).is_err());
        assert!(archive(&[file(&format!("/{}", "x".repeat(101)))]).is_err());
    }
}
