//! Retention: deletes raw samples and rollups past their keep periods, in
//! bounded chunks, each its own transaction.
//!
//! Raw samples (with their interfaces) go when older than
//! [`HistoryPolicy::raw_retention_ms`] **and** before the rollup watermark,
//! so a sample is never deleted before it was rolled up. Rollups go when
//! their bucket is older than [`HistoryPolicy::rollup_retention_ms`]; boot
//! anchors when no report updated them for the raw retention. Idempotent and
//! safe on several controllers at once (a chunk that finds nothing left
//! deletes nothing).

use sea_orm::{ColumnTrait, EntityTrait, Order, QueryFilter, QueryOrder, QuerySelect};

use crate::entity::{boot_anchor, rollup, sample};
use crate::rollup::{HOUR_MS, HistoryPolicy, floor_to};
use crate::{Store, StoreError};

/// What a retention run deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Raw samples deleted.
    pub samples: u64,
    /// Rollup rows deleted.
    pub rollups: u64,
    /// Boot anchors deleted.
    pub anchors: u64,
    /// Whether the run stopped at its chunk cap with more to delete.
    pub more: bool,
}

impl Store {
    /// Deletes what `policy` no longer keeps at `now_ms`, in chunks of
    /// about `chunk` rows (a chunk ends at a time boundary, so rows sharing
    /// its last time go with it), at most `max_chunks` chunks per kind.
    pub async fn apply_retention(
        &self,
        now_ms: i64,
        policy: &HistoryPolicy,
        chunk: u64,
        max_chunks: u32,
    ) -> Result<RetentionReport, StoreError> {
        let chunk = chunk.max(1);
        let mut report = RetentionReport::default();
        let watermark = self.rollup_watermark().await?;
        // Only what is rolled up: hours before the watermark.
        let raw_cutoff = now_ms
            .saturating_sub(policy.raw_retention_ms)
            .min(watermark.map_or(i64::MIN, |w| floor_to(w, HOUR_MS)));
        let rollup_cutoff = now_ms.saturating_sub(policy.rollup_retention_ms);

        let mut left = true;
        for _ in 0..max_chunks {
            // The time of the chunk-th oldest sample before the cutoff.
            let bound: Option<i64> = sample::Entity::find()
                .select_only()
                .column(sample::Column::TMs)
                .filter(sample::Column::TMs.lt(raw_cutoff))
                .order_by(sample::Column::TMs, Order::Asc)
                .offset(chunk - 1)
                .limit(1)
                .into_tuple()
                .one(&self.db)
                .await?;
            let (upto, last) = match bound {
                Some(b) => (b.saturating_add(1), false),
                None => (raw_cutoff, true),
            };
            let txn = self.begin_write().await?;
            let res = sample::Entity::delete_many()
                .filter(sample::Column::TMs.lt(upto))
                .exec(&txn)
                .await?;
            txn.commit().await?;
            report.samples += res.rows_affected;
            if last {
                left = false;
                break;
            }
        }
        report.more |= left;

        let mut left = true;
        for _ in 0..max_chunks {
            let bound: Option<i64> = rollup::Entity::find()
                .select_only()
                .column(rollup::Column::BucketMs)
                .filter(rollup::Column::BucketMs.lt(rollup_cutoff))
                .order_by(rollup::Column::BucketMs, Order::Asc)
                .offset(chunk - 1)
                .limit(1)
                .into_tuple()
                .one(&self.db)
                .await?;
            let (upto, last) = match bound {
                Some(b) => (b.saturating_add(1), false),
                None => (rollup_cutoff, true),
            };
            let txn = self.begin_write().await?;
            let res = rollup::Entity::delete_many()
                .filter(rollup::Column::BucketMs.lt(upto))
                .exec(&txn)
                .await?;
            txn.commit().await?;
            report.rollups += res.rows_affected;
            if last {
                left = false;
                break;
            }
        }
        report.more |= left;

        let anchor_cutoff = now_ms.saturating_sub(policy.raw_retention_ms);
        let res = boot_anchor::Entity::delete_many()
            .filter(boot_anchor::Column::UpdatedMs.lt(anchor_cutoff))
            .exec(&self.db)
            .await?;
        report.anchors = res.rows_affected;
        Ok(report)
    }
}
