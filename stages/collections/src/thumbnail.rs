//! `collections thumbnail`: the thumbnail stage alone over files and
//! folders, written to an output folder that mirrors the inputs' structure.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rayon::prelude::*;
use thumbnailer::{OutputFormat, ThumbnailConfig, make_thumbnail};
use walkdir::WalkDir;

use crate::report::{Report, Tracker};

/// One file to thumbnail and where its thumbnail goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub input: PathBuf,
    pub output: PathBuf,
}

/// Expands inputs: a file goes to `out/{file name}`, a folder's files to
/// `out/{folder name}/{path inside it}`.
pub fn plan(inputs: &[PathBuf], out: &Path) -> anyhow::Result<Vec<Job>> {
    let mut jobs = Vec::new();
    for input in inputs {
        let name = input.file_name().map(PathBuf::from).unwrap_or_default();
        if input.is_dir() {
            for entry in WalkDir::new(input).sort_by_file_name() {
                let entry = entry.with_context(|| format!("reading {}", input.display()))?;
                if entry.file_type().is_file() {
                    let relative = entry.path().strip_prefix(input).expect("walkdir yields paths under its root");
                    jobs.push(Job { input: entry.path().to_owned(), output: out.join(&name).join(relative) });
                }
            }
        } else if input.is_file() {
            jobs.push(Job { input: input.clone(), output: out.join(name) });
        } else {
            anyhow::bail!("{} is neither a file nor a folder", input.display());
        }
    }
    Ok(jobs)
}

fn extension(path: &Path) -> Option<String> {
    path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase)
}

/// Thumbnails every job on `config.threads` threads; one bad file fails alone.
pub fn run(jobs: &[Job], config: &ThumbnailConfig) -> anyhow::Result<Report> {
    let tracker = Tracker::new(jobs.len() as u64);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(config.threads).build()?;
    pool.install(|| {
        jobs.par_iter().for_each(|job| {
            let name = job.input.display().to_string();
            match extension(&job.input).as_deref() {
                Some("jpg" | "jpeg" | "png") => match thumbnail_file(job, config) {
                    Ok(()) => tracker.processed(name),
                    Err(e) => tracker.failed(name, format!("{e:#}")),
                },
                _ => tracker.skipped(name, "not a .jpg, .jpeg or .png file".to_owned()),
            }
        });
    });
    Ok(tracker.finish())
}

fn thumbnail_file(job: &Job, config: &ThumbnailConfig) -> anyhow::Result<()> {
    let size = std::fs::metadata(&job.input)?.len();
    if size > config.max_file_bytes {
        anyhow::bail!("the file is {size} bytes, over the limit of {} bytes", config.max_file_bytes);
    }
    let bytes = std::fs::read(&job.input)?;
    let format = OutputFormat::for_extension(&extension(&job.input).unwrap_or_default());
    let thumbnail = make_thumbnail(&bytes, format, &config.spec)?;
    if let Some(parent) = job.output.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&job.output, thumbnail.bytes).with_context(|| format!("writing {}", job.output.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_mirrors_folders_and_places_files_at_the_top() {
        let dir = tempfile::tempdir().unwrap();
        let photos = dir.path().join("photos");
        std::fs::create_dir_all(photos.join("2024")).unwrap();
        std::fs::write(photos.join("2024/a.jpg"), b"x").unwrap();
        std::fs::write(dir.path().join("b.png"), b"x").unwrap();
        let out = Path::new("/out");
        let jobs = plan(&[photos.clone(), dir.path().join("b.png")], out).unwrap();
        assert_eq!(
            jobs,
            vec![
                Job { input: photos.join("2024/a.jpg"), output: out.join("photos/2024/a.jpg") },
                Job { input: dir.path().join("b.png"), output: out.join("b.png") },
            ]
        );
        assert!(plan(&[dir.path().join("missing")], out).is_err());
    }
}
