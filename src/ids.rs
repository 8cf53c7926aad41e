//! The ids of the pool's keys and of the client keys: two kinds of row
//! number that must never be taken for each other (a log row holds both).
//! Database rows keep the bare column (`i64`); everything above the queries
//! passes these.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

macro_rules! id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = std::num::ParseIntError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.parse().map($name)
            }
        }
    };
}

id!(
    /// A pool key (`api_keys.id`).
    KeyId
);
id!(
    /// A client key (`clients.id`).
    ClientId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_parse_and_serialize_as_bare_numbers() {
        assert_eq!(KeyId(42).to_string(), "42");
        assert_eq!("7".parse::<ClientId>(), Ok(ClientId(7)));
        assert!("x7".parse::<KeyId>().is_err());
        assert_eq!(serde_json::to_string(&KeyId(3)).unwrap(), "3");
        assert_eq!(serde_json::from_str::<ClientId>("9").unwrap(), ClientId(9));
    }
}
