//! What one request is billed: its [`Bill`] is opened when the request is admitted,
//! filled in from the worker's response as it passes through the gateway, and closed
//! into one [`UsageRecord`] when the request ends, whatever the end.
//!
//! Tokens are billed as the client received them. A streamed chunk carries the
//! worker's running `surge_meter` (tokens and execution so far), and the bill keeps the
//! meter of the last chunk forwarded to the client: a client that hangs up after 20
//! tokens is billed for 20 — not 0 because the final usage chunk never came, and not
//! `max_tokens`. The final usage chunk (or a non-streamed body's `usage`), when it
//! arrives, replaces the running meter with the worker's totals.

use std::time::Instant;

use surge_protocol::openai::{SurgeExecution, SurgeMeter, Usage};

use pingora::{Error, ErrorSource};
use surge_protocol::error::ApiError;

use super::proxy::{Ctx, Gateway};
use super::routing::Route;
use super::spend::{now_ms, Reservation, Spending};
use crate::metering::prices::{Billing, Quantities};
use crate::metering::UsageRecord;

/// One request's bill while it runs.
#[derive(Debug)]
pub struct Bill {
    pub request_id: String,
    /// Arrival (Unix ms).
    pub time_ms: i64,
    pub tenant: String,
    pub key_id: Option<String>,
    /// What was used so far.
    pub used: Quantities,
    /// Waiting at the gateway for a worker slot.
    pub gateway_wait_seconds: f64,
    /// Waiting inside the worker before its engine took the request.
    pub worker_queue_seconds: f64,
    /// The part of the gateway wait spent on a worker's cold start.
    pub cold_start_seconds: f64,
    /// The first choice's finish reason, as the worker reported it.
    pub finish_reason: Option<String>,
    /// The worker's final usage arrived (the response ended normally).
    pub complete: bool,
    /// The hold on the key's budget, settled when the bill is closed.
    pub reservation: Option<Reservation>,
    /// When the wait for a worker slot began.
    pub waiting_since: Option<Instant>,
}

/// How a request ended, beyond its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The response was sent whole.
    Finished,
    /// The client went away first.
    Cancelled,
    /// The worker failed, or the response broke.
    Failed,
    /// The gateway refused it (bad request, no quota, queue full or timed out).
    Rejected,
}

impl Bill {
    pub fn new(request_id: String, time_ms: i64) -> Bill {
        Bill {
            request_id,
            time_ms,
            tenant: "anonymous".into(),
            key_id: None,
            used: Quantities::default(),
            gateway_wait_seconds: 0.0,
            worker_queue_seconds: 0.0,
            cold_start_seconds: 0.0,
            finish_reason: None,
            complete: false,
            reservation: None,
            waiting_since: None,
        }
    }

    /// A streamed chunk's running meter (the chunk is on its way to the client).
    pub fn meter(&mut self, m: &SurgeMeter) {
        if self.complete {
            return;
        }
        self.used.prompt_tokens = m.prompt_tokens;
        self.used.completion_tokens = m.completion_tokens;
        self.used.execution_seconds = m.execution_seconds;
    }

    /// The worker's final usage of an LLM request.
    pub fn usage(&mut self, u: &Usage, e: Option<&SurgeExecution>) {
        self.used.prompt_tokens = u.prompt_tokens;
        self.used.completion_tokens = u.completion_tokens;
        if let Some(e) = e {
            self.used.execution_seconds = e.execution_seconds;
            self.worker_queue_seconds = e.queue_seconds;
        }
        self.complete = true;
    }

    /// The worker's metering of a transcription (its `x-surge-*` headers).
    pub fn audio(&mut self, audio_seconds: f64, execution_seconds: f64, queue_seconds: f64) {
        self.used.audio_seconds = audio_seconds;
        self.used.execution_seconds = execution_seconds;
        self.worker_queue_seconds = queue_seconds;
    }

    /// Closes the bill: its record, with the cost under `billing`; the reservation is
    /// settled to that cost.
    #[allow(clippy::too_many_arguments)]
    pub fn close(
        &mut self,
        billing: &Billing,
        spending: &Spending,
        model: &str,
        device: &str,
        route: &str,
        status: u16,
        ending: Ending,
    ) -> UsageRecord {
        let cost = billing.cost(model, device, &self.used);
        if let Some(r) = self.reservation.take() {
            spending.settle(r, cost);
        }
        let finish_reason = match ending {
            Ending::Finished => self.finish_reason.clone(),
            Ending::Cancelled => Some("cancelled".into()),
            Ending::Failed => Some("error".into()),
            Ending::Rejected => Some("rejected".into()),
        };
        UsageRecord {
            request_id: self.request_id.clone(),
            time_ms: self.time_ms,
            tenant: self.tenant.clone(),
            key_id: self.key_id.clone(),
            model: model.to_string(),
            device: device.to_string(),
            route: route.to_string(),
            status,
            finish_reason,
            prompt_tokens: self.used.prompt_tokens,
            completion_tokens: self.used.completion_tokens,
            audio_seconds: self.used.audio_seconds,
            queue_seconds: self.gateway_wait_seconds + self.worker_queue_seconds,
            cold_start_seconds: self.cold_start_seconds,
            execution_seconds: self.used.execution_seconds,
            cost_usd: cost,
            price_version: billing.price_version.clone(),
        }
    }
}

