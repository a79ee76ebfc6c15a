//! The two downstream peers, as real servers on loopback: the crate's simulators, which record
//! every call and take scripted faults.

use reservation_sim::{InventorySim, ReservationSim, serve_inventory, serve_reservation};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A tonic inventory server and an HTTP reservation server, stopped on drop.
pub struct TestPeers {
    pub inventory: InventorySim,
    pub reservations: ReservationSim,
    /// `127.0.0.1:port`, the form operators write in `INVENTORY_GRPC_ADDR`.
    pub inventory_addr: String,
    /// `http://127.0.0.1:port`.
    pub reservation_base: String,
    stop: CancellationToken,
}

impl TestPeers {
    pub async fn start() -> TestPeers {
        let inventory = InventorySim::new();
        let reservations = ReservationSim::new();
        // Tests name their reservations; an unknown one is a lookup failure, not a demo record.
        reservations.set_auto_create(false);
        let stop = CancellationToken::new();
        let inv_listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind inventory");
        let res_listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind reservations");
        let inventory_addr = inv_listener.local_addr().expect("addr").to_string();
        let reservation_base = format!("http://{}", res_listener.local_addr().expect("addr"));
        tokio::spawn(serve_inventory(
            inv_listener,
            inventory.clone(),
            stop.clone(),
        ));
        tokio::spawn(serve_reservation(
            res_listener,
            reservations.clone(),
            stop.clone(),
        ));
        TestPeers {
            inventory,
            reservations,
            inventory_addr,
            reservation_base,
            stop,
        }
    }

    /// Seeds a HELD reservation (the reservation API refuses PATCHes of unknown ids).
    pub fn hold(&self, reservation_id: &str) {
        self.reservations
            .seed(reservation_sim::Reservation::held(reservation_id));
    }

    /// The same reservation API simulator also on `https://` (a TLS listener of its own, h2 and
    /// HTTP/1.1 offered by ALPN), stopped with these peers.
    pub async fn reservations_over_https(&self) -> crate::tls::HttpsReservationApi {
        crate::tls::serve_reservation_https(self.reservations.clone(), self.stop.clone()).await
    }

    /// Total calls both peers received.
    pub fn total_calls(&self) -> usize {
        self.inventory.calls().len() + self.reservations.calls().len()
    }
}

impl Drop for TestPeers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
