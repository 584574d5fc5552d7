//! Retention: `archive`, and `verify --archive` of what it wrote.

use anyhow::{Result, bail};

use super::open;
use backstop::config::Config;
use backstop::output::print_json;

/// `backstop archive --before DATE --to DIR [--no-drop]`.
pub async fn archive(
    cfg: &Config,
    before: chrono::DateTime<chrono::Utc>,
    to: &std::path::Path,
    drop: bool,
) -> Result<()> {
    let db = open(cfg, "backstop archive", 2).await?;
    let out = backstop::archive::archive(&db.pool, &db.label, before, to, drop, !cfg.json).await?;
    if cfg.json {
        return print_json(&out);
    }
    let cut = out.plan.cut.map(|c| c.to_rfc3339()).unwrap_or_default();
    match (&out.dir, &out.check) {
        (Some(dir), Some(check)) => println!(
            "archive: {} ({} seals from {} to {}, {} rows), read back and verified",
            dir.display(),
            check.seals,
            check.manifest.first_seal,
            check.manifest.last_seal,
            check.rows
        ),
        _ => println!("archive: every row before {cut} is in an earlier archive already: nothing new was written"),
    }
    match &out.dropped {
        Some(d) => {
            println!(
                "archive: dropped {} partition(s) before {cut} ({} rows): {}",
                d.partitions.len(),
                d.rows,
                d.partitions.join(", ")
            );
            println!(
                "archive: {} row(s) that current state still needs were carried forward; the drop is log row {} ({:.0} ms)",
                d.carried, d.seq, d.millis
            );
        }
        None => println!(
            "archive: --no-drop: the {} partition(s) before {cut} stay in the log",
            out.plan.partitions.len()
        ),
    }
    Ok(())
}

/// `backstop verify --archive DIR`.
pub async fn verify_archive(cfg: &Config, dir: &std::path::Path) -> Result<()> {
    // On its own first: an archive must verify without any database.
    let offline = backstop::archive::verify_dir(dir)?;
    let check = match open(cfg, "backstop verify", 2).await {
        Ok(db) => backstop::archive::verify_against(&db.pool, dir).await?,
        Err(e) => {
            eprintln!("verify: no database to link the archive to ({e:#}); checked it on its own");
            offline
        }
    };
    if cfg.json {
        print_json(&check)?;
    } else if check.problems.is_empty() {
        println!(
            "verify: archive OK: {} rows in seals {} to {} match their seals and the chain{}",
            check.rows,
            check.manifest.first_seal,
            check.manifest.last_seal,
            match check.linked {
                Some(true) => "; the live log still holds its head",
                _ => "",
            }
        );
    } else {
        for p in &check.problems {
            println!("verify: archive: {p}");
        }
    }
    if check.problems.is_empty() {
        Ok(())
    } else {
        bail!("the archive does not verify: {} problem(s)", check.problems.len())
    }
}
