//! The log and its proofs: `log`, `seal`, `verify` (and `--against` a replica).

use anyhow::{Context, Result, bail};

use super::open;
use backstop::config::Config;
use backstop::contract;
use backstop::db::connect_replica;
use backstop::output::{print_json, render_log, render_verify};

pub async fn seal(cfg: &Config) -> Result<()> {
    let db = open(cfg, "backstop seal", 1).await?;
    // The owner's other housekeeping: `backstop seal` in a loop is the
    // sealer a deployment runs, and the partitions ahead are the owner's too.
    // (A login that may not is told so by sealing, below.)
    sqlx::query(
        "SELECT backstop.ensure_log_partitions()
          WHERE has_function_privilege('backstop.ensure_log_partitions()', 'EXECUTE')",
    )
    .execute(&db.pool)
    .await?;
    let seals = contract::seal_all(&db.pool).await?;
    if cfg.json {
        print_json(&seals)?;
    } else if seals.is_empty() {
        println!("nothing new to seal");
    } else {
        let rows: i64 = seals.iter().map(|s| s.rows as i64).sum();
        println!(
            "sealed {rows} rows in {} seal(s); newest seal {}",
            seals.len(),
            seals.last().map(|s| s.seal_no).unwrap_or(0)
        );
    }
    Ok(())
}

pub async fn verify(
    cfg: &Config,
    no_seal: bool,
    export_anchor: Option<&std::path::Path>,
    anchor: Option<&std::path::Path>,
) -> Result<()> {
    // Read the anchor before touching the database: a bad file changes nothing.
    let anchor: Option<contract::verify::Anchor> = match anchor {
        Some(p) => {
            let text =
                backstop::filecheck::read_capped(p).with_context(|| format!("reading the anchor {}", p.display()))?;
            let a: contract::verify::Anchor = serde_json::from_str(&text).with_context(|| {
                format!(
                    "{} is not an anchor written by `backstop verify --export-anchor`",
                    p.display()
                )
            })?;
            a.check()
                .map_err(|e| anyhow::anyhow!("{} is not a valid anchor: {e}", p.display()))?;
            Some(a)
        }
        None => None,
    };
    let db = open(cfg, "backstop verify", 2).await?;
    // Sealing is the owner's: any other login verifies what is sealed, and
    // the rows after the newest seal by their hash chain.
    let may_seal: bool = sqlx::query_scalar(
        "SELECT coalesce(bool_or(has_function_privilege(p.oid, 'EXECUTE')), false)
           FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
          WHERE n.nspname = 'backstop' AND p.proname = 'seal'",
    )
    .fetch_one(&db.pool)
    .await?;
    if !no_seal && !may_seal {
        eprintln!(
            "verify: this login may not seal (the owner's job): rows after the newest seal are checked by their hash chain"
        );
    }
    let report = contract::verify::verify_anchored(&db.pool, !no_seal && may_seal, true, anchor.as_ref()).await?;
    if cfg.json {
        print_json(&report)?;
    } else {
        print!("{}", render_verify(&report));
        if let Some(a) = &anchor
            && report.ok
        {
            println!(
                "verify: the chain still passes through seal {} anchored on {}",
                a.seal_no,
                a.exported_at.format("%Y-%m-%d %H:%M:%S UTC")
            );
        }
    }
    if report.ok {
        if let Some(path) = export_anchor {
            match contract::verify::export_anchor(&db.pool, &db.label).await? {
                Some(a) => {
                    let tmp = path.with_extension("tmp");
                    std::fs::write(&tmp, serde_json::to_string_pretty(&a)? + "\n")
                        .with_context(|| format!("writing {}", tmp.display()))?;
                    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
                    eprintln!(
                        "verify: anchor written to {} (seal {}, log up to seq {}); keep it outside the database",
                        path.display(),
                        a.seal_no,
                        a.to_seq
                    );
                }
                None => bail!("the log is empty: there is no chain head to anchor yet"),
            }
        }
        Ok(())
    } else {
        bail!(
            "the log does not verify: {} problem(s){}",
            report.problems.len(),
            report
                .first_bad_seq
                .map(|s| format!(", first bad seq {s}"))
                .unwrap_or_default()
        )
    }
}

