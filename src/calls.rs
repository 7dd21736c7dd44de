//! Counts external calls per service, split into reads and mutations. The json summary prints
//! the counts, which is how tests prove that a converged phase makes no mutating call.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct CallCount {
    pub read: u64,
    pub mutating: u64,
    /// How often each mutating operation was called (`ModifySubnetAttribute`: 1): the call log
    /// that proves a phase did what its plan said and nothing else.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub mutations: BTreeMap<String, u64>,
}

#[derive(Debug, Default)]
pub struct Calls(Mutex<BTreeMap<String, CallCount>>);

impl Calls {
    pub fn record(&self, service: &str, mutating: bool) {
        let mut map = self.0.lock().expect("call counter lock");
        let count = map.entry(service.to_string()).or_default();
        if mutating {
            count.mutating += 1;
        } else {
            count.read += 1;
        }
    }

    /// Records an operation by its API name: Describe*, List*, Get*, Head* and friends read;
    /// everything else mutates.
    pub fn record_operation(&self, service: &str, operation: &str) {
        let mutating = !is_read_operation(operation);
        self.record(service, mutating);
        if mutating {
            let mut map = self.0.lock().expect("call counter lock");
            *map.entry(service.to_string()).or_default().mutations.entry(operation.to_string()).or_default() += 1;
        }
    }

    pub fn snapshot(&self) -> BTreeMap<String, CallCount> {
        self.0.lock().expect("call counter lock").clone()
    }
}

pub fn is_read_operation(operation: &str) -> bool {
    const READ_PREFIXES: [&str; 6] = ["Describe", "List", "Get", "Head", "Lookup", "Ping"];
    READ_PREFIXES.iter().any(|p| operation.starts_with(p))
        // ECR's GetAuthorizationToken mints a credential but changes nothing.
        || operation == "GetAuthorizationToken"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_operations() {
        let calls = Calls::default();
        for op in ["DescribeVpcs", "ListRoles", "GetRole", "HeadBucket", "CreateVpc", "DeleteBucket", "PutBucketPolicy"] {
            calls.record_operation("aws", op);
        }
        let counted = &calls.snapshot()["aws"];
        assert_eq!((counted.read, counted.mutating), (4, 3));
        assert_eq!(counted.mutations.keys().collect::<Vec<_>>(), ["CreateVpc", "DeleteBucket", "PutBucketPolicy"]);
    }
}
