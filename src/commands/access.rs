//! Who may do what: `roles`, `grant`.

use anyhow::{Context, Result, bail};

use super::open;
use backstop::config::Config;
use backstop::contract::roles::{CONTRACT_FUNCTIONS, EVERY_DUTY_FUNCTIONS, READ_FUNCTIONS, role_matrix};
use backstop::output::print_json;

/// `backstop roles`: who may call what.
pub async fn roles(cfg: &Config) -> Result<()> {
    let db = open(cfg, "backstop roles", 2).await?;
    let m = role_matrix(&db.pool).await?;
    if cfg.json {
        let v: Vec<_> = m
            .iter()
            .map(|(d, r, f, a)| serde_json::json!({"duty": d, "role": r, "function": f, "allowed": a}))
            .collect();
        return print_json(&v);
    }
    let mut duties: Vec<(String, String)> = Vec::new();
    for (d, r, _, _) in &m {
        if !duties.iter().any(|x| &x.0 == d) {
            duties.push((d.clone(), r.clone()));
        }
    }
    print!("{:<22}", "function");
    for (d, _) in &duties {
        print!(" {d:>10}");
    }
    println!();
    for f in CONTRACT_FUNCTIONS {
        print!("{f:<22}");
        for (d, _) in &duties {
            let ok = m.iter().any(|(dd, _, ff, a)| dd == d && ff == f && *a);
            print!(" {:>10}", if ok { "yes" } else { "-" });
        }
        println!();
    }
    println!(
        "\nroles: {}",
        duties
            .iter()
            .map(|(d, r)| format!("{d} = {r}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "viewer also reads every table but the kill switch's gate and the contract's own locks; every duty but agent includes viewer."
    );
    println!(
        "viewer (so every duty but agent) also calls these read-only functions: {}.",
        READ_FUNCTIONS.join(", ")
    );
    println!("every duty, agent included, calls {}.", EVERY_DUTY_FUNCTIONS.join(", "));
    Ok(())
}

/// `backstop grant DUTY LOGIN`: make LOGIN a member of DUTY's role.
pub async fn grant(cfg: &Config, duty: &str, login: &str) -> Result<()> {
    let db = open(cfg, "backstop grant", 2).await?;
    if duty == "check" {
        bail!(
            "check is not a login's duty: it is the role the policy's checks run as (grant it SELECT on the tables they read)"
        );
    }
    let role: Option<String> = sqlx::query_scalar("SELECT role_name FROM backstop.duties WHERE duty = $1")
        .bind(duty)
        .fetch_optional(&db.pool)
        .await?;
    let Some(role) = role else {
        let all: Vec<String> = sqlx::query_scalar("SELECT duty FROM backstop.duties WHERE duty <> 'check' ORDER BY 1")
            .fetch_all(&db.pool)
            .await?;
        bail!("no duty {duty:?}; the duties are {}", all.join(", "));
    };
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
        .bind(login)
        .fetch_one(&db.pool)
        .await?;
    if !exists {
        bail!("no login {login:?} on this server: create it first (CREATE ROLE \"{login}\" LOGIN PASSWORD ...)");
    }
    // Identifiers cannot be bound; quote_ident does the quoting.
    let sql: String = sqlx::query_scalar("SELECT format('GRANT %I TO %I', $1::text, $2::text)")
        .bind(&role)
        .bind(login)
        .fetch_one(&db.pool)
        .await?;
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(&db.pool)
        .await
        .with_context(|| format!("granting {role} to {login}"))?;
    println!("{login} now has the {duty} duty ({role})");
    Ok(())
}
