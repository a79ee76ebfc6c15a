//! `reservation.expired`: the hold ran out. Seats go back on sale first (what buyers are
//! waiting for), then the reservation is marked `EXPIRED`.

use super::Step;
use crate::client::ReservationStatus;

pub(super) const STEPS: [Step; 2] = [
    Step::ReleaseHold { reason: "expired" },
    Step::StatusUpdate(ReservationStatus::Expired),
];
