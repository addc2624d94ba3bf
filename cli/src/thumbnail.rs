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
/// `out/{folder name}/{path inside it}`. Refuses, before anything is
/// written, an output that is one of the inputs, and an output folder
/// inside an input folder (its thumbnails would be read as originals).
pub fn plan(inputs: &[PathBuf], out: &Path) -> anyhow::Result<Vec<Job>> {
    let mut jobs = Vec::new();
    let out_real = real_path(out);
    for input in inputs {
        let name = input.file_name().map(PathBuf::from).unwrap_or_default();
        if input.is_dir() {
            let input_real = real_path(input);
            if out_real.starts_with(&input_real) {
                anyhow::bail!(
                    "refusing to write into {}: it is inside the input folder {}; choose an output folder outside it",
                    out.display(),
                    input.display()
                );
            }
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
    let originals: std::collections::HashSet<PathBuf> = jobs.iter().map(|j| real_path(&j.input)).collect();
    if let Some(job) = jobs.iter().find(|j| originals.contains(&real_path(&j.output))) {
        anyhow::bail!(
            "refusing to write the thumbnail of {} over {}, which is one of the inputs; choose another --out",
            job.input.display(),
            job.output.display()
        );
    }
    Ok(jobs)
}

/// The path with every existing part resolved (symbolic links, `..`), and
/// the parts that do not exist yet appended as they are.
fn real_path(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = existing.canonicalize() {
            return rest.iter().rev().fold(real, |p: PathBuf, part| p.join(part));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(part)) => {
                rest.push(part.to_owned());
                existing = parent;
            }
            _ => return absolute,
        }
    }
}

/// Whether `dir` is the local bucket or inside it (a run over it would
/// upload its files onto themselves).
pub fn is_inside(dir: &Path, bucket_root: &Path) -> bool {
    real_path(dir).starts_with(real_path(bucket_root))
}

fn extension(path: &Path) -> Option<String> {
    path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase)
}

/// Thumbnails every job on `config.threads` threads; one bad file fails
/// alone. A file already at an output is replaced only if `overwrite`.
pub fn run(jobs: &[Job], config: &ThumbnailConfig, overwrite: bool) -> anyhow::Result<Report> {
    let tracker = Tracker::new(jobs.len() as u64);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(config.threads).build()?;
    pool.install(|| {
        jobs.par_iter().for_each(|job| {
            let name = job.input.display().to_string();
            match extension(&job.input).as_deref() {
                // A panic in a decoder fails its file, not the command.
                Some("jpg" | "jpeg" | "png") => {
                    match std::panic::catch_unwind(|| thumbnail_file(job, config, overwrite)) {
                        Ok(Ok(())) => tracker.processed(name),
                        Ok(Err(e)) => tracker.failed(name, format!("{e:#}")),
                        Err(panic) => tracker
                            .failed(name, format!("a panic: {}", thumbnailer::worker::panic_message(panic.as_ref()))),
                    }
                }
                _ => tracker.skipped(name, "not a .jpg, .jpeg or .png file".to_owned()),
            }
        });
    });
    Ok(tracker.finish())
}

fn thumbnail_file(job: &Job, config: &ThumbnailConfig, overwrite: bool) -> anyhow::Result<()> {
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
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .create_new(!overwrite)
        .open(&job.output)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => {
                anyhow::anyhow!("{} already exists (pass --overwrite to replace it)", job.output.display())
            }
            _ => anyhow::Error::new(e).context(format!("writing {}", job.output.display())),
        })?;
    std::io::Write::write_all(&mut file, &thumbnail.bytes)
        .with_context(|| format!("writing {}", job.output.display()))?;
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

    #[test]
    fn an_output_over_an_input_or_inside_an_input_folder_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let photos = dir.path().join("photos");
        std::fs::create_dir_all(&photos).unwrap();
        std::fs::write(photos.join("a.jpg"), b"original").unwrap();
        let err = plan(&[photos.join("a.jpg")], &photos).unwrap_err().to_string();
        assert!(err.contains("which is one of the inputs"), "{err}");
        // `photos/../photos` is the same folder by another name.
        let err = plan(&[photos.join("a.jpg")], &photos.join("..").join("photos")).unwrap_err().to_string();
        assert!(err.contains("which is one of the inputs"), "{err}");
        let err = plan(std::slice::from_ref(&photos), &photos).unwrap_err().to_string();
        assert!(err.contains("inside the input folder"), "{err}");
        let err = plan(std::slice::from_ref(&photos), &photos.join("thumbs")).unwrap_err().to_string();
        assert!(err.contains("inside the input folder"), "{err}");
        assert_eq!(std::fs::read(photos.join("a.jpg")).unwrap(), b"original");
        assert!(plan(std::slice::from_ref(&photos), &dir.path().join("out")).is_ok());
    }

    #[test]
    fn an_existing_file_is_replaced_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("a.png");
        let png = image::RgbImage::from_pixel(40, 30, image::Rgb([10, 200, 30]));
        png.save(&input).unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("a.png"), b"someone's file").unwrap();
        let jobs = plan(std::slice::from_ref(&input), &out).unwrap();
        let config = ThumbnailConfig { threads: 1, ..ThumbnailConfig::default() };
        let report = run(&jobs, &config, false).unwrap();
        assert_eq!(report.failed.len(), 1);
        assert!(report.failed[0].1.ends_with("already exists (pass --overwrite to replace it)"), "{:?}", report.failed);
        assert_eq!(std::fs::read(out.join("a.png")).unwrap(), b"someone's file");
        let report = run(&jobs, &config, true).unwrap();
        assert_eq!(report.processed.len(), 1, "{report:?}");
        assert!(image::open(out.join("a.png")).is_ok());
    }

    #[test]
    fn a_folder_inside_the_bucket_is_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let bucket = dir.path().join("data/bucket");
        std::fs::create_dir_all(bucket.join("local/u")).unwrap();
        assert!(is_inside(&bucket.join("local/u"), &bucket));
        assert!(is_inside(&bucket, &bucket));
        assert!(!is_inside(dir.path(), &bucket));
    }
}
