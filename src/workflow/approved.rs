//! `payment.approved`: the money is taken. The reservation is marked `CONFIRMED` first — the
//! customer's record of the purchase — then the seats are sold with `CommitReservation`.

use super::Step;
use crate::client::ReservationStatus;

pub(super) const STEPS: [Step; 2] = [
    Step::StatusUpdate(ReservationStatus::Confirmed),
    Step::CommitReservation,
];
