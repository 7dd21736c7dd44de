//! The storage broker's command line (`storage_broker/src/bin/storage_broker.rs`): stateless,
//! unauthenticated, gRPC and HTTP/1 (`/status`, `/metrics`) on one port.

use super::flag;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageBrokerArgs {
    pub listen_addr: String,
}

impl StorageBrokerArgs {
    pub fn to_args(&self) -> Vec<String> {
        vec![flag("listen-addr", &self.listen_addr)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listens_on_every_interface() {
        let args = StorageBrokerArgs { listen_addr: "0.0.0.0:50051".into() }.to_args();
        assert_eq!(args, ["--listen-addr=0.0.0.0:50051"]);
    }
}