/// The gateway's side of billing: holding a budget before the work, and closing the
/// bill into its record at the end (called from the proxy's phases).
impl Gateway {
    /// Holds the routed request's worst-case cost against its key's budget (429
    /// `insufficient_quota` when it does not fit); keys without a budget hold nothing.
    pub(super) fn reserve(&self, ctx: &mut Ctx) -> std::result::Result<(), ApiError> {
        let (Some(target), Some(bill)) = (&ctx.target, &mut ctx.bill) else {
            return Ok(());
        };
        let Some(key) = ctx.admission.as_ref().and_then(|a| a.key()) else {
            return Ok(());
        };
        let Some(limit) = key.budget else {
            return Ok(());
        };
        let billing = &self.cfg.billing;
        let w = target.worst_case;
        let q = billing.worst_case(w.prompt_tokens, w.max_tokens, w.choices, w.audio_seconds);
        let amount = billing.cost(&target.model, &target.pool.device, &q);
        bill.reservation = Some(
            self.spending
                .reserve(&key.key_id, limit, amount, now_ms())?,
        );
        Ok(())
    }

    /// Closes the request's bill into its usage record and counts it in the billed
    /// metrics; [`Gateway::record_usage`] then hands it to the ledger.
    pub(super) fn close_bill(
        &self,
        ctx: &mut Ctx,
        route: Route,
        status: u16,
        e: Option<&Error>,
    ) -> Option<UsageRecord> {
        let mut bill = ctx.bill.take()?;
        let client_left = e.is_some_and(|e| matches!(e.esource(), ErrorSource::Downstream));
        let ending = if bill.complete {
            Ending::Finished
        } else if client_left || status == 0 {
            Ending::Cancelled
        } else if ctx.refused || (ctx.upstream_status.is_none() && status >= 400) {
            Ending::Rejected
        } else if status >= 400 || e.is_some() {
            Ending::Failed
        } else {
            Ending::Finished
        };
        let (model, device) = match &ctx.target {
            Some(t) => (t.model.as_str(), t.pool.device.as_str()),
            None => ("-", "-"),
        };
        let r = bill.close(
            &self.cfg.billing,
            &self.spending,
            model,
            device,
            route.label(),
            status,
            ending,
        );
        let m = &self.metrics;
        let labels = [r.model.as_str(), r.tenant.as_str()];
        m.billed_execution_seconds
            .with_label_values(&labels)
            .inc_by(r.execution_seconds);
        m.billed_cost_usd
            .with_label_values(&labels)
            .inc_by(r.cost_usd);
        for (n, kind) in [
            (r.prompt_tokens, "prompt"),
            (r.completion_tokens, "completion"),
        ] {
            m.billed_tokens
                .with_label_values(&[&r.model, &r.tenant, kind])
                .inc_by(n);
        }
        Some(r)
    }

    /// Hands a closed bill's record to the ledger (its writer thread commits it).
    pub(super) fn record_usage(&self, r: UsageRecord) {
        let Some(ledger) = &self.ledger else { return };
        let outcome = match ledger.record(r) {
            Ok(()) => "recorded",
            Err(e) => {
                tracing::error!(error = %e, "usage record lost");
                "failed"
            }
        };
        self.metrics
            .usage_records
            .with_label_values(&[outcome])
            .inc();
    }
}

/// A request id, unique without coordination (128 random bits).
pub(super) fn request_id() -> String {
    format!("req_{:032x}", rand::random::<u128>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_stream_bills_the_last_meter_and_a_whole_one_the_final_usage() {
        let mut b = Bill::new("r".into(), 0);
        for n in 1..=20 {
            b.meter(&SurgeMeter {
                prompt_tokens: 30,
                completion_tokens: n,
                execution_seconds: n as f64 * 0.01,
            });
        }
        let billing = Billing::default();
        let spending = Spending::new(None);
        let r = b.close(
            &billing,
            &spending,
            "m",
            "cpu",
            "chat_completions",
            200,
            Ending::Cancelled,
        );
        assert_eq!((r.prompt_tokens, r.completion_tokens), (30, 20));
        assert_eq!(r.finish_reason.as_deref(), Some("cancelled"));
        assert!((r.execution_seconds - 0.2).abs() < 1e-9);
        assert!(r.cost_usd > 0.0);

        let mut b = Bill::new("r2".into(), 0);
        b.usage(
            &Usage::new(30, 64),
            Some(&SurgeExecution {
                queue_seconds: 0.5,
                execution_seconds: 1.0,
                ..SurgeExecution::default()
            }),
        );
        // A meter seen after the final usage (none should come) changes nothing.
        b.meter(&SurgeMeter::default());
        b.finish_reason = Some("length".into());
        b.gateway_wait_seconds = 0.25;
        let r = b.close(
            &billing,
            &spending,
            "m",
            "cpu",
            "chat_completions",
            200,
            Ending::Finished,
        );
        assert_eq!(r.completion_tokens, 64);
        assert_eq!(r.finish_reason.as_deref(), Some("length"));
        assert!((r.queue_seconds - 0.75).abs() < 1e-9);
    }
}
