//! `payment.failed`: the reservation is marked `CANCELLED` first, so it cannot be paid for
//! again, then the held seats are released.

use super::Step;
use crate::client::ReservationStatus;

pub(super) const STEPS: [Step; 2] = [
    Step::StatusUpdate(ReservationStatus::Cancelled),
    Step::ReleaseHold {
        reason: "payment_failed",
    },
];