pub async fn log(cfg: &Config, limit: i64, follow: bool) -> Result<()> {
    let db = open(cfg, "backstop log", 2).await?;
    let (rows, mut tail) = contract::tail::Tail::with_history(&db.pool, limit, 1000).await?;
    if !follow {
        return emit_rows(cfg, &rows);
    }
    // Followed: one header, then every batch in the same fixed columns.
    if !cfg.json {
        print!("{}", backstop::output::follow_header());
    }
    emit_follow(cfg, &rows)?;
    // A lost connection is said once and retried, more slowly while it
    // lasts; a refusal that waiting cannot mend (a duty taken away, the
    // contract gone) ends the command with it.
    let mut failing: Option<String> = None;
    let mut wait = std::time::Duration::from_millis(200);
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = tokio::time::sleep(wait) => {}
        }
        match tail.poll(&db.pool).await {
            Ok(mut rows) => {
                if failing.take().is_some() {
                    eprintln!("backstop log: reading the log again; nothing was missed");
                }
                wait = std::time::Duration::from_millis(200);
                rows.sort_by_key(|r| r.seq);
                emit_follow(cfg, &rows)?;
            }
            Err(e) if !retryable(&e) => {
                return Err(anyhow::Error::new(e).context("backstop log --follow stopped"));
            }
            // The cursor did not move: the next poll resumes exactly here.
            Err(e) => {
                let msg = e.to_string();
                if failing.as_deref() != Some(msg.as_str()) {
                    eprintln!("backstop log: {msg}; retrying every few seconds (Ctrl-C to stop)");
                    failing = Some(msg);
                }
                wait = (wait * 2).min(std::time::Duration::from_secs(5));
            }
        }
    }
}

/// Whether waiting may mend the error: the connection or the server, not a
/// refusal (privilege, a missing function, bad data).
fn retryable(e: &contract::ContractError) -> bool {
    match e {
        contract::ContractError::Database(sqlx::Error::Database(d)) => {
            let code = d.code().unwrap_or_default();
            // 08 connection, 53 resources, 57 operator intervention
            // (shutdown, cancel), 40 serialization or deadlock.
            ["08", "53", "57", "40"].iter().any(|c| code.starts_with(c))
        }
        contract::ContractError::Database(_) => true,
        _ => false,
    }
}

fn emit_follow(cfg: &Config, rows: &[contract::LogRow]) -> Result<()> {
    if cfg.json {
        return emit_rows(cfg, rows);
    }
    print!("{}", backstop::output::follow_rows(rows));
    // Lines reach a pipe as they come, not when a buffer fills.
    std::io::Write::flush(&mut std::io::stdout())?;
    Ok(())
}

fn emit_rows(cfg: &Config, rows: &[contract::LogRow]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    if cfg.json {
        for r in rows {
            println!("{}", serde_json::to_string(r)?);
        }
    } else {
        print!("{}", render_log(rows));
    }
    Ok(())
}

/// `backstop verify --against URL`.
pub async fn verify_replica(cfg: &Config, url: &str) -> Result<()> {
    let db = open(cfg, "backstop verify", 2).await?;
    let replica = connect_replica(url, 2).await?;
    let r = contract::verify::check_replica(&db.pool, &replica).await?;
    if cfg.json {
        print_json(&r)?;
    } else {
        let head = |h: &Option<(i64, String)>| {
            h.as_ref()
                .map(|(n, x)| format!("seal {n} {}", &x[..x.len().min(16)]))
                .unwrap_or_else(|| "no seal".into())
        };
        println!("replica: {}", render_verify(&r.replica).trim_end());
        println!(
            "replica: head {} vs primary {}; {}; {} seal(s) behind",
            head(&r.replica_head),
            head(&r.primary_head),
            if r.same_chain {
                "the same chain"
            } else {
                "A DIFFERENT CHAIN"
            },
            r.seals_behind
        );
    }
    if r.ok() {
        Ok(())
    } else if !r.same_chain {
        bail!("the replica's chain head is not the primary's: one of them was rewritten")
    } else {
        bail!("the replica does not verify")
    }
}
