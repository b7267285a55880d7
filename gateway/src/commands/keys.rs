//! `surge keys create|ls|revoke`: API keys in the ledger database, which `surge serve`
//! checks on every request (a revoked key fails on its next request, no restart).

use super::LedgerArgs;
use clap::{Args, Subcommand};

use crate::metering::keys::{self, BudgetPeriod, NewKey};
use crate::metering::ledger;

#[derive(Args, Debug)]
pub struct KeysCommand {
    #[command(flatten)]
    ledger: LedgerArgs,
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand, Debug)]
enum Action {
    /// Create a key; prints it once (only its hash is kept).
    Create {
        /// The tenant the key bills to.
        #[arg(long)]
        tenant: String,
        /// A label for listings.
        #[arg(long)]
        name: Option<String>,
        /// Requests per second allowed (burst of the same size).
        #[arg(long, value_name = "N")]
        rps: Option<u32>,
        /// Requests in flight allowed.
        #[arg(long, value_name = "N")]
        max_concurrent: Option<u32>,
        /// Spending limit in USD per --budget-period: a request whose worst-case cost does
        /// not fit what is left gets 429 insufficient_quota.
        #[arg(
            long,
            value_name = "USD",
            requires = "budget_period",
            allow_negative_numbers = true
        )]
        budget: Option<f64>,
        #[arg(long, value_enum, requires = "budget")]
        budget_period: Option<BudgetPeriod>,
        /// May read every tenant's usage.
        #[arg(long)]
        admin: bool,
    },
    /// List keys (ids, tenants, limits; never secrets).
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by its id (the part after `sk-surge-`).
    Revoke { id: String },
}

pub fn run(cmd: KeysCommand) -> i32 {
    match run_inner(cmd) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

fn run_inner(cmd: KeysCommand) -> Result<(), String> {
    let path = cmd.ledger.path();
    let conn = ledger::open(&path).map_err(|e| e.to_string())?;
    match cmd.action {
        Action::Create {
            tenant,
            name,
            rps,
            max_concurrent,
            budget,
            budget_period,
            admin,
        } => {
            let new = NewKey {
                tenant,
                name,
                requests_per_second: rps,
                max_concurrent,
                budget: budget.zip(budget_period),
                admin,
            };
            let (key, row) = keys::create(&conn, &new).map_err(|e| e.to_string())?;
            // The key alone on stdout, for scripts; the rest for people.
            println!("{key}");
            eprintln!(
                "created key {} for tenant '{}' in {} (shown once; only its hash is kept)",
                row.id,
                row.tenant,
                path.display()
            );
        }
        Action::Ls { json } => {
            let rows = keys::list(&conn).map_err(|e| e.to_string())?;
            if json {
                let text = serde_json::to_string_pretty(&rows).map_err(|e| e.to_string())?;
                println!("{text}");
                return Ok(());
            }
            println!(
                "{:<10} {:<16} {:<16} {:>6} {:>6} {:>14} {:<6} {:<8}",
                "ID", "TENANT", "NAME", "RPS", "CONC", "BUDGET", "ADMIN", "STATE"
            );
            for r in rows {
                let opt = |v: Option<u32>| v.map_or("-".to_string(), |v| v.to_string());
                let budget = match (r.budget_usd, r.budget_period) {
                    (Some(usd), Some(p)) => format!("${usd}/{p:?}").to_lowercase(),
                    _ => "-".into(),
                };
                let state = if r.revoked_ms.is_some() {
                    "revoked"
                } else {
                    "live"
                };
                println!(
                    "{:<10} {:<16} {:<16} {:>6} {:>6} {:>14} {:<6} {:<8}",
                    r.id,
                    r.tenant,
                    r.name.as_deref().unwrap_or("-"),
                    opt(r.requests_per_second),
                    opt(r.max_concurrent),
                    budget,
                    r.admin,
                    state
                );
            }
        }
        Action::Revoke { id } => {
            let row = keys::revoke(&conn, &id).map_err(|e| e.to_string())?;
            eprintln!("revoked key {} of tenant '{}'", row.id, row.tenant);
        }
    }
    Ok(())
}
